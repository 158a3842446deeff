package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"slices"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// op is how one field is encoded on the wire.
type op uint8

const (
	opFixed          op = iota // size bytes (integers, bool, float64, UUID)
	opString                   // int16 or compact length, bytes; negative is null
	opBytes                    // int32 or compact length, bytes; negative is null
	opArray                    // int32 or compact count, then count elements
	opStruct                   // fields in order, then tagged fields if flexible
	opNullableStruct           // int8 presence (-1 is null), then the struct
)

// field is the wire shape of one field or array element.
type field struct {
	op   op
	size int     // opFixed
	elem *field  // opArray
	mem  int     // opArray: bytes kmsg allocates per element (the Go element's size)
	st   *layout // opStruct, opNullableStruct
	min  int     // smallest encoding, in bytes
}

// layout is the wire shape of a struct at one version.
type layout struct {
	fields []*field          // encoded inline, in wire order
	tags   map[uint32]*field // tagged fields kmsg knows, by tag
	min    int
}

// Probe markers: an unknown tagged field with a unique value, set on the
// struct being probed (mark) or on a struct-valued field of it (fieldMark),
// locates that struct's tagged-field section in kmsg's encoding. The
// markers' last bytes are not 1, which keeps classify's suffix test exact.
var (
	mark      = []byte{0xc7, 0x3e, 0x91, 0xd4, 0x6b, 0xa8}
	fieldMark = []byte{0xb5, 0x29, 0xe6, 0x4f, 0x93, 0x7c}
)

const (
	markTag      = 10000
	fieldMarkTag = 10001
)

var tagsType = reflect.TypeFor[kmsg.Tags]()

// derive builds the layout of request key at version from kmsg: the
// struct's fields in declaration order are kmsg's wire order, their Go
// types give the encoding, and encoding a request with one field changed
// at a time shows whether this version encodes the field, and whether
// inline or as which tagged field.
func derive(key, version int16) (*message, error) {
	req := kmsg.RequestForKey(key)
	if req == nil {
		return nil, fmt.Errorf("%w: unknown api key %d", ErrMalformed, key)
	}
	if version < 0 || version > req.MaxVersion() {
		return nil, fmt.Errorf("%w: %s v%d is not a version kmsg knows", ErrMalformed, kmsg.NameForKey(key), version)
	}
	req.SetVersion(version)
	p := &prober{root: reflect.TypeOf(req).Elem(), version: version, flexible: req.IsFlexible()}
	root, err := p.structLayout(nil, p.root)
	if err != nil {
		return nil, fmt.Errorf("deriving the layout of %s v%d: %w", kmsg.NameForKey(key), version, err)
	}
	return &message{root: root, flexible: p.flexible}, nil
}

// prober encodes requests of one type and version with kmsg.
type prober struct {
	root     reflect.Type
	version  int16
	flexible bool
}

// encode builds a default request, materializes path (a field index per
// level: an array gets one default element, a nullable struct is
// allocated), applies edit to the struct the path ends at and returns
// kmsg's encoding.
func (p *prober) encode(path []int, edit func(s reflect.Value)) []byte {
	root := reflect.New(p.root)
	setDefault(root)
	req := root.Interface().(kmsg.Request)
	req.SetVersion(p.version)
	s := root.Elem()
	for _, i := range path {
		f := s.Field(i)
		switch f.Kind() {
		case reflect.Slice:
			e := reflect.New(f.Type().Elem())
			setDefault(e)
			f.Set(reflect.Append(reflect.MakeSlice(f.Type(), 0, 1), e.Elem()))
			s = f.Index(0)
		case reflect.Pointer:
			e := reflect.New(f.Type().Elem())
			setDefault(e)
			f.Set(e)
			s = e.Elem()
		default:
			s = f
		}
	}
	if edit != nil {
		edit(s)
	}
	return req.AppendTo(nil)
}

// setDefault calls kmsg's Default on *v if it has one: tagged fields are
// encoded only when they differ from it.
func setDefault(v reflect.Value) {
	if m := v.MethodByName("Default"); m.IsValid() {
		m.Call(nil)
	}
}

// setTag adds an unknown tagged field to struct s.
func setTag(s reflect.Value, key uint32, val []byte) {
	if f := s.FieldByName("UnknownTags"); f.IsValid() && f.Type() == tagsType {
		f.Addr().Interface().(*kmsg.Tags).Set(key, val)
	}
}

// structLayout derives the layout of the struct of type t at path.
func (p *prober) structLayout(path []int, t reflect.Type) (*layout, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%v at %v is not a struct", t, path)
	}
	marked := func(s reflect.Value) {
		if p.flexible {
			setTag(s, markTag, mark)
		}
	}
	base := p.encode(path, marked)
	tagsAt := -1 // index of the struct's tagged-field count in base
	if p.flexible {
		at := bytes.Index(base, mark)
		if at < 0 || bytes.LastIndex(base, mark) != at {
			return nil, fmt.Errorf("%v at %v: cannot locate its tagged fields", t, path)
		}
		tagsAt = at - 1 - uvarintLen(markTag) - 1
		if tagsAt < 0 || base[tagsAt] != 1 {
			return nil, fmt.Errorf("%v at %v: unexpected tagged-field section", t, path)
		}
	}
	l := &layout{tags: map[uint32]*field{}}
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Type == tagsType || (len(path) == 0 && sf.Name == "Version") {
			continue
		}
		sub := append(slices.Clip(path), i)
		var f *field
		var where placement
		var tag uint32
		var err error
		if !p.flexible && sf.Type.Kind() == reflect.Struct {
			// A struct field has no value of its own to change: it
			// is encoded iff some field inside it is.
			if f, err = p.fieldOf(sub, sf.Type); err == nil && (f.op != opStruct || len(f.st.fields) > 0) {
				where = inline
			}
		} else if where, tag, err = p.classify(path, i, fixedSize(sf.Type), base, tagsAt, marked); err == nil && where != absent {
			// Derived only once known to be encoded: the probes
			// inside a struct need it to be in the encoding.
			f, err = p.fieldOf(sub, sf.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%v.%s: %w", t, sf.Name, err)
		}
		switch where {
		case inline:
			l.fields = append(l.fields, f)
			l.min += f.min
		case tagged:
			l.tags[tag] = f
		}
	}
	if p.flexible {
		l.min++ // the tagged-field count
	}
	l.fields = mergeFixed(l.fields)
	return l, nil
}

// mergeFixed joins runs of fixed-size fields into one, so the walker
// skips them with one step: most of a request's fields are fixed.
func mergeFixed(fields []*field) []*field {
	var out []*field
	for _, f := range fields {
		if last := len(out) - 1; last >= 0 && f.op == opFixed && out[last].op == opFixed {
			out[last] = &field{op: opFixed, size: out[last].size + f.size, min: out[last].min + f.min}
			continue
		}
		out = append(out, f)
	}
	return out
}

// structField is the field of a struct with layout st: a fixed-size one
// if the struct is only fixed-size fields (no tagged-field section), so
// an array of them is skipped in one step.
func structField(st *layout, flexible bool) *field {
	if !flexible && len(st.fields) == 1 && st.fields[0].op == opFixed {
		return st.fields[0]
	}
	return &field{op: opStruct, st: st, min: st.min}
}

// fieldOf is the wire shape of a field of Go type t at path.
func (p *prober) fieldOf(path []int, t reflect.Type) (*field, error) {
	lenSize := 4 // int32 length of bytes and arrays
	strSize := 2 // int16 length of strings
	if p.flexible {
		lenSize, strSize = 1, 1 // compact lengths: one-byte uvarint at least
	}
	switch t.Kind() {
	case reflect.Bool, reflect.Int8, reflect.Uint8:
		return &field{op: opFixed, size: 1, min: 1}, nil
	case reflect.Int16, reflect.Uint16:
		return &field{op: opFixed, size: 2, min: 2}, nil
	case reflect.Int32, reflect.Uint32:
		return &field{op: opFixed, size: 4, min: 4}, nil
	case reflect.Int64, reflect.Uint64, reflect.Float64:
		return &field{op: opFixed, size: 8, min: 8}, nil
	case reflect.Array:
		if t.Elem().Kind() != reflect.Uint8 {
			return nil, fmt.Errorf("unsupported type %v", t)
		}
		return &field{op: opFixed, size: t.Len(), min: t.Len()}, nil
	case reflect.String:
		return &field{op: opString, min: strSize}, nil
	case reflect.Pointer:
		switch t.Elem().Kind() {
		case reflect.String:
			return &field{op: opString, min: strSize}, nil
		case reflect.Struct:
			st, err := p.structLayout(path, t.Elem())
			if err != nil {
				return nil, err
			}
			return &field{op: opNullableStruct, st: st, min: 1}, nil
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return &field{op: opBytes, min: lenSize}, nil
		}
		var elem *field
		var err error
		if t.Elem().Kind() == reflect.Struct {
			var st *layout
			if st, err = p.structLayout(path, t.Elem()); err == nil {
				elem = structField(st, p.flexible)
			}
		} else if t.Elem().Kind() != reflect.Slice || t.Elem().Elem().Kind() == reflect.Uint8 {
			elem, err = p.fieldOf(path, t.Elem())
		} else {
			err = fmt.Errorf("unsupported type %v", t)
		}
		if err != nil {
			return nil, err
		}
		return &field{op: opArray, elem: elem, mem: int(t.Elem().Size()), min: lenSize}, nil
	case reflect.Struct:
		st, err := p.structLayout(path, t)
		if err != nil {
			return nil, err
		}
		return structField(st, p.flexible), nil
	}
	return nil, fmt.Errorf("unsupported type %v", t)
}

// placement is where a version encodes a field.
type placement uint8

const (
	absent placement = iota
	inline
	tagged
)

// classify finds where field i of the struct at path is encoded: it
// encodes the request with the field changed from its default and
// compares with base (the struct at defaults, marked). Inline, the change
// stays before the struct's tagged-field section; tagged, it is one more
// tagged field in that section, whose key is the tag.
func (p *prober) classify(path []int, i int, fixed bool, base []byte, tagsAt int, marked func(reflect.Value)) (placement, uint32, error) {
	enc := p.encode(path, func(s reflect.Value) {
		marked(s)
		setMarker(s.Field(i), p.flexible)
	})
	if bytes.Equal(enc, base) {
		return absent, 0, nil
	}
	if !p.flexible {
		return inline, 0, nil
	}
	if fixed && len(enc) == len(base) {
		return inline, 0, nil // a tagged field adds its tag, size and value
	}
	if !fixed && bytes.HasSuffix(enc, base[tagsAt:]) {
		return inline, 0, nil // section unchanged: [1, mark tag] ...
	}
	// Tagged: the section becomes [2, tag, size, value, mark tag] ...
	rest := base[tagsAt+1:]
	end := len(enc) - len(rest)
	if !bytes.HasSuffix(enc, rest) || end <= tagsAt || enc[tagsAt] != 2 {
		return 0, 0, fmt.Errorf("encoding changed neither inline nor as a tagged field")
	}
	tag, n := binary.Uvarint(enc[tagsAt+1 : end])
	if n <= 0 {
		return 0, 0, fmt.Errorf("bad tag in probe encoding")
	}
	size, m := binary.Uvarint(enc[tagsAt+1+n : end])
	if m <= 0 || tagsAt+1+n+m+int(size) != end || tag > math.MaxUint32 {
		return 0, 0, fmt.Errorf("bad tagged field in probe encoding")
	}
	return tagged, uint32(tag), nil
}

// setMarker changes v from its default to a value whose encoding does not
// end in byte 1 (see mark).
func setMarker(v reflect.Value, flexible bool) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		x := int64(0x5a5a5a5a5a5a5a5a)
		if v.Int() == x>>(64-v.Type().Bits()) {
			x = 0x3c3c3c3c3c3c3c3c
		}
		v.SetInt(x >> (64 - v.Type().Bits()))
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		x := uint64(0x5a5a5a5a5a5a5a5a)
		if v.Uint() == x>>(64-v.Type().Bits()) {
			x = 0x3c3c3c3c3c3c3c3c
		}
		v.SetUint(x >> (64 - v.Type().Bits()))
	case reflect.Float64:
		x := math.Float64frombits(0x5a5a5a5a5a5a5a5a)
		if v.Float() == x {
			x = math.Float64frombits(0x3c3c3c3c3c3c3c3c)
		}
		v.SetFloat(x)
	case reflect.Array:
		for j := range v.Len() {
			v.Index(j).SetUint(0x5a)
		}
	case reflect.String:
		v.SetString(differentString(v.String()))
	case reflect.Pointer:
		e := reflect.New(v.Type().Elem())
		setDefault(e)
		if e.Elem().Kind() == reflect.String {
			old := ""
			if !v.IsNil() {
				old = v.Elem().String()
			}
			e.Elem().SetString(differentString(old))
		}
		v.Set(e)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte(differentString(string(v.Bytes()))))
			return
		}
		e := reflect.New(v.Type().Elem())
		setDefault(e)
		if e.Elem().Kind() != reflect.Struct {
			setMarker(e.Elem(), flexible)
		}
		v.Set(reflect.Append(reflect.MakeSlice(v.Type(), 0, 1), e.Elem()))
	case reflect.Struct:
		setTag(v, fieldMarkTag, fieldMark)
	}
}

func differentString(s string) string {
	if s == "ab" {
		return "cd"
	}
	return "ab"
}

func uvarintLen(x uint64) int {
	return len(binary.AppendUvarint(nil, x))
}

// fixedSize reports whether Go type t encodes to a fixed number of bytes.
func fixedSize(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float64, reflect.Array:
		return true
	}
	return false
}
