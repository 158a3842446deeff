package log

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

func smallConfig() Config {
	cfg := DefaultConfig()
	cfg.SegmentBytes = 4096
	cfg.IndexIntervalBytes = 256
	return cfg
}

func TestAppendReadAcrossRolls(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		l := mustOpen(t, fsys, dir, smallConfig())
		var want appended
		for i := 0; i < 300; i++ {
			b := testBatch(1+i%5, 10+(i*37)%300, int64(1000+i), byte(i))
			off := mustAppend(t, l, b)
			if off != l.NextOffset()-int64(1+i%5) {
				t.Fatalf("append %d: base %d, next %d", i, off, l.NextOffset())
			}
			want.add(off, b)
		}
		if got := len(l.Segments()); got < 10 {
			t.Fatalf("only %d segments", got)
		}
		for _, s := range l.Segments() {
			if s.Size > 4096 {
				t.Fatalf("segment %d is %d bytes", s.BaseOffset, s.Size)
			}
		}
		check := func(l *Log) {
			t.Helper()
			all := want.between(0, l.NextOffset())
			if got, _ := l.Read(0, 1<<30, l.NextOffset()); !bytes.Equal(got, all) {
				t.Fatalf("full read: %d bytes, want %d", len(got), len(all))
			}
			for _, max := range []int{1, 500, 5000} {
				got := bytes.Join(readBatches(t, l, 0, max), nil)
				if !bytes.Equal(got, all) {
					t.Fatalf("reads of %d bytes differ", max)
				}
			}
			// Every offset reads back the batch that contains it first.
			for i, base := range want.bases {
				h, _ := record.ParseHeader(want.batches[i])
				for _, off := range []int64{base, h.LastOffset()} {
					got, err := l.Read(off, 1, l.NextOffset())
					if err != nil || !bytes.Equal(got, want.batches[i]) {
						t.Fatalf("read %d: %v, got %d bytes", off, err, len(got))
					}
				}
			}
		}
		check(l)
		n := l.NextOffset()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l = mustOpen(t, fsys, dir, smallConfig())
		defer l.Close()
		if l.NextOffset() != n || l.DurableOffset() != n || l.StartOffset() != 0 {
			t.Fatalf("reopened: next %d durable %d start %d, want %d", l.NextOffset(), l.DurableOffset(), l.StartOffset(), n)
		}
		// Closed segments came from their index files, not a scan.
		for _, s := range l.segs[:len(l.segs)-1] {
			if s.scanned {
				t.Fatalf("segment %d was scanned", s.base)
			}
		}
		check(l)
		b := testBatch(2, 10, 5000, 9)
		if off := mustAppend(t, l, b); off != n {
			t.Fatalf("append after reopen at %d, want %d", off, n)
		}
		want.add(n, b)
		check(l)
	})
}

func TestReadSemantics(t *testing.T) {
	l := mustOpen(t, vfs.NewMem(), "/p", smallConfig())
	defer l.Close()
	var want appended
	// Batches of 3 records, ~1 KiB each: 3 per 4 KiB segment.
	for i := 0; i < 10; i++ {
		b := testBatch(3, 300, int64(i), byte(i))
		want.add(mustAppend(t, l, b), b)
	}
	size := len(want.batches[0])
	end := l.NextOffset()
	if end != 30 {
		t.Fatal(end)
	}
	cases := []struct {
		name      string
		offset    int64
		maxBytes  int
		maxOffset int64
		from, to  int64 // expected base offsets [from, to)
		wantErr   error
	}{
		{"whole log", 0, 1 << 20, end, 0, 30, nil},
		{"KIP-74 first batch larger than maxBytes", 4, 10, end, 3, 6, nil},
		{"zero maxBytes", 4, 0, end, 3, 6, nil},
		{"exact fit of two batches", 3, 2 * size, end, 3, 9, nil},
		{"one byte short of two batches", 3, 2*size - 1, end, 3, 6, nil},
		{"crosses segments", 6, 5 * size, end, 6, 21, nil},
		{"maxOffset stops before batch base", 0, 1 << 20, 9, 0, 9, nil},
		{"maxOffset mid batch keeps the batch", 0, 1 << 20, 10, 0, 12, nil},
		{"maxOffset at offset", 9, 1 << 20, 9, 0, 0, nil},
		{"end of log", 30, 100, end, 0, 0, nil},
		{"beyond end", 31, 100, end, 0, 0, ErrOffsetOutOfRange},
		{"negative", -1, 100, end, 0, 0, ErrOffsetOutOfRange},
	}
	for _, c := range cases {
		got, err := l.Read(c.offset, c.maxBytes, c.maxOffset)
		if !errors.Is(err, c.wantErr) {
			t.Fatalf("%s: err %v", c.name, err)
		}
		if w := want.between(c.from, c.to); !bytes.Equal(got, w) {
			t.Fatalf("%s: got %d bytes, want %d", c.name, len(got), len(w))
		}
	}
	if err := l.DeleteRecordsBefore(10); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Read(9, 100, end); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatal("read below start:", err)
	}
	// The batch holding the start offset is returned whole.
	if got, _ := l.Read(10, 1, end); !bytes.Equal(got, want.between(9, 12)) {
		t.Fatal("read at start offset")
	}
}

func TestReadBatchAtTime(t *testing.T) {
	l := mustOpen(t, vfs.NewMem(), "/p", smallConfig())
	defer l.Close()
	var want appended
	// Timestamps 100, 110, ... with a regression at i == 20.
	ts := func(i int) int64 {
		if i == 20 {
			return 5
		}
		return int64(100 + 10*i)
	}
	for i := 0; i < 60; i++ {
		b := testBatch(2, 100, ts(i), byte(i))
		want.add(mustAppend(t, l, b), b)
	}
	for _, c := range []struct {
		ts   int64
		want int // index of the expected batch, -1 for none
	}{
		{0, 0}, {100, 0}, {101, 1}, {290, 19}, {291, 21}, {300, 21}, {690, 59}, {691, -1},
	} {
		got, err := l.ReadBatchAtTime(c.ts)
		if err != nil {
			t.Fatal(err)
		}
		if c.want < 0 {
			if got != nil {
				t.Fatalf("ts %d: got a batch", c.ts)
			}
			continue
		}
		if !bytes.Equal(got, want.batches[c.want]) {
			h, _ := record.ParseHeader(got)
			t.Fatalf("ts %d: got batch at %d, want %d", c.ts, h.BaseOffset, want.bases[c.want])
		}
	}
	// Batches below the start offset are skipped.
	if err := l.DeleteRecordsBefore(want.bases[30]); err != nil {
		t.Fatal(err)
	}
	if got, _ := l.ReadBatchAtTime(0); !bytes.Equal(got, want.batches[30]) {
		t.Fatal("time lookup returned a batch below the start offset")
	}
}

func TestAppendRejectsMalformed(t *testing.T) {
	l := mustOpen(t, vfs.NewMem(), "/p", DefaultConfig())
	defer l.Close()
	b := testBatch(1, 10, 0, 0)
	if _, err := l.Append(b[:len(b)-1]); !errors.Is(err, record.ErrInvalid) {
		t.Fatal(err)
	}
	if _, err := l.Append(b[:20]); err == nil {
		t.Fatal("short batch accepted")
	}
	if l.NextOffset() != 0 || l.Err() != nil {
		t.Fatal("malformed batch changed the log")
	}
}

func TestRollByTime(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SegmentMs = 1000
	l := mustOpen(t, vfs.NewMem(), "/p", cfg)
	defer l.Close()
	now := time.UnixMilli(1_000_000)
	l.now = func() time.Time { return now }
	mustAppend(t, l, testBatch(1, 10, 0, 0))
	now = now.Add(999 * time.Millisecond)
	mustAppend(t, l, testBatch(1, 10, 0, 0))
	if n := len(l.Segments()); n != 1 {
		t.Fatal("rolled early:", n)
	}
	now = now.Add(time.Millisecond)
	mustAppend(t, l, testBatch(1, 10, 0, 0))
	if segs := l.Segments(); len(segs) != 2 || segs[1].BaseOffset != 2 {
		t.Fatalf("no time roll: %+v", segs)
	}
	// The new segment's clock starts at its first append.
	now = now.Add(999 * time.Millisecond)
	mustAppend(t, l, testBatch(1, 10, 0, 0))
	if n := len(l.Segments()); n != 2 {
		t.Fatal("rolled early:", n)
	}
}

func TestInvalidIndexRebuilt(t *testing.T) {
	fsys := vfs.NewMem()
	l := mustOpen(t, fsys, "/p", smallConfig())
	var want appended
	for i := 0; i < 40; i++ {
		b := testBatch(2, 200, int64(i), byte(i))
		want.add(mustAppend(t, l, b), b)
	}
	segs := l.Segments()
	l.Close()
	// Damage one index, delete another's time index.
	f, _ := fsys.OpenFile(filepath.Join("/p", segmentName(segs[0].BaseOffset, indexSuffix)), 2, 0)
	f.Truncate(40)
	f.Close()
	fsys.Remove(filepath.Join("/p", segmentName(segs[1].BaseOffset, timeIndexSuffix)))
	l = mustOpen(t, fsys, "/p", smallConfig())
	defer l.Close()
	if !l.segs[0].scanned || !l.segs[1].scanned || l.segs[2].scanned {
		t.Fatal("wrong segments rebuilt")
	}
	if got := bytes.Join(readBatches(t, l, 0, 300), nil); !bytes.Equal(got, want.between(0, 1<<62)) {
		t.Fatal("contents differ after index rebuild")
	}
	if got, _ := l.ReadBatchAtTime(7); !bytes.Equal(got, want.batches[7]) {
		t.Fatal("time index rebuilt wrong")
	}
}

func TestIndexRoundTrip(t *testing.T) {
	idx := []offsetEntry{{3, 100}, {7, 300}}
	tidx := []timeEntry{{5, 0}, {9, 7}}
	got, next, err := decodeOffsetIndex(encodeOffsetIndex(400, 110, idx), 100, 400)
	if err != nil || next != 110 || len(got) != 2 || got[1] != idx[1] {
		t.Fatal(got, next, err)
	}
	tgot, maxTs, err := decodeTimeIndex(encodeTimeIndex(400, 12, tidx), 100, 110, 400)
	if err != nil || maxTs != 12 || len(tgot) != 2 || tgot[1] != tidx[1] {
		t.Fatal(tgot, maxTs, err)
	}
	if _, _, err := decodeOffsetIndex(encodeOffsetIndex(400, 110, idx), 100, 401); err == nil {
		t.Fatal("index for another log size accepted")
	}
	b := encodeOffsetIndex(400, 110, idx)
	b[len(b)-1] ^= 1
	if _, _, err := decodeOffsetIndex(b, 100, 400); err == nil {
		t.Fatal("corrupt index accepted")
	}
}

func TestDiscardLog(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		l := mustOpen(t, fsys, dir, DefaultConfig())
		mustAppend(t, l, testBatch(1, 10, 0, 0))
		l.Discard()
		if _, err := l.Append(testBatch(1, 10, 0, 0)); !errors.Is(err, ErrClosed) {
			t.Fatal(err)
		}
		if _, err := l.Read(0, 10, 1); !errors.Is(err, ErrClosed) {
			t.Fatal(err)
		}
	})
}
