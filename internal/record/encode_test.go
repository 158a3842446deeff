package record

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var allCodecs = []int{CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd}

// mixedRecords are records with what a re-encoding could lose: null and
// empty keys and values, repeated and valueless headers, binary bytes,
// timestamp deltas, and a value larger than one snappy chunk and one lz4
// block.
func mixedRecords() []kmsg.Record {
	var recs []kmsg.Record
	add := func(key, value []byte, tsDelta int64, headers ...kmsg.Header) {
		r := kmsg.NewRecord()
		r.Key, r.Value, r.TimestampDelta64, r.Headers = key, value, tsDelta, headers
		recs = append(recs, r)
	}
	add(nil, []byte("null key"), 0)
	add([]byte{}, []byte{}, 3)
	add([]byte("tombstone"), nil, 7)
	add([]byte{0, 1, 0xff, '\n'}, []byte("binary\x00key"), 9,
		kmsg.Header{Key: "h", Value: []byte("1")}, kmsg.Header{Key: "h", Value: []byte("2")}, kmsg.Header{Key: "empty"})
	add([]byte("big"), []byte(strings.Repeat("compressible but large ", 10000)), 12)
	for i := range 50 {
		add([]byte(fmt.Sprint("k", i)), []byte(strings.Repeat("v", i)), int64(20+i))
	}
	return recs
}

// producerBatch is a batch of recs in codec with the header fields a
// transactional producer sets, so a test sees whether a re-encoding kept
// them.
func producerBatch(codec int, recs []kmsg.Record) []byte {
	b := testenv.RecordsBatch(int16(codec), recs...)
	be := binary.BigEndian
	be.PutUint64(b[offBaseOffset:], 0)
	be.PutUint16(b[offAttributes:], uint16(codec)|AttrTransactional)
	be.PutUint64(b[offFirstTimestamp:], 1_700_000_000_000)
	be.PutUint64(b[offMaxTimestamp:], uint64(1_700_000_000_000+len(recs)+19))
	be.PutUint64(b[offProducerID:], 4242)
	be.PutUint16(b[offProducerEpoch:], 7)
	be.PutUint32(b[offBaseSequence:], 0x7ffffff0) // wraps within the batch
	return testenv.SealBatch(b)
}

// decodeAll returns every record of a validated batch.
func decodeAll(t *testing.T, h Header, b []byte) []Record {
	t.Helper()
	var out []Record
	if err := ForEach(h, b, func(r Record) bool { out = append(out, r); return true }); err != nil {
		t.Fatalf("decoding: %v", err)
	}
	return out
}

// Every codec to every other: the stored batch is in the target codec, its
// records are byte for byte the producer's, and every header field but
// the length, CRC and codec bits is the producer's.
func TestValidateRecodeKeepsEverythingButTheCodec(t *testing.T) {
	recs := mixedRecords()
	for _, from := range allCodecs {
		for _, to := range allCodecs {
			t.Run(fmt.Sprintf("%s-to-%s", name(from), name(to)), func(t *testing.T) {
				in := producerBatch(from, recs)
				inH, err := Validate(in)
				if err != nil {
					t.Fatal(err)
				}
				want := decodeAll(t, inH, in)
				orig := bytes.Clone(in)
				h, out, err := ValidateRecode(context.Background(), in, MaxDecompressedBytes, Target{Codec: to, Level: levelDefault(to)}, 16<<20)
				if err != nil {
					t.Fatal(err)
				}
				defer out.Release()
				if !bytes.Equal(in, orig) {
					t.Fatal("the produced batch was modified")
				}
				if from == to {
					if out != nil {
						t.Fatal("a batch already in the target codec was re-encoded")
					}
					return
				}
				if out == nil {
					t.Fatal("not re-encoded")
				}
				// Independently of what ValidateRecode returned: parse
				// and validate the stored bytes from scratch.
				got, err := Validate(bytes.Clone(out.Bytes))
				if err != nil {
					t.Fatalf("re-encoded batch does not validate: %v", err)
				}
				if got != h {
					t.Fatalf("returned header %+v, stored bytes say %+v", h, got)
				}
				if got.Compression() != to {
					t.Fatalf("stored codec %d, want %d", got.Compression(), to)
				}
				keep := inH
				keep.Length, keep.CRC, keep.Attributes = got.Length, got.CRC, inH.Attributes&^AttrCompressionMask|int16(to)
				if got != keep {
					t.Fatalf("header changed:\n got  %+v\n want %+v", got, keep)
				}
				if !bytes.Equal(out.Bytes[:offBatchLength], in[:offBatchLength]) || !bytes.Equal(out.Bytes[offLeaderEpoch:offCRC], in[offLeaderEpoch:offCRC]) ||
					!bytes.Equal(out.Bytes[offLastOffsetDelta:HeaderSize], in[offLastOffsetDelta:HeaderSize]) {
					t.Fatal("header bytes other than length, CRC and codec changed")
				}
				gotRecs := decodeAll(t, got, out.Bytes)
				if len(gotRecs) != len(want) {
					t.Fatalf("%d records, want %d", len(gotRecs), len(want))
				}
				for i := range want {
					if !sameRecord(gotRecs[i], want[i]) {
						t.Fatalf("record %d differs", i)
					}
				}
			})
		}
	}
}

// sameBytes is bytes.Equal that also tells null from empty.
func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// sameRecord compares every field of two decoded records.
func sameRecord(a, b Record) bool {
	if a.OffsetDelta != b.OffsetDelta || a.TimestampDelta != b.TimestampDelta ||
		!sameBytes(a.Key, b.Key) || !sameBytes(a.Value, b.Value) || len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !sameBytes(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

func name(codec int) string {
	if codec == CompressionNone {
		return "none"
	}
	return codecNames[codec]
}

func levelDefault(codec int) int {
	switch codec {
	case CompressionGzip:
		return GzipLevelDefault
	case CompressionLZ4:
		return LZ4LevelDefault
	case CompressionZstd:
		return ZstdLevelDefault
	}
	return 0
}

// Every level Kafka accepts compresses to a batch that decodes to the same
// records; higher levels are not larger on compressible data.
func TestValidateRecodeLevels(t *testing.T) {
	in := producerBatch(CompressionNone, mixedRecords())
	levels := map[int][]int{
		CompressionGzip: {GzipLevelDefault, GzipLevelMin, 5, GzipLevelMax},
		CompressionLZ4:  {LZ4LevelMin, 2, LZ4LevelDefault, 12, LZ4LevelMax},
		CompressionZstd: {ZstdLevelMin, -1, 1, ZstdLevelDefault, 9, ZstdLevelMax},
	}
	for codec, ls := range levels {
		for _, l := range ls {
			_, out, err := ValidateRecode(context.Background(), in, MaxDecompressedBytes, Target{Codec: codec, Level: l}, 16<<20)
			if err != nil {
				t.Fatalf("%s level %d: %v", name(codec), l, err)
			}
			h, err := Validate(out.Bytes)
			if err != nil || len(decodeAll(t, h, out.Bytes)) != len(mixedRecords()) {
				t.Fatalf("%s level %d: %v", name(codec), l, err)
			}
			out.Release()
		}
	}
}

// Control batches (transaction markers) are never compressed, whatever
// the target.
func TestValidateRecodeLeavesControlBatches(t *testing.T) {
	r := kmsg.NewRecord()
	r.Key = []byte{0, 0, 0, 1} // version 0, COMMIT
	r.Value = []byte{0, 0, 0, 0, 0, 0}
	b := producerBatch(CompressionNone, []kmsg.Record{r})
	binary.BigEndian.PutUint16(b[offAttributes:], AttrTransactional|AttrControl)
	testenv.SealBatch(b)
	_, out, err := ValidateRecode(context.Background(), b, MaxDecompressedBytes, Target{Codec: CompressionZstd, Level: 3}, 1<<20)
	if err != nil || out != nil {
		t.Fatalf("control batch: re-encoded=%v err=%v, want stored as sent", out != nil, err)
	}
}

// The re-encoding keeps both bounds: the records decoded stop at the
// decompression limit, and the output stops at the batch limit.
func TestValidateRecodeBounds(t *testing.T) {
	ctx := context.Background()
	for name, codec := range testenv.Codecs {
		bomb := testenv.Bomb(codec, 16<<20)
		if _, out, err := ValidateRecode(ctx, bomb, 1<<20, Target{Codec: CompressionZstd, Level: 3}, 1<<20); !errors.Is(err, ErrTooLarge) || out != nil {
			t.Errorf("%s bomb re-encoded to zstd: %v", name, err)
		}
		// 512 KiB of zeros compress to little; stored uncompressed they
		// pass a 64 KiB max.message.bytes.
		zeros := testenv.CompressedBatch(codec, make([]byte, 512<<10))
		if _, _, err := ValidateRecode(ctx, zeros, 8<<20, Target{Codec: CompressionNone}, 64<<10); !errors.Is(err, ErrRecodedTooLarge) {
			t.Errorf("%s: 512 KiB stored uncompressed under a 64 KiB limit: %v, want ErrTooLarge", name, err)
		}
	}
	// Every codec's output is bounded: random bytes do not compress, so
	// 256 KiB of them pass a 64 KiB batch limit in any codec, and the
	// writer refuses the byte that would pass it.
	random := make([]byte, 256<<10)
	seed := uint64(7)
	for i := 0; i < len(random); i += 8 {
		seed = seed*6364136223846793005 + 1442695040888963407
		binary.LittleEndian.PutUint64(random[i:], seed)
	}
	for _, to := range allCodecs[1:] {
		in := testenv.CompressedBatch(0, random)
		if _, out, err := ValidateRecode(ctx, in, 8<<20, Target{Codec: to, Level: levelDefault(to)}, 64<<10); !errors.Is(err, ErrRecodedTooLarge) || out != nil {
			t.Errorf("256 KiB of random bytes to %s under a 64 KiB limit: %v, want ErrRecodedTooLarge", name(to), err)
		}
	}
	// Uncompressed records count against the decompression limit too.
	plain := testenv.CompressedBatch(0, make([]byte, 2<<20))
	if _, _, err := ValidateRecode(ctx, plain, 1<<20, Target{Codec: CompressionZstd, Level: 3}, 4<<20); !errors.Is(err, ErrTooLarge) {
		t.Errorf("2 MiB of uncompressed records under a 1 MiB limit: %v", err)
	}
}

// A batch that fails validation is refused the same way whether or not it
// is to be re-encoded.
func TestValidateRecodeRejectsLikeValidate(t *testing.T) {
	good := producerBatch(CompressionGzip, mixedRecords())
	bad := bytes.Clone(good)
	binary.BigEndian.PutUint32(bad[offRecordCount:], uint32(len(mixedRecords())+1))
	binary.BigEndian.PutUint32(bad[offLastOffsetDelta:], uint32(len(mixedRecords())))
	testenv.SealBatch(bad)
	_, errV := Validate(bad)
	_, out, errR := ValidateRecode(context.Background(), bad, MaxDecompressedBytes, Target{Codec: CompressionZstd, Level: 3}, 16<<20)
	if errV == nil || errR == nil || out != nil {
		t.Fatalf("record count past the records: Validate %v, ValidateRecode %v", errV, errR)
	}
	if !errors.Is(errR, ErrInvalid) {
		t.Fatalf("ValidateRecode: %v, want ErrInvalid", errR)
	}
}

// FuzzRecode: arbitrary bytes as a produced batch, re-encoded to a codec,
// never panic; what is accepted validates again, keeps the header and
// decodes to the same records.
func FuzzRecode(f *testing.F) {
	for _, c := range allCodecs {
		f.Add(producerBatch(c, mixedRecords()[:6]), uint8(CompressionZstd))
		f.Add(testenv.CompressedBatch(int16(c), []byte("a"), []byte("bb")), uint8(c+1)%5)
	}
	f.Fuzz(func(t *testing.T, b []byte, to uint8) {
		target := Target{Codec: int(to % 5), Level: levelDefault(int(to % 5))}
		h, out, err := ValidateRecode(context.Background(), b, 1<<20, target, 2<<20)
		if err != nil {
			return
		}
		defer out.Release()
		inH, _ := Parse(b)
		want := decodeAll(t, inH, b)
		if out == nil {
			if h != inH {
				t.Fatal("a batch stored as sent got another header")
			}
			return
		}
		got, err := Validate(out.Bytes)
		if err != nil {
			t.Fatalf("accepted batch re-encodes to an invalid one: %v", err)
		}
		gotRecs := decodeAll(t, got, out.Bytes)
		if len(gotRecs) != len(want) {
			t.Fatalf("%d records, want %d", len(gotRecs), len(want))
		}
		for i := range want {
			if !sameRecord(gotRecs[i], want[i]) {
				t.Fatalf("record %d differs", i)
			}
		}
	})
}

// BenchmarkRecode measures the re-encoding of a produce-sized batch (1000
// records of 1 KiB, half random, half repeated text) into zstd level 3,
// the cost a topic with compression.type=zstd adds to each append.
func BenchmarkRecode(b *testing.B) {
	var recs []kmsg.Record
	seed := uint64(1)
	for i := range 1000 {
		r := kmsg.NewRecord()
		r.Key = []byte(fmt.Sprint("key-", i))
		v := make([]byte, 1024)
		for j := 0; j < 512; j += 8 {
			seed = seed*6364136223846793005 + 1442695040888963407
			binary.LittleEndian.PutUint64(v[j:], seed)
		}
		copy(v[512:], strings.Repeat("payload text ", 40))
		r.Value = v
		recs = append(recs, r)
	}
	for _, from := range []int{CompressionNone, CompressionGzip, CompressionLZ4} {
		for _, to := range []int{CompressionZstd, CompressionLZ4} {
			if from == to {
				continue
			}
			in := producerBatch(from, recs)
			h, _ := Validate(in)
			b.Run(fmt.Sprintf("%s-to-%s", name(from), name(to)), func(b *testing.B) {
				b.SetBytes(int64(len(decodeAllB(b, h, in))))
				b.ReportAllocs()
				for b.Loop() {
					_, out, err := ValidateRecode(context.Background(), in, MaxDecompressedBytes, Target{Codec: to, Level: levelDefault(to)}, 16<<20)
					if err != nil {
						b.Fatal(err)
					}
					out.Release()
				}
			})
		}
	}
	in := producerBatch(CompressionNone, recs)
	b.Run("none-validate-only", func(b *testing.B) {
		b.SetBytes(int64(len(in)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ValidateLimit(context.Background(), in, MaxDecompressedBytes); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// decodeAllB returns the keys and values of a batch's records: the payload
// a re-encoding compresses, less the few bytes of framing per record.
func decodeAllB(b *testing.B, h Header, batch []byte) []byte {
	var raw []byte
	if err := ForEach(h, batch, func(r Record) bool {
		raw = append(raw, r.Key...)
		raw = append(raw, r.Value...)
		return true
	}); err != nil {
		b.Fatal(err)
	}
	return raw
}
