package wire

import (
	"encoding/binary"
	"math/rand/v2"
	"reflect"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// requestKinds calls fn for every request key kmsg knows at every version.
func requestKinds(fn func(key, version int16)) {
	for key := int16(0); key <= kmsg.MaxKey; key++ {
		r := kmsg.RequestForKey(key)
		if r == nil {
			continue
		}
		for v := int16(0); v <= r.MaxVersion(); v++ {
			fn(key, v)
		}
	}
}

// randomRequest is a request of key at version with every field random:
// arrays of 0-3 elements, null and non-null strings, bytes and structs,
// tagged fields set or left at their default, and unknown tagged fields.
func randomRequest(rng *rand.Rand, key, version int16) kmsg.Request {
	req := kmsg.RequestForKey(key)
	fill(rng, reflect.ValueOf(req).Elem(), 0)
	req.SetVersion(version)
	return req
}

// fill sets v, a settable value of a kmsg request type, to random content.
func fill(rng *rand.Rand, v reflect.Value, depth int) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(rng.IntN(2) == 0)
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(randInt(rng))
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(randInt(rng)))
	case reflect.Float64:
		v.SetFloat(rng.NormFloat64())
	case reflect.Array:
		for i := range v.Len() {
			v.Index(i).SetUint(uint64(rng.IntN(256)))
		}
	case reflect.String:
		v.SetString(randString(rng))
	case reflect.Pointer:
		if rng.IntN(3) == 0 {
			v.SetZero()
			return
		}
		e := reflect.New(v.Type().Elem())
		fill(rng, e.Elem(), depth+1)
		v.Set(e)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if rng.IntN(4) == 0 {
				v.SetZero()
			} else {
				b := make([]byte, rng.IntN(40))
				for i := range b {
					b[i] = byte(rng.IntN(256))
				}
				v.SetBytes(b)
			}
			return
		}
		n := rng.IntN(4)
		if depth > 6 {
			n = 0
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fill(rng, s.Index(i), depth+1)
		}
		v.Set(s)
	case reflect.Struct:
		if v.Type() == tagsType {
			tags := v.Addr().Interface().(*kmsg.Tags)
			for range rng.IntN(3) {
				// Above every tag kmsg knows: a known tag with a
				// random value is not a valid request.
				val := make([]byte, rng.IntN(5))
				tags.Set(uint32(1000+rng.IntN(100000)), val)
			}
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).Name == "Version" && depth == 0 {
				continue
			}
			fill(rng, v.Field(i), depth+1)
		}
	}
}

// randInt is small, negative, zero or extreme, as counts and ids are.
func randInt(rng *rand.Rand) int64 {
	switch rng.IntN(4) {
	case 0:
		return 0
	case 1:
		return -1
	case 2:
		return int64(rng.Uint64())
	}
	return rng.Int64N(300)
}

func randString(rng *rand.Rand) string {
	b := make([]byte, rng.IntN(12))
	for i := range b {
		b[i] = byte('a' + rng.IntN(26))
	}
	return string(b)
}

// minimal is the shortest encoding of field f; if f is target (an array),
// it holds n elements, and arrays on the way to target hold one element.
// It reports whether target was reached.
func minimal(dst []byte, f *field, flex bool, target *field, n int) ([]byte, bool) {
	lenOf := func(dst []byte, size, v int) []byte {
		if flex {
			return binary.AppendUvarint(dst, uint64(v+1))
		}
		if size == 2 {
			return binary.BigEndian.AppendUint16(dst, uint16(v))
		}
		return binary.BigEndian.AppendUint32(dst, uint32(v))
	}
	switch f.op {
	case opFixed:
		return append(dst, make([]byte, f.size)...), false
	case opString:
		return lenOf(dst, 2, 0), false
	case opBytes:
		return lenOf(dst, 4, 0), false
	case opArray:
		if f == target {
			dst = lenOf(dst, 4, n)
			for range n {
				dst, _ = minimal(dst, f.elem, flex, nil, 0)
			}
			return dst, true
		}
		if elem, ok := minimal(nil, f.elem, flex, target, n); ok {
			return append(lenOf(dst, 4, 1), elem...), true
		}
		return lenOf(dst, 4, 0), false
	case opNullableStruct:
		if body, ok := minimalStruct(nil, f.st, flex, target, n); ok {
			return append(append(dst, 1), body...), true
		}
		return append(dst, 0xff), false
	}
	return minimalStruct(dst, f.st, flex, target, n)
}

func minimalStruct(dst []byte, l *layout, flex bool, target *field, n int) ([]byte, bool) {
	found := false
	for _, f := range l.fields {
		var ok bool
		dst, ok = minimal(dst, f, flex, target, n)
		found = found || ok
	}
	if flex {
		dst = append(dst, 0)
	}
	return dst, found
}

// arrays lists every inline array field in l, depth first.
func arrays(l *layout) []*field {
	var out []*field
	var walk func(f *field)
	walk = func(f *field) {
		switch {
		case f.op == opArray:
			out = append(out, f)
			walk(f.elem)
		case f.st != nil:
			for _, g := range f.st.fields {
				walk(g)
			}
		}
	}
	for _, f := range l.fields {
		walk(f)
	}
	return out
}
