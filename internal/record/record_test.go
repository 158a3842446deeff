package record

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// buildBatch encodes n records with kmsg, compressed with codec (none or
// zstd), the way a producer would.
func buildBatch(t testing.TB, n int, codec int16) []byte {
	var recs []byte
	for i := 0; i < n; i++ {
		r := kmsg.NewRecord()
		r.OffsetDelta = int32(i)
		r.TimestampDelta64 = int64(i)
		r.Key = []byte("k")
		r.Value = bytes.Repeat([]byte{'v'}, 10+i)
		r.Headers = []kmsg.Header{{Key: "h", Value: []byte("x")}}
		body := r.AppendTo(nil)[1:] // encoded with Length 0: one varint byte
		recs = binary.AppendVarint(recs, int64(len(body)))
		recs = append(recs, body...)
	}
	if codec == CompressionZstd {
		enc, _ := zstd.NewWriter(nil)
		recs = enc.EncodeAll(recs, nil)
	}
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.Attributes = codec
	b.LastOffsetDelta = int32(n - 1)
	b.FirstTimestamp = 1000
	b.MaxTimestamp = 1000 + int64(n-1)
	b.ProducerID = -1
	b.ProducerEpoch = -1
	b.FirstSequence = -1
	b.NumRecords = int32(n)
	b.Records = recs
	raw := b.AppendTo(nil)
	// AppendTo writes Length and CRC from the struct; fix both.
	raw[8], raw[9], raw[10], raw[11] = byte((len(raw)-12)>>24), byte((len(raw)-12)>>16), byte((len(raw)-12)>>8), byte(len(raw)-12)
	crc := crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli))
	raw[17], raw[18], raw[19], raw[20] = byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc)
	return raw
}

func TestValidateAcceptsProducerBatches(t *testing.T) {
	for _, codec := range []int16{CompressionNone, CompressionZstd} {
		raw := buildBatch(t, 5, codec)
		h, err := Validate(raw)
		if err != nil {
			t.Fatalf("codec %d: %v", codec, err)
		}
		if h.NumRecords != 5 || h.LastOffsetDelta != 4 || h.Size() != len(raw) {
			t.Fatalf("header %+v", h)
		}
		var seen int
		if err := ForEach(h, raw, func(r Record) bool {
			if string(r.Key) != "k" || len(r.Value) != 10+seen || r.Headers[0].Key != "h" {
				t.Fatalf("record %d: %+v", seen, r)
			}
			seen++
			return true
		}); err != nil || seen != 5 {
			t.Fatalf("ForEach: %v, %d records", err, seen)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	good := buildBatch(t, 3, CompressionNone)
	cases := map[string]struct {
		mutate func([]byte) []byte
		want   error
	}{
		"flipped payload bit": {func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, ErrCorrupt},
		"truncated":           {func(b []byte) []byte { return b[:len(b)-3] }, ErrShort},
		"magic 1":             {func(b []byte) []byte { b[16] = 1; return b }, ErrMagic},
		"two batches":         {func(b []byte) []byte { return append(b, b...) }, ErrInvalid},
		"short header":        {func(b []byte) []byte { return b[:30] }, ErrShort},
	}
	for name, c := range cases {
		b := c.mutate(append([]byte(nil), good...))
		if _, err := Validate(b); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", name, err, c.want)
		}
	}
}

func TestValidateRejectsCountMismatch(t *testing.T) {
	raw := buildBatch(t, 3, CompressionNone)
	raw[60] = 4 // record count 4, last offset delta 2
	fixCRC(raw)
	if _, err := Validate(raw); !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v", err)
	}
}

func fixCRC(raw []byte) {
	crc := crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli))
	raw[17], raw[18], raw[19], raw[20] = byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc)
}

func TestStampingKeepsCRC(t *testing.T) {
	raw := buildBatch(t, 2, CompressionNone)
	SetBaseOffset(raw, 12345)
	SetLeaderEpoch(raw, 7)
	h, err := Parse(raw)
	if err != nil || h.BaseOffset != 12345 || h.LeaderEpoch != 7 {
		t.Fatalf("%+v %v", h, err)
	}
	SetLogAppendTime(raw, 99)
	if h, err = Parse(raw); err != nil || h.MaxTimestamp != 99 || h.Attributes&AttrLogAppendTime == 0 {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestAddSequenceWraps(t *testing.T) {
	if got := AddSequence(0x7fffffff, 1); got != 0 {
		t.Fatalf("got %d", got)
	}
	if got := AddSequence(5, 3); got != 8 {
		t.Fatalf("got %d", got)
	}
}

// FuzzValidate: arbitrary bytes as a produced batch never panic, and what
// validates also walks cleanly.
func FuzzValidate(f *testing.F) {
	f.Add(buildBatch(f, 1, CompressionNone))
	f.Add(buildBatch(f, 4, CompressionNone))
	f.Add(buildBatch(f, 3, CompressionZstd))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Validate(b)
		if err != nil {
			return
		}
		n := 0
		if err := ForEach(h, b, func(Record) bool { n++; return true }); err != nil || n != int(h.NumRecords) {
			t.Fatalf("validated batch walks with %v after %d records", err, n)
		}
	})
}
