// Package record parses, validates and re-encodes Kafka RecordBatch v2.
//
// The broker stores record batches as producers send them (compressed
// batches stay compressed) unless the topic's compression.type names a
// codec, in which case ValidateRecode re-encodes the records section and
// nothing else. On the store-as-sent path this package reads only the fixed
// 61-byte header, checks the CRC-32C that covers everything after the CRC
// field, and stamps the two fields the broker owns (base offset and
// partition leader epoch), neither of which the CRC covers. Decoding
// individual records is needed only off the hot path (validation of
// compressed payloads, re-encoding, timestamp lookups).
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// HeaderSize is the size of a v2 record batch header, up to and including the
// record count.
const HeaderSize = 61

// lengthFieldEnd is where the batch length field ends: BatchLength counts the
// bytes after it.
const lengthFieldEnd = 12

// Byte offsets of the header fields.
const (
	offBaseOffset      = 0
	offBatchLength     = 8
	offLeaderEpoch     = 12
	offMagic           = 16
	offCRC             = 17
	offAttributes      = 21
	offLastOffsetDelta = 23
	offFirstTimestamp  = 27
	offMaxTimestamp    = 35
	offProducerID      = 43
	offProducerEpoch   = 51
	offBaseSequence    = 53
	offRecordCount     = 57
)

// Attribute bits of a v2 batch.
const (
	AttrCompressionMask = 0x07
	AttrLogAppendTime   = 0x08
	AttrTransactional   = 0x10
	AttrControl         = 0x20
	AttrDeleteHorizon   = 0x40
)

// Compression codecs as stored in the low attribute bits.
const (
	CompressionNone   = 0
	CompressionGzip   = 1
	CompressionSnappy = 2
	CompressionLZ4    = 3
	CompressionZstd   = 4
)

// Errors returned by Parse and Validate. Callers map them to Kafka codes:
// ErrCorrupt → CORRUPT_MESSAGE, ErrMagic → UNSUPPORTED_FOR_MESSAGE_FORMAT or
// CORRUPT_MESSAGE, ErrInvalid → INVALID_RECORD.
var (
	ErrShort   = errors.New("record batch: truncated")
	ErrCorrupt = errors.New("record batch: corrupt")
	ErrMagic   = errors.New("record batch: unsupported magic")
	ErrInvalid = errors.New("record batch: invalid")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the decoded fixed part of a v2 record batch.
type Header struct {
	BaseOffset      int64
	Length          int32 // bytes after the length field
	LeaderEpoch     int32
	Magic           int8
	CRC             uint32
	Attributes      int16
	LastOffsetDelta int32
	FirstTimestamp  int64
	MaxTimestamp    int64
	ProducerID      int64
	ProducerEpoch   int16
	BaseSequence    int32
	NumRecords      int32
}

// Size is the full size of the batch in bytes, header included.
func (h *Header) Size() int { return lengthFieldEnd + int(h.Length) }

// LastOffset is the offset of the batch's last record.
func (h *Header) LastOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) }

// Compression returns the codec of the batch's records.
func (h *Header) Compression() int { return int(h.Attributes & AttrCompressionMask) }

// IsTransactional reports whether the batch belongs to a transaction.
func (h *Header) IsTransactional() bool { return h.Attributes&AttrTransactional != 0 }

// IsControl reports whether the batch holds a transaction marker.
func (h *Header) IsControl() bool { return h.Attributes&AttrControl != 0 }

// HasProducerID reports whether the batch was written by an idempotent or
// transactional producer.
func (h *Header) HasProducerID() bool { return h.ProducerID >= 0 }

// LastSequence is the sequence number of the batch's last record, wrapping
// at MaxInt32 like Kafka does.
func (h *Header) LastSequence() int32 {
	return AddSequence(h.BaseSequence, h.LastOffsetDelta)
}

// AddSequence adds n to a producer sequence number, wrapping at MaxInt32.
func AddSequence(seq, n int32) int32 {
	s := int64(seq) + int64(n)
	if s > 0x7fffffff {
		s -= 0x80000000
	}
	return int32(s)
}

// PeekSize returns the full size of the batch starting at b from its first 12
// bytes, or ErrShort if fewer are available.
func PeekSize(b []byte) (int, error) {
	if len(b) < lengthFieldEnd {
		return 0, ErrShort
	}
	l := int32(binary.BigEndian.Uint32(b[offBatchLength:]))
	if l < HeaderSize-lengthFieldEnd {
		return 0, fmt.Errorf("%w: batch length %d below header size", ErrCorrupt, l)
	}
	return lengthFieldEnd + int(l), nil
}

// ParseHeader decodes the header at the start of b without checking the CRC.
// b must hold at least HeaderSize bytes.
func ParseHeader(b []byte) (Header, error) {
	var h Header
	if len(b) < HeaderSize {
		return h, ErrShort
	}
	be := binary.BigEndian
	h.BaseOffset = int64(be.Uint64(b[offBaseOffset:]))
	h.Length = int32(be.Uint32(b[offBatchLength:]))
	h.LeaderEpoch = int32(be.Uint32(b[offLeaderEpoch:]))
	h.Magic = int8(b[offMagic])
	h.CRC = be.Uint32(b[offCRC:])
	h.Attributes = int16(be.Uint16(b[offAttributes:]))
	h.LastOffsetDelta = int32(be.Uint32(b[offLastOffsetDelta:]))
	h.FirstTimestamp = int64(be.Uint64(b[offFirstTimestamp:]))
	h.MaxTimestamp = int64(be.Uint64(b[offMaxTimestamp:]))
	h.ProducerID = int64(be.Uint64(b[offProducerID:]))
	h.ProducerEpoch = int16(be.Uint16(b[offProducerEpoch:]))
	h.BaseSequence = int32(be.Uint32(b[offBaseSequence:]))
	h.NumRecords = int32(be.Uint32(b[offRecordCount:]))
	if h.Magic != 2 {
		return h, fmt.Errorf("%w: %d", ErrMagic, h.Magic)
	}
	if h.Length < HeaderSize-lengthFieldEnd {
		return h, fmt.Errorf("%w: batch length %d below header size", ErrCorrupt, h.Length)
	}
	return h, nil
}

// Parse decodes the header of the single batch at the start of b and checks
// that b holds the whole batch and that its CRC matches. It returns the header
// and the batch's full size.
func Parse(b []byte) (Header, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return h, err
	}
	size := h.Size()
	if size > len(b) {
		return h, fmt.Errorf("%w: batch of %d bytes, %d available", ErrShort, size, len(b))
	}
	if got := crc32.Checksum(b[offAttributes:size], castagnoli); got != h.CRC {
		return h, fmt.Errorf("%w: crc %08x, computed %08x", ErrCorrupt, h.CRC, got)
	}
	return h, nil
}

// SetBaseOffset stamps the broker-assigned base offset into the batch. The CRC
// does not cover this field, so the stored bytes stay valid.
func SetBaseOffset(b []byte, off int64) {
	binary.BigEndian.PutUint64(b[offBaseOffset:], uint64(off))
}

// SetLeaderEpoch stamps the partition leader epoch; not covered by the CRC.
func SetLeaderEpoch(b []byte, epoch int32) {
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], uint32(epoch))
}

// SetLogAppendTime rewrites the batch for a topic with
// message.timestamp.type=LogAppendTime: the attribute bit and max timestamp
// change, so the CRC is recomputed. With ValidateRecode, these are the only
// places the broker touches CRC-covered bytes.
func SetLogAppendTime(b []byte, ts int64) {
	be := binary.BigEndian
	attrs := be.Uint16(b[offAttributes:]) | AttrLogAppendTime
	be.PutUint16(b[offAttributes:], attrs)
	be.PutUint64(b[offMaxTimestamp:], uint64(ts))
	size := lengthFieldEnd + int(int32(be.Uint32(b[offBatchLength:])))
	be.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:size], castagnoli))
}

// Split walks a buffer of concatenated batches and calls fn with each whole
// batch; it stops at the first error. A trailing partial batch is reported
// as ErrShort together with the number of bytes consumed before it.
func Split(b []byte, fn func(h Header, batch []byte) error) (int, error) {
	pos := 0
	for pos < len(b) {
		h, err := Parse(b[pos:])
		if err != nil {
			return pos, err
		}
		size := h.Size()
		if err := fn(h, b[pos:pos+size]); err != nil {
			return pos, err
		}
		pos += size
	}
	return pos, nil
}
