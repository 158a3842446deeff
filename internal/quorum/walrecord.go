package quorum

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// A WAL record is
//
//	length  uint32 LE   bytes of payload
//	crc     uint32 LE   CRC-32C of length, type and payload
//	type    uint8       recEntry, recHardState or recSnapshot
//	payload [length]byte  a protobuf raftpb.Entry or raftpb.HardState
//	trailer uint8       recTrailer
//
// The trailer is never zero, so a complete record never ends in a zero byte:
// a file whose last bytes are zero was cut by a crash after its size reached
// the disk and before its data did (see classifyBadRecord).
const (
	recHeaderSize = 9
	recTrailer    = 0xA5

	recEntry     byte = 1
	recHardState byte = 2
	// recSnapshot marks that the log was replaced by a snapshot received
	// from the leader: every earlier entry is void. Its payload is a
	// raftpb.Entry carrying only the snapshot's index and term.
	recSnapshot byte = 3
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendRecord appends one framed record to buf.
func appendRecord(buf []byte, typ byte, payload []byte) []byte {
	var h [recHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	h[8] = typ
	crc := crc32.Update(0, castagnoli, h[0:4])
	crc = crc32.Update(crc, castagnoli, h[8:9])
	crc = crc32.Update(crc, castagnoli, payload)
	binary.LittleEndian.PutUint32(h[4:8], crc)
	buf = append(buf, h[:]...)
	buf = append(buf, payload...)
	return append(buf, recTrailer)
}

// errShortRecord says the bytes end inside a record: the record was never
// completely written.
var errShortRecord = errors.New("record runs past the end of the file")

// badRecord describes a record that cannot be trusted: why, and where the
// bytes it claims end (used to tell a torn tail from damage).
type badRecord struct {
	reason string
	end    int64 // offset just past the bytes the record claims
	short  bool  // the record runs past the end of the file
}

// readRecord reads the record at off of a file of the given size. It
// allocates at most maxPayload bytes, whatever the length field says. A nil
// bad and nil err with n == 0 means off == size (clean end).
func readRecord(r io.ReaderAt, off, size int64, maxPayload int) (typ byte, payload []byte, n int64, bad *badRecord, err error) {
	if off >= size {
		return 0, nil, 0, nil, nil
	}
	if size-off < recHeaderSize {
		return 0, nil, 0, &badRecord{reason: errShortRecord.Error(), end: off + recHeaderSize, short: true}, nil
	}
	var h [recHeaderSize]byte
	if _, err := r.ReadAt(h[:], off); err != nil {
		return 0, nil, 0, nil, err
	}
	length := binary.LittleEndian.Uint32(h[0:4])
	if int64(length) > int64(maxPayload) {
		return 0, nil, 0, &badRecord{reason: fmt.Sprintf("record length %d exceeds the %d limit", length, maxPayload), end: off + recHeaderSize}, nil
	}
	total := int64(recHeaderSize) + int64(length) + 1
	if size-off < total {
		return 0, nil, 0, &badRecord{reason: errShortRecord.Error(), end: off + total, short: true}, nil
	}
	body := make([]byte, length+1)
	if _, err := r.ReadAt(body, off+recHeaderSize); err != nil && !(errors.Is(err, io.EOF) && len(body) > 0) {
		return 0, nil, 0, nil, err
	}
	crc := crc32.Update(0, castagnoli, h[0:4])
	crc = crc32.Update(crc, castagnoli, h[8:9])
	crc = crc32.Update(crc, castagnoli, body[:length])
	switch {
	case body[length] != recTrailer:
		return 0, nil, 0, &badRecord{reason: "record trailer missing", end: off + total}, nil
	case crc != binary.LittleEndian.Uint32(h[4:8]):
		return 0, nil, 0, &badRecord{reason: "record CRC mismatch", end: off + total}, nil
	case h[8] != recEntry && h[8] != recHardState && h[8] != recSnapshot:
		return 0, nil, 0, &badRecord{reason: fmt.Sprintf("unknown record type %d", h[8]), end: off + total}, nil
	}
	return h[8], body[:length:length], total, nil, nil
}

// isTornTail tells whether a bad record at the end of the last segment is
// the remains of a write that a crash interrupted: the record runs past the
// end of the file, or every byte from its last claimed byte to the end of
// the file is zero (the file's size reached the disk, its data did not).
// A complete record with intact trailing bytes that fails its CRC is damage,
// not a torn write, and is never truncated.
func isTornTail(r io.ReaderAt, size int64, bad *badRecord) (bool, error) {
	if bad.short || bad.end > size {
		return true, nil
	}
	from := bad.end - 1
	buf := make([]byte, 64<<10)
	for off := from; off < size; {
		n := int64(len(buf))
		if size-off < n {
			n = size - off
		}
		if _, err := r.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		for _, b := range buf[:n] {
			if b != 0 {
				return false, nil
			}
		}
		off += n
	}
	return true, nil
}
