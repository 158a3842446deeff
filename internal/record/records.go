package record

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
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

// MaxDecompressedBytes bounds decompression of batches already in the log
// (timestamp lookups, marker and coordinator replay): they were checked
// against their topic's limit when produced, so this only guards against a
// damaged file.
const MaxDecompressedBytes = 256 << 20

// ErrTooLarge means a batch's records decompress to more than the limit the
// caller set; the broker answers MESSAGE_TOO_LARGE. Decompression stops as
// soon as the limit is passed, so a small bomb never expands in memory.
var ErrTooLarge = errors.New("record batch: decompressed records exceed the limit")

// maxZstdWindow caps the history a zstd frame may ask the decoder to keep:
// the decoder allocates it up front from the frame header, before any
// output exists to count. 8 MiB is the window of every standard zstd level
// (1-19); only --ultra levels ask for more.
const maxZstdWindow = 8 << 20

// decompressSlots bounds concurrent decompressions broker-wide: each one
// holds a decompressor's buffers and a record at a time, so N bombs at once
// cost N × that only up to the number of CPUs that can run them anyway.
var decompressSlots = make(chan struct{}, runtime.GOMAXPROCS(0))

// acquireDecompress takes a decompression slot, or gives up when ctx ends.
func acquireDecompress(ctx context.Context) (release func(), err error) {
	select {
	case decompressSlots <- struct{}{}:
		return func() { <-decompressSlots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// decompressor streams one codec's output; release returns pooled state.
type decompressor struct {
	r       io.Reader
	release func()
}

// openDecompressor returns a streaming reader of the batch's records
// section for a compressed codec.
func openDecompressor(codec int, raw []byte) (decompressor, error) {
	switch codec {
	case CompressionGzip:
		zr, _ := gzipPool.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(bytes.NewReader(raw))
		} else {
			err = zr.Reset(bytes.NewReader(raw))
		}
		if err != nil {
			return decompressor{}, fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
		}
		return decompressor{r: zr, release: func() { gzipPool.Put(zr) }}, nil
	case CompressionSnappy:
		return decompressor{r: newSnappyReader(raw), release: func() {}}, nil
	case CompressionLZ4:
		lr := lz4Pool.Get().(*lz4.Reader)
		lr.Reset(bytes.NewReader(raw))
		return decompressor{r: lr, release: func() { lr.Reset(nil); lz4Pool.Put(lr) }}, nil
	case CompressionZstd:
		dec := zstdPool.Get().(*zstd.Decoder)
		if err := dec.Reset(bytes.NewReader(raw)); err != nil {
			zstdPool.Put(dec)
			return decompressor{}, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
		return decompressor{r: dec, release: func() { dec.Reset(nil); zstdPool.Put(dec) }}, nil
	default:
		return decompressor{}, fmt.Errorf("%w: unknown compression codec %d", ErrInvalid, codec)
	}
}

var (
	gzipPool sync.Pool
	lz4Pool  = sync.Pool{New: func() any { return lz4.NewReader(nil) }}
	zstdPool = sync.Pool{New: func() any {
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxZstdWindow),
			zstd.WithDecoderLowmem(true))
		return d
	}}
)

// capped passes at most limit bytes through and fails with ErrTooLarge
// the moment the underlying stream offers one more.
type capped struct {
	r     io.Reader
	left  int64
	limit int64
	codec string
}

func (c *capped) Read(p []byte) (int, error) {
	if c.left <= 0 {
		// Probe for one more byte: a stream that ends exactly at the
		// limit is fine, anything after it is not.
		var one [1]byte
		n, err := c.r.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("%w: %s records expand beyond %d bytes", ErrTooLarge, c.codec, c.limit)
		}
		return 0, c.wrap(err)
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, c.wrap(err)
}

func (c *capped) wrap(err error) error {
	if err == nil || err == io.EOF || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, c.codec, err)
}

// xerialMagic opens snappy payloads framed the way the Java client writes
// them; other clients send a plain snappy block.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// snappyReader decodes a plain snappy block or xerial chunks one block at
// a time. Snappy blocks state their decoded length up front, so a block is
// refused before decoding when it alone would pass the limit (see
// errSnappyBlock), and the capped reader above it stops the rest.
type snappyReader struct {
	blocks [][]byte // encoded blocks still to decode
	cur    []byte   // decoded bytes not yet read
	err    error
	budget int64 // set by the caller through capped: no single block above it
}

func newSnappyReader(raw []byte) *snappyReader {
	if !bytes.HasPrefix(raw, xerialMagic) {
		return &snappyReader{blocks: [][]byte{raw}}
	}
	if len(raw) < 16 {
		return &snappyReader{err: fmt.Errorf("%w: snappy: truncated xerial header", ErrCorrupt)}
	}
	s := &snappyReader{}
	for rest := raw[16:]; len(rest) > 0; {
		if len(rest) < 4 {
			s.err = fmt.Errorf("%w: snappy: truncated xerial chunk", ErrCorrupt)
			break
		}
		n := int(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		if n < 0 || n > len(rest) {
			s.err = fmt.Errorf("%w: snappy: xerial chunk overruns payload", ErrCorrupt)
			break
		}
		s.blocks = append(s.blocks, rest[:n])
		rest = rest[n:]
	}
	return s
}

func (s *snappyReader) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		if len(s.blocks) == 0 {
			if s.err != nil {
				return 0, s.err
			}
			return 0, io.EOF
		}
		src := s.blocks[0]
		s.blocks = s.blocks[1:]
		n, err := s2.DecodedLen(src)
		if err != nil {
			return 0, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
		}
		if s.budget > 0 && int64(n) > s.budget {
			return 0, fmt.Errorf("%w: a snappy block expands to %d bytes, beyond %d", ErrTooLarge, n, s.budget)
		}
		if s.cur, err = s2.Decode(nil, src); err != nil {
			return 0, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
		}
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

var codecNames = [...]string{CompressionGzip: "gzip", CompressionSnappy: "snappy", CompressionLZ4: "lz4", CompressionZstd: "zstd"}

var errRecordShort = errors.New("record truncated")

// ForEach decodes every record of the batch in order and calls fn; fn
// returning false stops early. It checks the framing Kafka checks on
// produce: the record count, sequential offset deltas, lengths that fit.
// Decompressed records are bounded by MaxDecompressedBytes; a record's
// slices stay valid after fn returns.
func ForEach(h Header, batch []byte, fn func(Record) bool) error {
	return ForEachLimit(context.Background(), h, batch, MaxDecompressedBytes, fn)
}

// ForEachLimit is ForEach with the decompressed records bounded by limit
// (ErrTooLarge past it). A compressed batch is decoded as a stream, one
// record in memory at a time, inside one of the broker-wide decompression
// slots (waiting for one until ctx ends).
func ForEachLimit(ctx context.Context, h Header, batch []byte, limit int64, fn func(Record) bool) error {
	raw := batch[HeaderSize:h.Size()]
	codec := h.Compression()
	if codec == CompressionNone {
		return forEachIn(h, raw, fn)
	}
	if codec >= len(codecNames) || codecNames[codec] == "" {
		return fmt.Errorf("%w: unknown compression codec %d", ErrInvalid, codec)
	}
	release, err := acquireDecompress(ctx)
	if err != nil {
		return err
	}
	defer release()
	d, err := openDecompressor(codec, raw)
	if err != nil {
		return err
	}
	defer d.release()
	if sr, ok := d.r.(*snappyReader); ok {
		sr.budget = limit
	}
	src := bufio.NewReaderSize(&capped{r: d.r, left: limit, limit: limit, codec: codecNames[codec]}, 4096)
	return forEachStreamed(h, src, limit, nil, fn)
}

// forEachIn walks records already in memory (an uncompressed batch).
func forEachIn(h Header, b []byte, fn func(Record) bool) error {
	prev := int32(-1)
	for i := int32(0); i < h.NumRecords; i++ {
		length, n := binary.Varint(b)
		if n <= 0 || length < 0 || int64(len(b)-n) < length {
			return fmt.Errorf("%w: record %d: %v", ErrInvalid, i, errRecordShort)
		}
		body := b[n : n+int(length)]
		b = b[n+int(length):]
		if err := visitRecord(i, body, &prev, h.LastOffsetDelta, fn); err != nil {
			return nilIfStop(err)
		}
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d bytes after the last of %d records", ErrInvalid, len(b), h.NumRecords)
	}
	return nil
}

// forEachStreamed walks records from a decompressing stream. Each record
// gets its own buffer, so callers may keep its slices, unless reuse is
// non-nil: then every record is read into *reuse, grown as needed (for
// callers that only check records). A buffer is sized from the record's
// length prefix only once that is within limit, so a lying prefix costs at
// most what honest data up to the limit would.
func forEachStreamed(h Header, src *bufio.Reader, limit int64, reuse *[]byte, fn func(Record) bool) error {
	prev := int32(-1)
	for i := int32(0); i < h.NumRecords; i++ {
		length, err := binary.ReadVarint(src)
		if err != nil {
			return streamErr(i, err)
		}
		if length < 0 {
			return fmt.Errorf("%w: record %d: negative length", ErrInvalid, i)
		}
		if length > limit {
			return fmt.Errorf("%w: record %d of %d bytes, beyond %d", ErrTooLarge, i, length, limit)
		}
		var body []byte
		if reuse == nil {
			body = make([]byte, length)
		} else {
			if int64(cap(*reuse)) < length {
				*reuse = make([]byte, length)
			}
			body = (*reuse)[:length]
		}
		if _, err := io.ReadFull(src, body); err != nil {
			return streamErr(i, err)
		}
		if err := visitRecord(i, body, &prev, h.LastOffsetDelta, fn); err != nil {
			return nilIfStop(err)
		}
	}
	if _, err := src.ReadByte(); err == nil {
		return fmt.Errorf("%w: bytes after the last of %d records", ErrInvalid, h.NumRecords)
	} else if err != io.EOF {
		return streamErr(h.NumRecords, err)
	}
	return nil
}

// streamErr keeps a codec's verdict (corrupt, too large) and calls a
// stream that ends early a truncated record.
func streamErr(i int32, err error) error {
	if errors.Is(err, ErrTooLarge) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrInvalid) {
		return err
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: record %d: %v", ErrInvalid, i, errRecordShort)
	}
	return fmt.Errorf("%w: record %d: %v", ErrCorrupt, i, err)
}

// errStop is how visitRecord reports that fn asked to stop.
var errStop = errors.New("stop")

func nilIfStop(err error) error {
	if err == errStop {
		return nil
	}
	return err
}

// visitRecord parses record i and hands it to fn.
//
// Offset deltas must increase and stay within the batch's last offset
// delta. A produced batch has NumRecords = LastOffsetDelta+1 (Validate),
// which forces delta = i; a batch the log cleaner rewrote keeps its last
// offset delta with fewer records, so its deltas may skip.
func visitRecord(i int32, body []byte, prev *int32, last int32, fn func(Record) bool) error {
	rec, err := parseRecord(body)
	if err != nil {
		return fmt.Errorf("%w: record %d: %v", ErrInvalid, i, err)
	}
	if rec.OffsetDelta <= *prev || rec.OffsetDelta > last || rec.OffsetDelta < i {
		return fmt.Errorf("%w: record %d has offset delta %d", ErrInvalid, i, rec.OffsetDelta)
	}
	*prev = rec.OffsetDelta
	if !fn(rec) {
		return errStop
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
// framing of every record (decompressing if needed, up to
// MaxDecompressedBytes).
func Validate(batch []byte) (Header, error) {
	return ValidateLimit(context.Background(), batch, MaxDecompressedBytes)
}

// ValidateLimit is Validate with the decompressed records bounded by
// maxDecompressed (ErrTooLarge past it); ctx bounds the wait for a
// decompression slot.
func ValidateLimit(ctx context.Context, batch []byte, maxDecompressed int64) (Header, error) {
	h, err := validateHeader(batch)
	if err != nil {
		return h, err
	}
	return h, ForEachLimit(ctx, h, batch, maxDecompressed, func(Record) bool { return true })
}
