package log

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// Sizes of the index file layouts described in the package documentation.
const (
	indexHeaderSize = 32
	offsetEntrySize = 8
	timeEntrySize   = 12
	indexVersion    = 1
)

var (
	offsetIndexMagic = [4]byte{'E', 'X', 'O', 'I'}
	timeIndexMagic   = [4]byte{'E', 'X', 'O', 'T'}
	castagnoli       = crc32.MakeTable(crc32.Castagnoli)
	errBadIndex      = errors.New("invalid index file")
)

// offsetEntry maps the base offset base+rel of a batch to its position.
type offsetEntry struct {
	rel uint32
	pos uint32
}

// timeEntry records that the batch at base+rel raised the segment's running
// maximum timestamp to ts.
type timeEntry struct {
	ts  int64
	rel uint32
}

func putIndexHeader(b []byte, magic [4]byte, logSize int64, field int64, count int) {
	copy(b, magic[:])
	b[4] = indexVersion
	b[5], b[6], b[7] = 0, 0, 0
	binary.BigEndian.PutUint64(b[8:], uint64(logSize))
	binary.BigEndian.PutUint64(b[16:], uint64(field))
	binary.BigEndian.PutUint32(b[24:], uint32(count))
}

func sealIndex(b []byte) {
	crc := crc32.Update(0, castagnoli, b[:28])
	crc = crc32.Update(crc, castagnoli, b[indexHeaderSize:])
	binary.BigEndian.PutUint32(b[28:], crc)
}

// checkIndexHeader validates the parts common to both index files and
// returns the header's 64-bit field and the entry bytes.
func checkIndexHeader(b []byte, magic [4]byte, entrySize int, logSize int64) (int64, []byte, error) {
	if len(b) < indexHeaderSize || [4]byte(b[:4]) != magic {
		return 0, nil, fmt.Errorf("%w: bad header", errBadIndex)
	}
	be := binary.BigEndian
	crc := crc32.Update(0, castagnoli, b[:28])
	crc = crc32.Update(crc, castagnoli, b[indexHeaderSize:])
	if crc != be.Uint32(b[28:]) {
		// Damage, not a format: an index is derived data, rebuilt from
		// its segment. (Checked before the version, so a flipped version
		// byte cannot make a partition refuse to open.)
		return 0, nil, fmt.Errorf("%w: crc mismatch", errBadIndex)
	}
	if b[4] > indexVersion {
		return 0, nil, fmt.Errorf("index version %d %w (up to %d)", b[4], errNewerFormat, indexVersion)
	}
	if b[4] != indexVersion || b[5]|b[6]|b[7] != 0 {
		return 0, nil, fmt.Errorf("%w: bad header", errBadIndex)
	}
	if got := int64(be.Uint64(b[8:])); got != logSize {
		return 0, nil, fmt.Errorf("%w: describes %d bytes of log, segment has %d", errBadIndex, got, logSize)
	}
	count := int64(be.Uint32(b[24:]))
	if int64(len(b)) != indexHeaderSize+count*int64(entrySize) {
		return 0, nil, fmt.Errorf("%w: %d entries in %d bytes", errBadIndex, count, len(b))
	}
	return int64(be.Uint64(b[16:])), b[indexHeaderSize:], nil
}

// encodeOffsetIndex returns the .index file contents for a segment.
func encodeOffsetIndex(logSize, next int64, entries []offsetEntry) []byte {
	b := make([]byte, indexHeaderSize+len(entries)*offsetEntrySize)
	putIndexHeader(b, offsetIndexMagic, logSize, next, len(entries))
	p := b[indexHeaderSize:]
	for _, e := range entries {
		binary.BigEndian.PutUint32(p, e.rel)
		binary.BigEndian.PutUint32(p[4:], e.pos)
		p = p[offsetEntrySize:]
	}
	sealIndex(b)
	return b
}

// decodeOffsetIndex parses and validates a .index file for the segment at
// base whose .log is logSize bytes; it returns the entries and the segment's
// next offset.
func decodeOffsetIndex(b []byte, base, logSize int64) ([]offsetEntry, int64, error) {
	next, p, err := checkIndexHeader(b, offsetIndexMagic, offsetEntrySize, logSize)
	if err != nil {
		return nil, 0, err
	}
	if next < base || next-base > math.MaxInt32+1 || (logSize == 0) != (next == base) {
		return nil, 0, fmt.Errorf("%w: next offset %d for base %d", errBadIndex, next, base)
	}
	entries := make([]offsetEntry, len(p)/offsetEntrySize)
	for i := range entries {
		e := offsetEntry{rel: binary.BigEndian.Uint32(p), pos: binary.BigEndian.Uint32(p[4:])}
		p = p[offsetEntrySize:]
		if int64(e.pos) >= logSize || base+int64(e.rel) >= next ||
			(i > 0 && (e.rel <= entries[i-1].rel || e.pos <= entries[i-1].pos)) {
			return nil, 0, fmt.Errorf("%w: entry %d out of order or range", errBadIndex, i)
		}
		entries[i] = e
	}
	return entries, next, nil
}

// encodeTimeIndex returns the .timeindex file contents for a segment.
func encodeTimeIndex(logSize, maxTs int64, entries []timeEntry) []byte {
	b := make([]byte, indexHeaderSize+len(entries)*timeEntrySize)
	putIndexHeader(b, timeIndexMagic, logSize, maxTs, len(entries))
	p := b[indexHeaderSize:]
	for _, e := range entries {
		binary.BigEndian.PutUint64(p, uint64(e.ts))
		binary.BigEndian.PutUint32(p[8:], e.rel)
		p = p[timeEntrySize:]
	}
	sealIndex(b)
	return b
}

// decodeTimeIndex parses and validates a .timeindex file; next is the
// segment's next offset from its offset index.
func decodeTimeIndex(b []byte, base, next, logSize int64) ([]timeEntry, int64, error) {
	maxTs, p, err := checkIndexHeader(b, timeIndexMagic, timeEntrySize, logSize)
	if err != nil {
		return nil, 0, err
	}
	if maxTs < -1 {
		return nil, 0, fmt.Errorf("%w: max timestamp %d", errBadIndex, maxTs)
	}
	entries := make([]timeEntry, len(p)/timeEntrySize)
	for i := range entries {
		e := timeEntry{ts: int64(binary.BigEndian.Uint64(p)), rel: binary.BigEndian.Uint32(p[8:])}
		p = p[timeEntrySize:]
		if e.ts > maxTs || base+int64(e.rel) >= next ||
			(i > 0 && (e.ts <= entries[i-1].ts || e.rel <= entries[i-1].rel)) {
			return nil, 0, fmt.Errorf("%w: time entry %d out of order or range", errBadIndex, i)
		}
		entries[i] = e
	}
	return entries, maxTs, nil
}
