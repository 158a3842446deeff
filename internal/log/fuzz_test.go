package log

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// FuzzRecover feeds arbitrary bytes to recovery, as the last segment, as a
// segment following a valid closed one, or as a closed segment's offset
// index, and checks that Open never panics and yields a valid, usable log.
func FuzzRecover(f *testing.F) {
	var valid []byte
	for i := 0; i < 6; i++ {
		b := testBatch(1+i%3, 20*i, int64(i), byte(i))
		record.SetBaseOffset(b, int64(i*2)) // contiguity breaks after the first batch
		valid = append(valid, b...)
	}
	contiguous := func(n int) []byte {
		var out []byte
		off := int64(0)
		for i := 0; i < n; i++ {
			b := testBatch(1+i%3, 30, int64(i), byte(i))
			record.SetBaseOffset(b, off)
			off += int64(1 + i%3)
			out = append(out, b...)
		}
		return out
	}
	good := contiguous(8)
	for mode := uint8(0); mode < 3; mode++ {
		f.Add(good, mode)
		f.Add(good[:len(good)-5], mode)
		f.Add(valid, mode)
		f.Add([]byte{}, mode)
		f.Add(bytes.Repeat([]byte{0xff}, 100), mode)
		f.Add(encodeOffsetIndex(int64(len(good)), 14, []offsetEntry{{3, 100}}), mode)
	}
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		fsys := vfs.NewMem()
		cfg := smallConfig()
		cfg.IndexIntervalBytes = 64
		write := func(name string, b []byte) {
			fh, err := fsys.OpenFile(filepath.Join("/p", name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			fh.Write(b)
			fh.Close()
		}
		fsys.MkdirAll("/p", 0o755)
		switch mode % 3 {
		case 0:
			write(segmentName(0, logSuffix), data)
		case 1, 2:
			// A valid closed segment 0 with its index files, then a
			// segment after it.
			l := mustOpen(t, fsys, "/p", cfg)
			first := contiguous(8)
			var next int64
			for len(first) > 0 {
				size, _ := record.PeekSize(first)
				if _, err := l.Append(first[:size]); err != nil {
					t.Fatal(err)
				}
				first = first[size:]
			}
			next = l.NextOffset()
			l.Close()
			if mode%3 == 1 {
				write(segmentName(next, logSuffix), data)
			} else {
				write(segmentName(0, indexSuffix), data)
				write(segmentName(next, logSuffix), testBatchAt(next))
			}
		}
		l, err := Open(fsys, "/p", cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkValid(t, l)
		b := testBatch(2, 10, 0, 1)
		base, err := l.Append(b)
		if err != nil || base+2 != l.NextOffset() {
			t.Fatal(base, err)
		}
		if got, err := l.Read(base, 1, l.NextOffset()); err != nil || !bytes.Equal(got, b) {
			t.Fatal("read back", err)
		}
		l.Close()
		l, err = Open(fsys, "/p", cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkValid(t, l)
		if l.NextOffset() != base+2 {
			t.Fatal("reopen lost the append")
		}
		l.Close()
	})
}

func testBatchAt(off int64) []byte {
	b := testBatch(1, 5, 0, 0)
	record.SetBaseOffset(b, off)
	return b
}

// checkValid checks that a log reads back as contiguous valid batches from
// its start offset to its end.
func checkValid(t *testing.T, l *Log) {
	t.Helper()
	start, next := l.StartOffset(), l.NextOffset()
	if start > next {
		t.Fatalf("start %d > next %d", start, next)
	}
	off := start
	for i, b := range readBatches(t, l, start, 500) {
		h, err := record.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if (i == 0 && h.BaseOffset > off) || (i > 0 && h.BaseOffset != off) {
			t.Fatalf("batch at %d, expected %d", h.BaseOffset, off)
		}
		off = h.LastOffset() + 1
	}
	if off != next && next != start {
		t.Fatalf("batches end at %d, log at %d", off, next)
	}
}

// FuzzClean feeds arbitrary bytes to a compacted log's recovery and
// cleaner: as its first closed segment (gaps allowed, followed by a valid
// segment), as a leftover .swap file over that segment, or as its cleaner
// checkpoint. Open and Clean
// must never panic; a log that opens healthy and is cleaned reads back as
// valid batches in increasing offset order, and reopens.
func FuzzClean(f *testing.F) {
	var keyed []byte
	for i := 0; i < 6; i++ {
		b := keyedTestBatch([]string{fmt.Sprint("k", i%3), fmt.Sprint("j", i%2)}, 8, int64(i))
		record.SetBaseOffset(b, int64(i*3)) // a gap after every batch
		keyed = append(keyed, b...)
	}
	f.Add(keyed, uint8(0))
	f.Add(keyed, uint8(1))
	f.Add(keyed[:len(keyed)-7], uint8(0))
	f.Add([]byte{}, uint8(1))
	f.Add([]byte("v1 4\n"), uint8(2))
	f.Add([]byte("v9 4\n"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		fsys := vfs.NewMem()
		fsys.MkdirAll("/p", 0o755)
		write := func(name string, b []byte) {
			fh, err := fsys.OpenFile(filepath.Join("/p", name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			fh.Write(b)
			fh.Close()
		}
		ckpt := []byte("v1 0\n")
		if mode%3 == 2 {
			ckpt = data
		}
		write(cleanerCheckpointName, ckpt)
		tail := keyedTestBatch([]string{"k0"}, 8, 9)
		record.SetBaseOffset(tail, 100)
		write(segmentName(100, logSuffix), tail)
		switch mode % 3 {
		case 0:
			write(segmentName(0, logSuffix), data)
		case 1:
			write(segmentName(0, logSuffix), keyed)
			write(groupFileName(0, 100, swapSuffix), data)
		case 2:
			write(segmentName(0, logSuffix), keyed)
		}
		l, err := Open(fsys, "/p", smallConfig(), nil)
		if err != nil {
			return // refused (e.g. an I/O error class); must not panic
		}
		defer l.Close()
		if l.Err() != nil {
			return // corrupt: offline, files untouched
		}
		mustAppend(t, l, keyedTestBatch([]string{"k1"}, 8, 10))
		if _, err := l.Clean(CleanOptions{UpTo: l.NextOffset(), Map: NewOffsetMap(240), NowMs: 1 << 40, DeleteRetentionMs: 1 << 50}); err != nil {
			if l.Err() == nil {
				t.Fatalf("clean failed without taking the log offline: %v", err)
			}
			return
		}
		last := int64(-1)
		for _, b := range readBatches(t, l, l.StartOffset(), 1<<20) {
			h, err := record.Parse(b)
			if err != nil || h.BaseOffset <= last {
				t.Fatalf("batch at %d after %d: %v", h.BaseOffset, last, err)
			}
			last = h.LastOffset()
		}
		l.Close()
		l2, err := Open(fsys, "/p", smallConfig(), nil)
		if err != nil || l2.Err() != nil {
			t.Fatalf("reopen after cleaning: %v %v", err, l2.Err())
		}
		l2.Close()
	})
}
