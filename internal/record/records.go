package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Record is one decoded record of a batch. Key, Value and header slices alias
// the decompressed buffer.
type Record struct {
	OffsetDelta    int32
	TimestampDelta int64
	Key            []byte // nil for a null key
	Value          []byte // nil for a null value (tombstone)
	Headers        []RecordHeader
}

// RecordHeader is one record header.
type RecordHeader struct {
	Key   string
	Value []byte
}

// MaxDecompressedBytes bounds decompression so a small malicious batch
// cannot expand without limit.
const MaxDecompressedBytes = 256 << 20

// Payload returns the batch's records section, decompressed.
func Payload(h Header, batch []byte) ([]byte, error) {
	raw := batch[HeaderSize:h.Size()]
	switch h.Compression() {
	case CompressionNone:
		return raw, nil
	case CompressionGzip:
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
		}
		return readBounded(zr, "gzip")
	case CompressionSnappy:
		return decodeSnappy(raw)
	case CompressionLZ4:
		return readBounded(lz4.NewReader(bytes.NewReader(raw)), "lz4")
	case CompressionZstd:
		dec := zstdPool.Get().(*zstd.Decoder)
		defer zstdPool.Put(dec)
		out, err := dec.DecodeAll(raw, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: unknown compression codec %d", ErrInvalid, h.Compression())
	}
}

var zstdPool = sync.Pool{New: func() any {
	d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxDecompressedBytes))
	return d
}}

func readBounded(r io.Reader, codec string) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, MaxDecompressedBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, codec, err)
	}
	if len(out) > MaxDecompressedBytes {
		return nil, fmt.Errorf("%w: %s payload expands beyond %d bytes", ErrInvalid, codec, MaxDecompressedBytes)
	}
	return out, nil
}

// xerialMagic opens snappy payloads framed the way the Java client writes
// them; other clients send a plain snappy block.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

func decodeSnappy(raw []byte) ([]byte, error) {
	if !bytes.HasPrefix(raw, xerialMagic) {
		return snappyBlock(raw, nil)
	}
	if len(raw) < 16 {
		return nil, fmt.Errorf("%w: snappy: truncated xerial header", ErrCorrupt)
	}
	rest := raw[16:]
	var out []byte
	for len(rest) > 0 {
		if len(rest) < 4 {
			return nil, fmt.Errorf("%w: snappy: truncated xerial chunk", ErrCorrupt)
		}
		n := int(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		if n < 0 || n > len(rest) {
			return nil, fmt.Errorf("%w: snappy: xerial chunk overruns payload", ErrCorrupt)
		}
		var err error
		if out, err = snappyBlock(rest[:n], out); err != nil {
			return nil, err
		}
		rest = rest[n:]
	}
	return out, nil
}

func snappyBlock(src, dst []byte) ([]byte, error) {
	n, err := s2.DecodedLen(src)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	if n > MaxDecompressedBytes || len(dst)+n > MaxDecompressedBytes {
		return nil, fmt.Errorf("%w: snappy payload expands beyond %d bytes", ErrInvalid, MaxDecompressedBytes)
	}
	out, err := s2.Decode(nil, src)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
	}
	return append(dst, out...), nil
}

var errRecordShort = errors.New("record truncated")

// ForEach decodes every record of the batch in order and calls fn; fn
// returning false stops early. It checks the framing Kafka checks on
// produce: the record count, sequential offset deltas, lengths that fit.
func ForEach(h Header, batch []byte, fn func(Record) bool) error {
	payload, err := Payload(h, batch)
	if err != nil {
		return err
	}
	return forEachIn(h, payload, fn)
}

func forEachIn(h Header, b []byte, fn func(Record) bool) error {
	for i := int32(0); i < h.NumRecords; i++ {
		length, n := binary.Varint(b)
		if n <= 0 || length < 0 || int64(len(b)-n) < length {
			return fmt.Errorf("%w: record %d: %v", ErrInvalid, i, errRecordShort)
		}
		body := b[n : n+int(length)]
		b = b[n+int(length):]
		rec, err := parseRecord(body)
		if err != nil {
			return fmt.Errorf("%w: record %d: %v", ErrInvalid, i, err)
		}
		if rec.OffsetDelta != i {
			return fmt.Errorf("%w: record %d has offset delta %d", ErrInvalid, i, rec.OffsetDelta)
		}
		if !fn(rec) {
			return nil
		}
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d bytes after the last of %d records", ErrInvalid, len(b), h.NumRecords)
	}
	return nil
}

func parseRecord(b []byte) (Record, error) {
	var r Record
	if len(b) < 1 {
		return r, errRecordShort
	}
	b = b[1:] // attributes, unused in v2
	ts, n := binary.Varint(b)
	if n <= 0 {
		return r, errRecordShort
	}
	r.TimestampDelta, b = ts, b[n:]
	od, n := binary.Varint(b)
	if n <= 0 {
		return r, errRecordShort
	}
	r.OffsetDelta, b = int32(od), b[n:]
	var err error
	if r.Key, b, err = nullableBytes(b); err != nil {
		return r, err
	}
	if r.Value, b, err = nullableBytes(b); err != nil {
		return r, err
	}
	count, n := binary.Varint(b)
	if n <= 0 || count < 0 || count > int64(len(b)) {
		return r, errRecordShort
	}
	b = b[n:]
	for i := int64(0); i < count; i++ {
		var k, v []byte
		if k, b, err = nullableBytes(b); err != nil {
			return r, err
		}
		if k == nil {
			return r, errors.New("null header key")
		}
		if v, b, err = nullableBytes(b); err != nil {
			return r, err
		}
		r.Headers = append(r.Headers, RecordHeader{Key: string(k), Value: v})
	}
	if len(b) != 0 {
		return r, errors.New("trailing bytes in record")
	}
	return r, nil
}

func nullableBytes(b []byte) ([]byte, []byte, error) {
	l, n := binary.Varint(b)
	if n <= 0 {
		return nil, nil, errRecordShort
	}
	b = b[n:]
	if l < 0 {
		return nil, b, nil
	}
	if l > int64(len(b)) {
		return nil, nil, errRecordShort
	}
	return b[:l:l], b[l:], nil
}

// Validate checks a produced batch the way the broker must before storing
// it: CRC, magic, record count against the last offset delta, and the
// framing of every record (decompressing if needed).
func Validate(batch []byte) (Header, error) {
	h, err := Parse(batch)
	if err != nil {
		return h, err
	}
	if h.Size() != len(batch) {
		return h, fmt.Errorf("%w: %d bytes after the batch (one batch per partition is expected)", ErrInvalid, len(batch)-h.Size())
	}
	if h.NumRecords <= 0 {
		return h, fmt.Errorf("%w: batch has %d records", ErrInvalid, h.NumRecords)
	}
	if h.LastOffsetDelta != h.NumRecords-1 {
		return h, fmt.Errorf("%w: last offset delta %d with %d records", ErrInvalid, h.LastOffsetDelta, h.NumRecords)
	}
	return h, ForEach(h, batch, func(Record) bool { return true })
}
