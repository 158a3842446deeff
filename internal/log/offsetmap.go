package log

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
)

// offsetMapSlot is the size of one OffsetMap entry: a 16-byte key digest
// and the offset (plus one, so that zero marks an empty slot).
const offsetMapSlot = 24

// offsetMapLoad is the fraction of slots filled before the map reports
// itself full (Kafka's log.cleaner.io.buffer.load.factor default): open
// addressing slows down sharply near a full table.
const offsetMapLoad = 0.9

// OffsetMap maps record keys to the last offset seen for them, in a fixed
// amount of memory: the cleaner's dedupe buffer. Keys are stored as the
// first 16 bytes of their SHA-256 digest (a client cannot craft two keys
// that collide, which would make the cleaner drop a latest record), in one
// byte slice allocated once, with linear probing. It is not safe for
// concurrent use.
type OffsetMap struct {
	slots []byte
	n     int // slots
	limit int // entries before Put refuses new keys
	used  int
}

// NewOffsetMap returns a map using memory bytes (at least two slots).
func NewOffsetMap(memory int) *OffsetMap {
	n := max(memory/offsetMapSlot, 2)
	return &OffsetMap{slots: make([]byte, n*offsetMapSlot), n: n, limit: max(int(float64(n)*offsetMapLoad), 1)}
}

// Bytes is the memory the map holds.
func (m *OffsetMap) Bytes() int { return len(m.slots) }

// Len is the number of keys in the map.
func (m *OffsetMap) Len() int { return m.used }

// Capacity is the number of keys the map accepts before it is full.
func (m *OffsetMap) Capacity() int { return m.limit }

// Reset empties the map, keeping its memory.
func (m *OffsetMap) Reset() {
	clear(m.slots)
	m.used = 0
}

// find returns the slot holding digest d, or the empty slot where it goes.
// The load limit guarantees an empty slot, so the probe ends.
func (m *OffsetMap) find(d *[sha256.Size]byte) []byte {
	i := int(binary.LittleEndian.Uint64(d[:8]) % uint64(m.n))
	for {
		s := m.slots[i*offsetMapSlot : (i+1)*offsetMapSlot]
		if binary.LittleEndian.Uint64(s[16:]) == 0 || bytes.Equal(s[:16], d[:16]) {
			return s
		}
		i++
		if i == m.n {
			i = 0
		}
	}
}

// Put records offset as the latest for key. It returns false, changing
// nothing, when key is new and the map is full.
func (m *OffsetMap) Put(key []byte, offset int64) bool {
	d := sha256.Sum256(key)
	s := m.find(&d)
	if binary.LittleEndian.Uint64(s[16:]) == 0 {
		if m.used >= m.limit {
			return false
		}
		copy(s[:16], d[:16])
		m.used++
	}
	binary.LittleEndian.PutUint64(s[16:], uint64(offset)+1)
	return true
}

// Get returns the latest offset recorded for key.
func (m *OffsetMap) Get(key []byte) (int64, bool) {
	d := sha256.Sum256(key)
	s := m.find(&d)
	v := binary.LittleEndian.Uint64(s[16:])
	if v == 0 {
		return 0, false
	}
	return int64(v - 1), true
}
