package record

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Target is the codec a topic stores its batches in (compression.type
// other than "producer") and the level to compress at. Level is Kafka's
// compression.<codec>.level for the codec (ignored for snappy and none).
type Target struct {
	Codec int
	Level int
}

// NeedsRecode reports whether a batch must be re-encoded to be stored in
// target. A batch already in the target codec is stored as sent even if
// it was compressed at another level (as Kafka does), and control batches
// (transaction markers) are never compressed.
func (t Target) NeedsRecode(h Header) bool {
	return !h.IsControl() && h.Compression() != t.Codec
}

// Kafka's level ranges and defaults (KIP-390).
const (
	GzipLevelMin, GzipLevelMax, GzipLevelDefault = 1, 9, -1
	LZ4LevelMin, LZ4LevelMax, LZ4LevelDefault    = 1, 17, 9
	ZstdLevelMin, ZstdLevelMax, ZstdLevelDefault = -131072, 22, 3
)

// ErrRecodedTooLarge means the batch re-encoded to the target codec passed
// the batch limit (max.message.bytes): a gzip batch stored uncompressed
// may expand. It is an ErrTooLarge.
var ErrRecodedTooLarge = fmt.Errorf("%w: the batch re-encoded to the topic's compression.type is too large", ErrTooLarge)

// Recoded is a re-encoded batch in a pooled buffer. Release returns the
// buffer; the bytes must not be used afterwards.
type Recoded struct {
	Bytes []byte
	buf   *[]byte
}

// Release returns the buffer to the pool. Safe on nil.
func (r *Recoded) Release() {
	if r == nil || r.buf == nil {
		return
	}
	if cap(r.Bytes) <= maxPooledBuffer {
		*r.buf = r.Bytes[:0]
		bufferPool.Put(r.buf)
	}
	r.buf, r.Bytes = nil, nil
}

// maxPooledBuffer keeps one outsized batch (a topic with a raised
// max.message.bytes) from pinning its buffer in the pool for good.
const maxPooledBuffer = 4 << 20

var bufferPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// ValidateRecode is ValidateLimit that also re-encodes the batch's records
// to target when target.NeedsRecode says so, in the same pass: the
// records are decoded as a stream (bounded by maxDecompressed, one record
// in memory at a time, inside a decompression slot) and fed to target's
// compressor, whose output may not pass maxBatch bytes with the header
// (ErrTooLarge). Everything but the records' encoding is kept: the
// header's offsets, timestamps, producer id, epoch, base sequence and
// attributes (only the codec bits change); the CRC is recomputed. It
// returns the header of the batch to store and, if re-encoded, its bytes
// (nil when the batch is to be stored as sent).
func ValidateRecode(ctx context.Context, batch []byte, maxDecompressed int64, target Target, maxBatch int) (Header, *Recoded, error) {
	h, err := validateHeader(batch)
	if err != nil {
		return h, nil, err
	}
	if !target.NeedsRecode(h) {
		return h, nil, ForEachLimit(ctx, h, batch, maxDecompressed, func(Record) bool { return true })
	}
	if target.Codec < CompressionNone || target.Codec >= len(codecNames) || (target.Codec != CompressionNone && codecNames[target.Codec] == "") {
		return h, nil, fmt.Errorf("%w: unknown target codec %d", ErrInvalid, target.Codec)
	}
	release, err := acquireDecompress(ctx)
	if err != nil {
		return h, nil, err
	}
	defer release()
	buf := bufferPool.Get().(*[]byte)
	out := &Recoded{buf: buf}
	w := &boundedWriter{b: append((*buf)[:0], batch[:HeaderSize]...), max: maxBatch}
	if err := recodeRecords(h, batch, maxDecompressed, target, w); err != nil {
		out.Bytes = w.b
		out.Release()
		return h, nil, err
	}
	out.Bytes = w.b
	b := out.Bytes
	be := binary.BigEndian
	be.PutUint32(b[offBatchLength:], uint32(len(b)-lengthFieldEnd))
	attrs := be.Uint16(b[offAttributes:])&^AttrCompressionMask | uint16(target.Codec)
	be.PutUint16(b[offAttributes:], attrs)
	be.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
	nh, err := Parse(b)
	if err != nil { // cannot happen: the header was valid and is rewritten whole
		out.Release()
		return h, nil, err
	}
	return nh, out, nil
}

// validateHeader is the part of ValidateLimit before the records: CRC,
// magic, one batch, a record count that matches the last offset delta.
func validateHeader(batch []byte) (Header, error) {
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
	return h, nil
}

// recodeRecords validates the records section while writing it, decoded,
// into target's encoder over w.
func recodeRecords(h Header, batch []byte, limit int64, target Target, w io.Writer) error {
	raw := batch[HeaderSize:h.Size()]
	enc, err := openEncoder(target, w)
	if err != nil {
		return err
	}
	defer enc.release()
	if h.Compression() == CompressionNone {
		if err := forEachIn(h, raw, func(Record) bool { return true }); err != nil {
			return err
		}
		if int64(len(raw)) > limit {
			return fmt.Errorf("%w: records of %d bytes, beyond %d", ErrTooLarge, len(raw), limit)
		}
		if sized, ok := enc.w.(interface{ ResetContentSize(io.Writer, int64) }); ok {
			sized.ResetContentSize(w, int64(len(raw)))
		}
		if _, err := enc.w.Write(raw); err != nil {
			return err
		}
		return enc.w.Close()
	}
	codec := h.Compression()
	if codec >= len(codecNames) || codecNames[codec] == "" {
		return fmt.Errorf("%w: unknown compression codec %d", ErrInvalid, codec)
	}
	d, err := openDecompressor(codec, raw)
	if err != nil {
		return err
	}
	defer d.release()
	if sr, ok := d.r.(*snappyReader); ok {
		sr.budget = limit
	}
	// The tee sits below the record walk's buffer, so the encoder sees
	// exactly the decoded stream, and the walk refuses bytes after the
	// last record (which the encoder has then seen, but the batch is
	// refused anyway).
	tee := io.TeeReader(&capped{r: d.r, left: limit, limit: limit, codec: codecNames[codec]}, enc.w)
	// The records are only checked here (the encoder has their bytes), so
	// one buffer serves them all.
	var scratch []byte
	if err := forEachStreamed(h, bufio.NewReaderSize(tee, 4096), limit, &scratch, func(Record) bool { return true }); err != nil {
		return err
	}
	return enc.w.Close()
}

// boundedWriter appends to b and fails with ErrTooLarge once b would pass
// max bytes: a re-encoded batch larger than max.message.bytes is refused
// as Kafka refuses it, and never grows past that in memory.
type boundedWriter struct {
	b   []byte
	max int
}

func (w *boundedWriter) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > w.max {
		return 0, fmt.Errorf("%w (over %d bytes)", ErrRecodedTooLarge, w.max)
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

// AppendCompressed appends recs — encoded v2 records, as a batch holds
// them uncompressed — to dst compressed with codec at Kafka's default
// level for it: how a batch that lost some records (log compaction)
// keeps the codec it was written with, as Kafka's cleaner does.
func AppendCompressed(dst []byte, codec int, recs []byte) ([]byte, error) {
	level := 0
	switch codec {
	case CompressionNone:
		return append(dst, recs...), nil
	case CompressionGzip:
		level = GzipLevelDefault
	case CompressionLZ4:
		level = LZ4LevelDefault
	case CompressionZstd:
		level = ZstdLevelDefault
	}
	buf := bytes.NewBuffer(dst)
	enc, err := openEncoder(Target{Codec: codec, Level: level}, buf)
	if err != nil {
		return dst, err
	}
	defer enc.release()
	if _, err := enc.w.Write(recs); err != nil {
		return dst, err
	}
	if err := enc.w.Close(); err != nil {
		return dst, err
	}
	return buf.Bytes(), nil
}

// encoder is a pooled compressor writing to one destination.
type encoder struct {
	w       io.WriteCloser
	release func()
}

// openEncoder returns target's compressor writing to w, from a pool per
// codec and level.
func openEncoder(target Target, w io.Writer) (encoder, error) {
	switch target.Codec {
	case CompressionNone:
		return encoder{w: nopCloser{w}, release: func() {}}, nil
	case CompressionGzip:
		level := target.Level
		if level < GzipLevelMin || level > GzipLevelMax {
			level = gzip.DefaultCompression
		}
		p := &gzipWriters[level+1]
		zw, _ := p.Get().(*gzip.Writer)
		if zw == nil {
			var err error
			if zw, err = gzip.NewWriterLevel(w, level); err != nil {
				return encoder{}, err
			}
		} else {
			zw.Reset(w)
		}
		return encoder{w: zw, release: func() { zw.Reset(io.Discard); p.Put(zw) }}, nil
	case CompressionSnappy:
		sw := snappyWriters.Get().(*xerialWriter)
		sw.reset(w)
		return encoder{w: sw, release: func() { sw.reset(nil); snappyWriters.Put(sw) }}, nil
	case CompressionLZ4:
		level := lz4Level(target.Level)
		p := &lz4Writers[level]
		lw, _ := p.Get().(*lz4.Writer)
		if lw == nil {
			lw = lz4.NewWriter(w)
			// Kafka's 64 KiB blocks, not the library's 4 MiB: the block is
			// what each pooled writer holds.
			if err := lw.Apply(lz4.BlockSizeOption(lz4.Block64Kb), lz4.ConcurrencyOption(1),
				lz4.CompressionLevelOption(lz4Levels[level])); err != nil {
				return encoder{}, err
			}
		} else {
			lw.Reset(w)
		}
		return encoder{w: lw, release: func() { lw.Reset(nil); p.Put(lw) }}, nil
	case CompressionZstd:
		level := zstd.EncoderLevelFromZstd(target.Level)
		p := &zstdWriters[level]
		zw, _ := p.Get().(*zstd.Encoder)
		if zw == nil {
			var err error
			// One goroutine (the caller's): compression runs inside a
			// decompression slot, which is what bounds it. A 2 MiB window
			// (the reference library's at level 3) and the low-memory
			// mode keep an encoder at 3-7 MiB up to level 9, where the
			// library's 8 MiB default cost 9-21 MiB each.
			if zw, err = zstd.NewWriter(w, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1),
				zstd.WithWindowSize(zstdWindow), zstd.WithLowerEncoderMem(true)); err != nil {
				return encoder{}, err
			}
		} else {
			zw.Reset(w)
		}
		return encoder{w: zw, release: func() { zw.Reset(nil); p.Put(zw) }}, nil
	default:
		return encoder{}, fmt.Errorf("%w: unknown target codec %d", ErrInvalid, target.Codec)
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

var (
	gzipWriters [GzipLevelMax + 2]sync.Pool // index level+1: -1 (default) .. 9
	lz4Writers  [len(lz4Levels)]sync.Pool
	zstdWriters [zstd.SpeedBestCompression + 1]sync.Pool
	// lz4Levels are the library's levels: fast, then its HC levels 1-9.
	lz4Levels     = [...]lz4.CompressionLevel{lz4.Fast, lz4.Level1, lz4.Level2, lz4.Level3, lz4.Level4, lz4.Level5, lz4.Level6, lz4.Level7, lz4.Level8, lz4.Level9}
	snappyWriters = sync.Pool{New: func() any { return &xerialWriter{} }}
)

// lz4Level maps Kafka's compression.lz4.level (1-17, lz4-java's high
// compression levels) to an index of lz4Levels: 1 is the fast
// compressor, 2-9 the same HC level, and 10-17, which the Go library does
// not have, its highest (9).
func lz4Level(kafka int) int {
	switch {
	case kafka <= 1:
		return 0
	case kafka >= 9:
		return 9
	default:
		return kafka
	}
}

// zstdWindow is the history a re-encoding zstd frame uses.
const zstdWindow = 2 << 20

// xerialChunkSize is the uncompressed size of one snappy chunk, as
// Kafka's own snappy output stream writes them.
const xerialChunkSize = 32 << 10

// xerialWriter writes snappy in the xerial framing Kafka's Java clients
// and brokers use (magic, version 1, compatible version 1, then
// length-prefixed blocks), which every client reads; chunking keeps the
// memory per writer at one chunk, unlike a single snappy block.
type xerialWriter struct {
	w       io.Writer
	pending []byte
	scratch []byte
	started bool
}

func (x *xerialWriter) reset(w io.Writer) {
	x.w, x.pending, x.started = w, x.pending[:0], false
}

func (x *xerialWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(xerialChunkSize-len(x.pending), len(p))
		x.pending = append(x.pending, p[:take]...)
		p = p[take:]
		if len(x.pending) == xerialChunkSize {
			if err := x.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (x *xerialWriter) flush() error {
	if !x.started {
		x.started = true
		hdr := append(append([]byte(nil), xerialMagic...), 0, 0, 0, 1, 0, 0, 0, 1)
		if _, err := x.w.Write(hdr); err != nil {
			return err
		}
	}
	if len(x.pending) == 0 {
		return nil
	}
	x.scratch = s2.EncodeSnappy(x.scratch[:cap(x.scratch)], x.pending)
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(x.scratch)))
	if _, err := x.w.Write(l[:]); err != nil {
		return err
	}
	if _, err := x.w.Write(x.scratch); err != nil {
		return err
	}
	x.pending = x.pending[:0]
	return nil
}

func (x *xerialWriter) Close() error { return x.flush() }
