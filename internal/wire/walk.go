package wire

import (
	"encoding/binary"
	"fmt"
)

// walker reads a body by its layout, allocating nothing. It reads lengths
// as kmsg does (and accepts at least what kmsg accepts: a negative length
// is null, even where kmsg would refuse it, since null allocates nothing).
type walker struct {
	b    []byte
	flex bool
	// alloc estimates what kmsg allocates decoding the bytes walked so
	// far: every array's elements, every string's bytes and every unknown
	// tagged field (kept as a map entry and its bytes).
	alloc int64
}

// unknownTagCost is what kmsg allocates for one unknown tagged field
// beyond its value's bytes: a map entry with its share of the buckets, measured at
// about 157 bytes per tag as the map grows.
const unknownTagCost = 160

// short is the refusal when a field runs past the end of the body.
func short(what string, need, have int) error {
	return fmt.Errorf("%w: %s needs %d bytes, %d remain", ErrMalformed, what, need, have)
}

// skip consumes n bytes.
func (w *walker) skip(n int, what string) error {
	if n < 0 || n > len(w.b) {
		return short(what, n, len(w.b))
	}
	w.b = w.b[n:]
	return nil
}

// uvarint reads an unsigned varint of at most 5 bytes, as kmsg reads
// compact lengths and tags (the fifth byte may carry 4 bits).
func (w *walker) uvarint(what string) (uint32, error) {
	var x uint32
	for i := 0; i < 5 && i < len(w.b); i++ {
		c := w.b[i]
		if i == 4 {
			if c > 0x0f {
				break
			}
			x |= uint32(c) << 28
			w.b = w.b[5:]
			return x, nil
		}
		x |= uint32(c&0x7f) << (7 * i)
		if c < 0x80 {
			w.b = w.b[i+1:]
			return x, nil
		}
	}
	return 0, fmt.Errorf("%w: bad varint in %s", ErrMalformed, what)
}

// length reads a string's, bytes' or array's length: compact (uvarint of
// length+1) in flexible versions, else a big-endian integer of size bytes.
// An array count is computed in int32 as kmsg does.
func (w *walker) length(size int, count bool, what string) (int, error) {
	if w.flex {
		u, err := w.uvarint(what)
		if count {
			return int(int32(u) - 1), err // kmsg's int32 arithmetic for counts
		}
		return int(u) - 1, err
	}
	if len(w.b) < size {
		return 0, short(what, size, len(w.b))
	}
	var n int
	if size == 2 {
		n = int(int16(binary.BigEndian.Uint16(w.b)))
	} else {
		n = int(int32(binary.BigEndian.Uint32(w.b)))
	}
	w.b = w.b[size:]
	return n, nil
}

// structure walks a struct's inline fields and then its tagged fields.
func (w *walker) structure(l *layout) error {
	for _, f := range l.fields {
		if err := w.field(f); err != nil {
			return err
		}
	}
	if w.flex {
		return w.tags(l)
	}
	return nil
}

// field walks one field.
func (w *walker) field(f *field) error {
	switch f.op {
	case opFixed:
		return w.skip(f.size, "field")
	case opString, opBytes:
		size := 2
		if f.op == opBytes {
			size = 4
		}
		n, err := w.length(size, false, "string or bytes length")
		if err != nil || n < 0 {
			return err
		}
		if f.op == opString {
			w.alloc += int64(n) // kmsg copies strings; bytes alias the body
		}
		return w.skip(n, "string or bytes")
	case opArray:
		n, err := w.length(4, true, "array count")
		if err != nil || n <= 0 {
			return err
		}
		w.alloc += int64(n) * int64(f.mem) // after array's count check: n fits the body
		return w.array(n, f.elem)
	case opStruct:
		return w.structure(f.st)
	case opNullableStruct:
		if len(w.b) < 1 {
			return short("nullable struct", 1, 0)
		}
		present := int8(w.b[0])
		w.b = w.b[1:]
		if present == -1 {
			return nil
		}
		return w.structure(f.st)
	}
	return fmt.Errorf("unknown field op %d", f.op)
}

// array walks n elements, refusing before the first if n elements of the
// element's minimum size cannot fit: kmsg allocates all n at once.
func (w *walker) array(n int, elem *field) error {
	min := max(elem.min, 1)
	if n > len(w.b)/min {
		return fmt.Errorf("%w: array of %d elements needs at least %d bytes, %d remain",
			ErrMalformed, n, int64(n)*int64(min), len(w.b))
	}
	if elem.op == opFixed {
		return w.skip(n*elem.size, "array")
	}
	for range n {
		if err := w.field(elem); err != nil {
			return err
		}
	}
	return nil
}

// tags walks a tagged-field section: a count, then key, size and value
// per field. The value of a field kmsg knows is walked by its layout
// (kmsg decodes it, within those bytes); an unknown one is kept as bytes.
func (w *walker) tags(l *layout) error {
	n, err := w.uvarint("tagged field count")
	if err != nil {
		return err
	}
	if int64(n) > int64(len(w.b)/2) { // a key and a size at least
		return fmt.Errorf("%w (%d tags, %d bytes)", errTagCount, n, len(w.b))
	}
	for range n {
		key, err := w.uvarint("tag")
		if err != nil {
			return err
		}
		size, err := w.uvarint("tagged field size")
		if err != nil {
			return err
		}
		if int64(size) > int64(len(w.b)) {
			return short("tagged field", int(size), len(w.b))
		}
		val := w.b[:size]
		w.b = w.b[size:]
		if f := l.tags[key]; f != nil {
			sub := walker{b: val, flex: true}
			if err := sub.field(f); err != nil {
				return err
			}
			w.alloc += sub.alloc
		} else {
			w.alloc += unknownTagCost + int64(size)
		}
	}
	return nil
}
