package testenv

import (
	"bytes"
	"encoding/binary"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Codecs are the compression codecs of a batch's attributes, by name.
var Codecs = map[string]int16{"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

// CompressedBatch is a RecordBatch v2 of one record per value with its
// records section compressed by codec (see Codecs), as a
// non-idempotent producer sends it.
func CompressedBatch(codec int16, values ...[]byte) []byte {
	recs := make([]kmsg.Record, len(values))
	for i, v := range values {
		recs[i] = kmsg.NewRecord()
		recs[i].Value = v
	}
	return RecordsBatch(codec, recs...)
}

// RecordsBatch is a RecordBatch v2 of recs (keys, headers and timestamp
// deltas as given; offset deltas are set in order) with its records
// section compressed by codec (0 for none), as a non-idempotent producer
// sends it.
func RecordsBatch(codec int16, recs ...kmsg.Record) []byte {
	var raw []byte
	for i, rec := range recs {
		rec.OffsetDelta = int32(i)
		body := rec.AppendTo(nil)[1:]
		raw = binary.AppendVarint(raw, int64(len(body)))
		raw = append(raw, body...)
	}
	return sealCompressed(codec, len(recs), compress(codec, raw))
}

// Bomb is a decompression bomb: a batch of one record whose value is size
// zero bytes. Its records section is the record's prefix followed by
// copies of one compressed chunk of zeros (gzip members, zstd and lz4
// frames, xerial snappy chunks: every decoder reads them as one stream),
// so building a bomb of any size costs compressing 1 MiB.
func Bomb(codec int16, size int) []byte {
	const chunk = 256 << 10
	// The record written by hand so the value is never materialized:
	// attributes, timestamp delta 0, offset delta 0, null key, the value's
	// length; then size zero bytes and a header count of 0 (one more zero).
	body := []byte{0}
	body = binary.AppendVarint(body, 0)
	body = binary.AppendVarint(body, 0)
	body = binary.AppendVarint(body, -1)
	body = binary.AppendVarint(body, int64(size))
	prefix := binary.AppendVarint(nil, int64(len(body)+size+1))
	prefix = append(prefix, body...)
	zeros := size + 1
	if codec == 2 { // xerial framing: magic, version, compatible version, then chunks
		out := append([]byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}, 0, 0, 0, 1, 0, 0, 0, 1)
		out = xerialChunk(out, s2.EncodeSnappy(nil, prefix))
		block := s2.EncodeSnappy(nil, make([]byte, chunk))
		for ; zeros >= chunk; zeros -= chunk {
			out = xerialChunk(out, block)
		}
		return sealCompressed(codec, 1, xerialChunk(out, s2.EncodeSnappy(nil, make([]byte, zeros))))
	}
	out := compress(codec, prefix)
	full := compress(codec, make([]byte, chunk))
	for ; zeros >= chunk; zeros -= chunk {
		out = append(out, full...)
	}
	if zeros > 0 {
		out = append(out, compress(codec, make([]byte, zeros))...)
	}
	return sealCompressed(codec, 1, out)
}

// xerialChunk appends one length-prefixed snappy block.
func xerialChunk(out, block []byte) []byte {
	out = binary.BigEndian.AppendUint32(out, uint32(len(block)))
	return append(out, block...)
}

func sealCompressed(codec int16, n int, records []byte) []byte {
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.Attributes = codec
	b.FirstTimestamp = time.Now().UnixMilli()
	b.MaxTimestamp = b.FirstTimestamp
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = -1, -1, -1
	b.NumRecords = int32(n)
	b.LastOffsetDelta = int32(n - 1)
	b.Records = records
	return SealBatch(b.AppendTo(nil))
}

func compress(codec int16, src []byte) []byte {
	var buf bytes.Buffer
	switch codec {
	case 1:
		w := gzip.NewWriter(&buf)
		w.Write(src)
		w.Close()
	case 2:
		return s2.EncodeSnappyBest(nil, src)
	case 3:
		w := lz4.NewWriter(&buf)
		w.Write(src)
		w.Close()
	case 4:
		enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithWindowSize(1<<20))
		return enc.EncodeAll(src, nil)
	default:
		return src
	}
	return buf.Bytes()
}
