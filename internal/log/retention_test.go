package log

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/vfs"
)

// segmented appends batches of about 1 KiB with timestamps ts(i) into a log
// of 4 KiB segments (three batches each).
func segmented(t *testing.T, fsys vfs.FS, dir string, n int, ts func(i int) int64) (*Log, *appended) {
	t.Helper()
	cfg := smallConfig()
	cfg.RetentionMs = -1
	l := mustOpen(t, fsys, dir, cfg)
	var want appended
	for i := 0; i < n; i++ {
		b := testBatch(2, 500, ts(i), byte(i))
		want.add(mustAppend(t, l, b), b)
	}
	return l, &want
}

func TestRetentionByTime(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		l, want := segmented(t, fsys, dir, 30, func(i int) int64 { return int64(1000 * i) })
		defer l.Close()
		segs := l.Segments()
		if len(segs) != 10 {
			t.Fatal(len(segs))
		}
		cfg := l.Config()
		cfg.RetentionMs = 10_000
		l.SetConfig(cfg)
		// Segment k holds timestamps 3000k..3000k+2000. At now=16000 the
		// segments with largest timestamp < 6000 go: k = 0, 1.
		n, err := l.ApplyRetention(time.UnixMilli(16_000))
		if err != nil || n != 2 {
			t.Fatal(n, err)
		}
		if l.StartOffset() != segs[2].BaseOffset || l.Segments()[0].BaseOffset != segs[2].BaseOffset {
			t.Fatal(l.StartOffset())
		}
		if _, err := fsys.Stat(dir + "/" + segmentName(0, logSuffix)); err == nil {
			t.Fatal("segment file not removed")
		}
		if _, err := l.Read(0, 100, l.NextOffset()); !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatal(err)
		}
		// Far in the future everything but the active segment goes.
		n, err = l.ApplyRetention(time.UnixMilli(1 << 50))
		if err != nil || n != 7 || len(l.Segments()) != 1 {
			t.Fatal(n, err, len(l.Segments()))
		}
		if got := bytes.Join(readBatches(t, l, l.StartOffset(), 1000), nil); !bytes.Equal(got, want.between(segs[9].BaseOffset, 1<<62)) {
			t.Fatal("active segment contents")
		}
	})
}

// TestRetentionStopsAtFirstKept checks that retention deletes a prefix: a
// segment with a future timestamp protects the later ones.
func TestRetentionStopsAtFirstKept(t *testing.T) {
	l, _ := segmented(t, vfs.NewMem(), "/p", 30, func(i int) int64 {
		if i == 10 { // in segment 3
			return 1 << 40
		}
		return int64(i)
	})
	defer l.Close()
	cfg := l.Config()
	cfg.RetentionMs = 1000
	l.SetConfig(cfg)
	if n, err := l.ApplyRetention(time.UnixMilli(100_000)); err != nil || n != 3 {
		t.Fatal(n, err)
	}
}

func TestRetentionBySize(t *testing.T) {
	l, _ := segmented(t, vfs.NewMem(), "/p", 30, func(i int) int64 { return int64(i) })
	defer l.Close()
	segs := l.Segments()
	segSize := segs[0].Size
	cfg := l.Config()
	cfg.RetentionBytes = 4*segSize + 1 // keeps 5 segments: 4 would be too few
	l.SetConfig(cfg)
	n, err := l.ApplyRetention(time.Now())
	if err != nil || n != 5 {
		t.Fatal(n, err)
	}
	if l.Size() < cfg.RetentionBytes {
		t.Fatal("deleted below retention.bytes")
	}
	cfg.RetentionBytes = 0
	l.SetConfig(cfg)
	if n, _ := l.ApplyRetention(time.Now()); n != 4 || len(l.Segments()) != 1 {
		t.Fatal("active segment must stay", n)
	}
	if l.StartOffset() != segs[9].BaseOffset {
		t.Fatal(l.StartOffset())
	}
}

func TestDeleteRecordsBeforePersists(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		l, want := segmented(t, fsys, dir, 30, func(i int) int64 { return int64(i) })
		segs := l.Segments()
		to := segs[4].BaseOffset + 3 // inside segment 4
		if err := l.DeleteRecordsBefore(to); err != nil {
			t.Fatal(err)
		}
		if err := l.DeleteRecordsBefore(to - 1); err != nil || l.StartOffset() != to {
			t.Fatal("lowering the start offset:", err, l.StartOffset())
		}
		if err := l.DeleteRecordsBefore(l.NextOffset() + 1); !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatal(err)
		}
		if l.StartOffset() != to || l.Segments()[0].BaseOffset != segs[4].BaseOffset {
			t.Fatal(l.StartOffset(), l.Segments()[0])
		}
		l.Close()
		l = mustOpen(t, fsys, dir, smallConfig())
		defer l.Close()
		if l.StartOffset() != to {
			t.Fatalf("start offset %d after reopen, want %d", l.StartOffset(), to)
		}
		if _, err := l.Read(to-1, 100, l.NextOffset()); !errors.Is(err, ErrOffsetOutOfRange) {
			t.Fatal(err)
		}
		got := bytes.Join(readBatches(t, l, to, 1000), nil)
		if !bytes.Equal(got, want.between(segs[4].BaseOffset+2, 1<<62)) {
			t.Fatal("contents")
		}
		// Deleting everything keeps the active segment.
		if err := l.DeleteRecordsBefore(l.NextOffset()); err != nil {
			t.Fatal(err)
		}
		if len(l.Segments()) != 1 {
			t.Fatal(l.Segments())
		}
		if got, err := l.Read(l.NextOffset(), 100, l.NextOffset()); err != nil || got != nil {
			t.Fatal(got, err)
		}
	})
}

// TestReadDuringRetention races reads of the oldest segments with retention
// deleting them: reads either succeed with correct bytes or report the
// offset out of range.
func TestReadDuringRetention(t *testing.T) {
	for round := 0; round < 20; round++ {
		l, want := segmented(t, vfs.NewMem(), "/p", 60, func(i int) int64 { return int64(i) })
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 50; i++ {
					off := int64((g*50 + i) % 40)
					got, err := l.Read(off, 3000, l.NextOffset())
					if errors.Is(err, ErrOffsetOutOfRange) {
						continue
					}
					if err != nil || len(got) == 0 {
						t.Error(off, err)
						return
					}
					if !bytes.HasPrefix(want.between(0, 1<<62)[int(off/2)*len(want.batches[0]):], got) {
						t.Errorf("read at %d returned wrong bytes", off)
						return
					}
				}
			}()
		}
		cfg := l.Config()
		for size := l.Size(); size > 0; size -= 3000 {
			cfg.RetentionBytes = size
			l.SetConfig(cfg)
			if _, err := l.ApplyRetention(time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		l.Close()
	}
}
