package log

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// testBatch builds a valid uncompressed v2 record batch of n records whose
// values are valSize bytes derived from seed, all with timestamp ts.
func testBatch(n, valSize int, ts int64, seed byte) []byte {
	var records []byte
	for i := 0; i < n; i++ {
		val := make([]byte, valSize)
		for j := range val {
			val[j] = seed + byte(i*7+j)
		}
		r := kmsg.Record{OffsetDelta: int32(i), Value: val}
		body := r.AppendTo(nil)[1:] // encoded with Length 0, a one-byte varint
		r.Length = int32(len(body))
		records = r.AppendTo(records)
	}
	b := kmsg.RecordBatch{
		Length:               int32(49 + len(records)),
		PartitionLeaderEpoch: -1,
		Magic:                2,
		LastOffsetDelta:      int32(n - 1),
		FirstTimestamp:       ts,
		MaxTimestamp:         ts,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(n),
		Records:              records,
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

func TestTestBatchIsValid(t *testing.T) {
	b := testBatch(3, 10, 1234, 1)
	h, err := record.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.Size() != len(b) || h.LastOffsetDelta != 2 || h.NumRecords != 3 || h.MaxTimestamp != 1234 {
		t.Fatalf("%+v", h)
	}
}

// appended is what a test appended: batches by base offset, stamped.
type appended struct {
	bases   []int64
	batches [][]byte
}

// baseAt is the base offset of the batch holding byte pos of the segment
// whose batches are those based in [from, to).
func (a *appended) baseAt(from, to, pos int64) int64 {
	at := int64(0)
	for i, b := range a.batches {
		if a.bases[i] < from || a.bases[i] >= to {
			continue
		}
		if at+int64(len(b)) > pos {
			return a.bases[i]
		}
		at += int64(len(b))
	}
	return -1
}

func (a *appended) add(base int64, b []byte) {
	a.bases = append(a.bases, base)
	a.batches = append(a.batches, bytes.Clone(b))
}

// upTo returns the concatenation of the batches with base offset in
// [from, to).
func (a *appended) between(from, to int64) []byte {
	var out []byte
	for i, base := range a.bases {
		if base >= from && base < to {
			out = append(out, a.batches[i]...)
		}
	}
	return out
}

// forEachFS runs f against a real directory and against MemFS.
func forEachFS(t *testing.T, f func(t *testing.T, fsys vfs.FS, dir string)) {
	t.Run("os", func(t *testing.T) { f(t, vfs.OS(), filepath.Join(t.TempDir(), "topic-0")) })
	t.Run("mem", func(t *testing.T) { f(t, vfs.NewMem(), "/data/topic-0") })
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func mustOpen(t testing.TB, fsys vfs.FS, dir string, cfg Config) *Log {
	t.Helper()
	l, err := Open(fsys, dir, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustAppend(t testing.TB, l *Log, b []byte) int64 {
	t.Helper()
	off, err := l.Append(b)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// readBatches reads from offset to the end of the log in reads of maxBytes
// and returns every batch read.
func readBatches(t testing.TB, l *Log, from int64, maxBytes int) [][]byte {
	t.Helper()
	var out [][]byte
	for off := from; off < l.NextOffset(); {
		b, err := l.Read(off, maxBytes, l.NextOffset())
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if len(b) == 0 {
			t.Fatalf("empty read at %d below end %d", off, l.NextOffset())
		}
		if _, err := record.Split(b, func(h record.Header, batch []byte) error {
			out = append(out, batch)
			off = h.LastOffset() + 1
			return nil
		}); err != nil {
			t.Fatalf("read at %d returned bad batches: %v", off, err)
		}
	}
	return out
}

type splitBatch struct{ base, last int64 }

// splitBatches returns the offsets of the batches in b.
func splitBatches(t testing.TB, b []byte) []splitBatch {
	t.Helper()
	var out []splitBatch
	if _, err := record.Split(b, func(h record.Header, _ []byte) error {
		out = append(out, splitBatch{h.BaseOffset, h.LastOffset()})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
