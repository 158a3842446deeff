package log

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// fill appends n batches, closes the log and returns what was appended.
func fill(t *testing.T, fsys vfs.FS, dir string, cfg Config, n int) *appended {
	t.Helper()
	l := mustOpen(t, fsys, dir, cfg)
	var want appended
	for i := 0; i < n; i++ {
		b := testBatch(1+i%3, 50+i%100, int64(i), byte(i))
		want.add(mustAppend(t, l, b), b)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return &want
}

func lastSegmentPath(t *testing.T, fsys vfs.FS, dir string) string {
	t.Helper()
	names, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	for _, n := range names {
		if filepath.Ext(n) == logSuffix {
			logs = append(logs, n)
		}
	}
	return filepath.Join(dir, logs[len(logs)-1])
}

func appendFile(t *testing.T, fsys vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Close()
}

func fileSize(t *testing.T, fsys vfs.FS, name string) int64 {
	t.Helper()
	fi, err := fsys.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestRecoverTornTail(t *testing.T) {
	extra := testBatch(3, 100, 99, 42)
	for name, tail := range map[string][]byte{
		"torn batch":    extra[:len(extra)-7],
		"torn header":   extra[:30],
		"zeros":         make([]byte, 500),
		"garbage":       bytes.Repeat([]byte{0xA5}, 333),
		"wrong offset":  extra, // base offset 0 breaks contiguity
		"one zero byte": {0},
	} {
		t.Run(name, func(t *testing.T) {
			forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
				want := fill(t, fsys, dir, smallConfig(), 50)
				seg := lastSegmentPath(t, fsys, dir)
				size := fileSize(t, fsys, seg)
				appendFile(t, fsys, seg, tail)
				l := mustOpen(t, fsys, dir, smallConfig())
				defer l.Close()
				if got := fileSize(t, fsys, seg); got != size {
					t.Fatalf("segment is %d bytes after recovery, want %d", got, size)
				}
				if got := bytes.Join(readBatches(t, l, 0, 1000), nil); !bytes.Equal(got, want.between(0, 1<<62)) {
					t.Fatal("contents changed")
				}
				b := testBatch(1, 10, 0, 1)
				if off := mustAppend(t, l, b); off != l.NextOffset()-1 {
					t.Fatal(off)
				}
			})
		})
	}
}

func TestRecoverCorruptByte(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		want := fill(t, fsys, dir, smallConfig(), 50)
		seg := lastSegmentPath(t, fsys, dir)
		base, _, _ := parseSegmentName(filepath.Base(seg))
		// Flip a byte inside the third batch of the last segment.
		i := slices.Index(want.bases, base)
		pos := int64(len(want.batches[i]) + len(want.batches[i+1]) + 40)
		f, _ := fsys.OpenFile(seg, os.O_RDWR, 0)
		b := make([]byte, 1)
		f.ReadAt(b, pos)
		b[0] ^= 0xff
		// vfs.File writes at the handle offset: rewrite the prefix to reach pos.
		prefix := make([]byte, pos)
		f.ReadAt(prefix, 0)
		f.Write(append(prefix, b...))
		f.Close()

		l := mustOpen(t, fsys, dir, smallConfig())
		defer l.Close()
		if l.NextOffset() != want.bases[i+2] {
			t.Fatalf("next offset %d, want %d", l.NextOffset(), want.bases[i+2])
		}
		if got := fileSize(t, fsys, seg); got != pos-40 {
			t.Fatalf("truncated to %d, want %d", got, pos-40)
		}
		if got := bytes.Join(readBatches(t, l, 0, 1000), nil); !bytes.Equal(got, want.between(0, want.bases[i+2])) {
			t.Fatal("contents before the corruption changed")
		}
	})
}

func TestRecoverCleansDirectory(t *testing.T) {
	fsys := vfs.NewMem()
	fill(t, fsys, "/p", smallConfig(), 30)
	l := mustOpen(t, fsys, "/p", smallConfig())
	next := l.NextOffset()
	l.Close()
	create := func(name string, data []byte) {
		f, err := fsys.OpenFile(filepath.Join("/p", name), os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(data)
		f.Close()
	}
	create("00000000000000000007.index.tmp", []byte("junk"))
	create(checkpointName+tmpSuffix, []byte("v1 3\n"))
	create(segmentName(5, indexSuffix), []byte("orphan"))
	create(segmentName(next, logSuffix), nil)           // empty trailing segment
	create(segmentName(next+10, logSuffix), nil)        // and another
	create(segmentName(next+10, indexSuffix), []byte{}) // with an index
	create("unrelated.txt", []byte("keep me"))

	l = mustOpen(t, fsys, "/p", smallConfig())
	defer l.Close()
	names, _ := fsys.ReadDir("/p")
	for _, n := range names {
		if filepath.Ext(n) == tmpSuffix || n == segmentName(5, indexSuffix) ||
			n == segmentName(next, logSuffix) || n == segmentName(next+10, logSuffix) || n == segmentName(next+10, indexSuffix) {
			t.Fatalf("%s survived recovery: %v", n, names)
		}
	}
	if !slices.Contains(names, "unrelated.txt") {
		t.Fatal("removed an unrelated file")
	}
	if l.NextOffset() != next || l.StartOffset() != 0 {
		t.Fatal(l.NextOffset(), l.StartOffset())
	}
}

func TestRecoverEmptyFirstSegmentKept(t *testing.T) {
	fsys := vfs.NewMem()
	l := mustOpen(t, fsys, "/p", smallConfig())
	l.Close()
	l = mustOpen(t, fsys, "/p", smallConfig())
	defer l.Close()
	if segs := l.Segments(); len(segs) != 1 || segs[0].BaseOffset != 0 || l.NextOffset() != 0 {
		t.Fatalf("%+v", segs)
	}
}

func TestRecoverStartBeyondEnd(t *testing.T) {
	// A start offset was persisted but the records below it were lost in a
	// crash: the log restarts empty at the start offset.
	fsys := vfs.NewMem()
	l := mustOpen(t, fsys, "/p", smallConfig())
	for i := 0; i < 10; i++ {
		mustAppend(t, l, testBatch(1, 10, 0, 0))
	}
	if err := l.DeleteRecordsBefore(8); err != nil {
		t.Fatal(err)
	}
	crashed := fsys.Crash(nil) // nothing was synced but the checkpoint
	l2 := mustOpen(t, crashed, "/p", smallConfig())
	defer l2.Close()
	if l2.StartOffset() != 8 || l2.NextOffset() != 8 {
		t.Fatalf("start %d next %d", l2.StartOffset(), l2.NextOffset())
	}
	if off := mustAppend(t, l2, testBatch(1, 10, 0, 0)); off != 8 {
		t.Fatal(off)
	}
}

// A segment that overlaps its predecessor cannot come from a crash (writes
// and deletions are ordered): it is damage, and the log opens offline
// without deleting anything, where it used to drop the later segments.
func TestRecoverOverlapIsCorruption(t *testing.T) {
	fsys := vfs.NewMem()
	fill(t, fsys, "/p", smallConfig(), 40)
	l := mustOpen(t, fsys, "/p", smallConfig())
	segs := l.Segments()
	l.Close()
	// Fake a segment that starts inside segment 1.
	bogus := segs[1].BaseOffset + 1
	b := testBatch(1, 10, 0, 0)
	f, _ := fsys.OpenFile(filepath.Join("/p", segmentName(bogus, logSuffix)), os.O_CREATE|os.O_WRONLY, 0o644)
	record.SetBaseOffset(b, bogus)
	f.Write(b)
	f.Close()
	before := dirState(t, fsys, "/p")
	l = mustOpen(t, fsys, "/p", smallConfig())
	defer l.Close()
	ce := l.Corruption()
	if ce == nil || !errors.Is(l.Err(), ErrLogOffline) || ce.File != filepath.Join("/p", segmentName(bogus, logSuffix)) {
		t.Fatalf("overlapping segment: corruption %+v, err %v", ce, l.Err())
	}
	if _, err := l.Append(testBatch(1, 10, 0, 0)); !errors.Is(err, ErrLogOffline) {
		t.Fatalf("append to a corrupt log: %v", err)
	}
	l.Close()
	if after := dirState(t, fsys, "/p"); !maps.Equal(before, after) {
		t.Fatalf("files changed:\nbefore %v\nafter  %v", before, after)
	}
}

// dirState maps each file of dir to its contents.
func dirState(t *testing.T, fsys vfs.FS, dir string) map[string]string {
	t.Helper()
	names, err := fsys.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		b, err := vfs.ReadFile(fsys, filepath.Join(dir, n), 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = string(b)
	}
	return out
}
