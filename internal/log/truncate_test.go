package log

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// logImage is what a log holds, as readers see it.
type logImage struct {
	start, end int64
	batches    [][]byte // from the one holding start, in offset order
}

func imageOf(t testing.TB, l *Log) logImage {
	t.Helper()
	img := logImage{start: l.StartOffset(), end: l.NextOffset()}
	for off := img.start; off < img.end; {
		b, err := l.Read(off, 1<<20, img.end)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if len(b) == 0 {
			break // a compacted log may end in a gap
		}
		if _, err := record.Split(b, func(h record.Header, batch []byte) error {
			img.batches = append(img.batches, batch)
			off = h.LastOffset() + 1
			return nil
		}); err != nil {
			t.Fatalf("read at %d returned bad batches: %v", off, err)
		}
	}
	return img
}

func (a logImage) equal(b logImage) bool {
	return a.start == b.start && a.end == b.end && slices.EqualFunc(a.batches, b.batches, bytes.Equal)
}

func (a logImage) String() string {
	return fmt.Sprintf("[%d, %d) in %d batches", a.start, a.end, len(a.batches))
}

// cut is the image after TruncateTo(offset).
func (a logImage) cut(offset int64) logImage {
	out := logImage{start: a.start, end: offset}
	for _, b := range a.batches {
		if h, _ := record.ParseHeader(b); h.BaseOffset < offset {
			out.batches = append(out.batches, b)
		}
	}
	return out
}

// bases are the base offsets of the image's batches.
func (a logImage) bases() []int64 {
	var out []int64
	for _, b := range a.batches {
		h, _ := record.ParseHeader(b)
		out = append(out, h.BaseOffset)
	}
	return out
}

func expectImage(t testing.TB, l *Log, want logImage, what string) {
	t.Helper()
	if got := imageOf(t, l); !got.equal(want) {
		t.Fatalf("%s: log holds %v, want %v", what, got, want)
	}
}

// truncationState is the state the truncation file records, "" if none.
func truncationState(t testing.TB, fsys vfs.FS, dir string) string {
	t.Helper()
	tr, err := readTruncationFile(fsys, dir)
	if err != nil {
		t.Fatal(err)
	}
	if tr == nil {
		return ""
	}
	return tr.state
}

// TestTruncateTo cuts a log of several segments at every kind of boundary;
// the result reads as the prefix, takes appends at the cut and reopens
// (cleanly and after a crash) as the same log.
func TestTruncateTo(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		cfg := smallConfig()
		want := fill(t, fsys, dir, cfg, 150)
		l := mustOpen(t, fsys, dir, cfg)
		for i := 0; i < 2; i++ { // the active segment holds at least two batches
			b := testBatch(1, 10, 1, 1)
			want.add(mustAppend(t, l, b), b)
		}
		before := imageOf(t, l)
		segs := l.Segments()
		if len(segs) < 5 {
			t.Fatalf("%d segments", len(segs))
		}
		l.Close()
		mid := segs[2]
		inMid := want.bases[slices.IndexFunc(want.bases, func(b int64) bool { return b > mid.BaseOffset })]
		act := segs[len(segs)-1]
		inActive := want.bases[len(want.bases)-1]
		if inActive == act.BaseOffset {
			t.Fatal("the active segment holds one batch")
		}
		cases := []struct {
			name   string
			offset int64
			segs   int // segments left
		}{
			{"inside a closed segment", inMid, 3},
			{"at a segment base", mid.BaseOffset, 3},
			{"inside the active segment", inActive, len(segs)},
			{"at the active segment's base", act.BaseOffset, len(segs)},
			{"everything", 0, 1},
		}
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				d := filepath.Join(dir, "..", fmt.Sprint("case", i))
				if err := copyDir(fsys, dir, d); err != nil {
					t.Fatal(err)
				}
				l := mustOpen(t, fsys, d, cfg)
				// Appended and not fsynced: TruncateTo makes what it keeps durable.
				mustAppend(t, l, testBatch(2, 30, 7, 7))
				if err := l.TruncateTo(c.offset); err != nil {
					t.Fatal(err)
				}
				if l.NextOffset() != c.offset || l.DurableOffset() != c.offset || l.RecoveryPoint() != c.offset {
					t.Fatalf("next %d durable %d recovery point %d, want %d", l.NextOffset(), l.DurableOffset(), l.RecoveryPoint(), c.offset)
				}
				if n := len(l.Segments()); n != c.segs {
					t.Fatalf("%d segments left, want %d: %+v", n, c.segs, l.Segments())
				}
				wantImg := before.cut(c.offset)
				expectImage(t, l, wantImg, "after truncation")
				if _, err := l.Read(c.offset+1, 100, c.offset+10); !errors.Is(err, ErrOffsetOutOfRange) {
					t.Fatalf("read past the cut: %v", err)
				}
				if got := truncationState(t, fsys, d); got != truncDone {
					t.Fatalf("truncation file says %q", got)
				}
				b := testBatch(3, 40, 9, 9)
				if off := mustAppend(t, l, b); off != c.offset {
					t.Fatalf("append after truncation at %d, want %d", off, c.offset)
				}
				wantImg.end += 3
				wantImg.batches = append(wantImg.batches, stamped(b, c.offset))
				expectImage(t, l, wantImg, "after append")
				if mem, ok := fsys.(*vfs.MemFS); ok {
					// Everything TruncateTo kept is durable; the append is not.
					l2 := mustOpen(t, mem.Crash(nil), d, cfg)
					expectImage(t, l2, before.cut(c.offset), "after a crash")
					l2.Close()
				}
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l = mustOpen(t, fsys, d, cfg)
				defer l.Close()
				expectImage(t, l, wantImg, "after reopen")
				if got := truncationState(t, fsys, d); got != "" {
					t.Fatalf("truncation file %q left after an open with a recovery point below the end", got)
				}
			})
		}
		t.Run("at the end", func(t *testing.T) {
			d := filepath.Join(dir, "..", "end")
			if err := copyDir(fsys, dir, d); err != nil {
				t.Fatal(err)
			}
			l := mustOpen(t, fsys, d, cfg)
			defer l.Close()
			files := dirState(t, fsys, d)
			if err := l.TruncateTo(before.end); err != nil {
				t.Fatal(err)
			}
			expectImage(t, l, before, "after a no-op truncation")
			if !mapsEqual(files, dirState(t, fsys, d)) {
				t.Fatal("truncating at the end changed files")
			}
		})
	})
}

// stamped is b with its base offset set, as the log stores it.
func stamped(b []byte, base int64) []byte {
	b = bytes.Clone(b)
	record.SetBaseOffset(b, base)
	return b
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// copyDir copies the regular files of src into a new directory dst,
// durably.
func copyDir(fsys vfs.FS, src, dst string) error {
	if err := vfs.MkdirAllDurable(fsys, dst); err != nil {
		return err
	}
	names, err := fsys.ReadDir(src)
	if err != nil {
		return err
	}
	for _, n := range names {
		b, err := vfs.ReadFile(fsys, filepath.Join(src, n), 1<<30)
		if err != nil {
			return err
		}
		if err := vfs.WriteFileAtomic(fsys, filepath.Join(dst, n), b); err != nil {
			return err
		}
	}
	return nil
}

// TestTruncateToRefusesBadOffsets: an offset inside a batch, below the
// start or beyond the end is refused and changes nothing.
func TestTruncateToRefusesBadOffsets(t *testing.T) {
	fsys := vfs.NewMem()
	cfg := smallConfig()
	want := fill(t, fsys, "/p", cfg, 40)
	l := mustOpen(t, fsys, "/p", cfg)
	defer l.Close()
	if err := l.DeleteRecordsBefore(want.bases[3]); err != nil {
		t.Fatal(err)
	}
	before := imageOf(t, l)
	files := dirState(t, fsys, "/p")
	var inside int64 = -1
	for i, b := range want.batches {
		if h, _ := record.ParseHeader(b); h.LastOffsetDelta > 0 && want.bases[i] > want.bases[3] {
			inside = want.bases[i] + 1
			break
		}
	}
	for _, c := range []struct {
		offset int64
		want   error
	}{
		{inside, ErrNotBoundary},
		{want.bases[2], ErrOffsetOutOfRange},
		{-1, ErrOffsetOutOfRange},
		{before.end + 1, ErrOffsetOutOfRange},
	} {
		if err := l.TruncateTo(c.offset); !errors.Is(err, c.want) {
			t.Fatalf("TruncateTo(%d): %v, want %v", c.offset, err, c.want)
		}
		if l.Err() != nil {
			t.Fatalf("TruncateTo(%d) took the log offline: %v", c.offset, l.Err())
		}
		expectImage(t, l, before, fmt.Sprintf("after TruncateTo(%d)", c.offset))
		if !mapsEqual(files, dirState(t, fsys, "/p")) {
			t.Fatalf("TruncateTo(%d) changed files", c.offset)
		}
	}
	if err := l.ResetTo(-1); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("ResetTo(-1): %v", err)
	}
	// The start offset itself is a valid cut when a batch starts there.
	if err := l.TruncateTo(before.start); err != nil {
		t.Fatal(err)
	}
	expectImage(t, l, logImage{start: before.start, end: before.start}, "truncated to the start")
}

// TestResetTo starts the log over anywhere: beyond its end, below its
// start, inside it; the start offset survives a crash.
func TestResetTo(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		cfg := smallConfig()
		want := fill(t, fsys, dir, cfg, 40)
		for i, start := range []int64{1000, 0, want.bases[20], want.bases[20] + 1} {
			t.Run(fmt.Sprint(start), func(t *testing.T) {
				d := filepath.Join(dir, "..", fmt.Sprint("reset", i))
				if err := copyDir(fsys, dir, d); err != nil {
					t.Fatal(err)
				}
				l := mustOpen(t, fsys, d, cfg)
				if err := l.DeleteRecordsBefore(want.bases[5]); err != nil {
					t.Fatal(err)
				}
				if err := l.ResetTo(start); err != nil {
					t.Fatal(err)
				}
				empty := logImage{start: start, end: start}
				expectImage(t, l, empty, "after reset")
				if l.DurableOffset() != start || len(l.Segments()) != 1 || l.Segments()[0].BaseOffset != start {
					t.Fatalf("durable %d, segments %+v", l.DurableOffset(), l.Segments())
				}
				if start > 0 {
					if _, err := l.Read(start-1, 100, start); !errors.Is(err, ErrOffsetOutOfRange) {
						t.Fatalf("read below the new start: %v", err)
					}
				}
				if mem, ok := fsys.(*vfs.MemFS); ok {
					l2 := mustOpen(t, mem.Crash(nil), d, cfg)
					expectImage(t, l2, empty, "after a crash")
					l2.Close()
				}
				b := testBatch(2, 10, 1, 1)
				if off := mustAppend(t, l, b); off != start {
					t.Fatalf("append after reset at %d, want %d", off, start)
				}
				l.Close()
				l = mustOpen(t, fsys, d, cfg)
				defer l.Close()
				expectImage(t, l, logImage{start: start, end: start + 2, batches: [][]byte{stamped(b, start)}}, "after reopen")
			})
		}
	})
}

// TestTruncateLeavesReadersAlone: spans pinned in a segment that goes and
// in the segment that is cut keep reading the old bytes (the cut segment
// is rewritten, not truncated under them), and nothing passes for
// corruption.
func TestTruncateLeavesReadersAlone(t *testing.T) {
	fsys := vfs.NewMem()
	cfg := smallConfig()
	want := fill(t, fsys, "/p", cfg, 150)
	l := mustOpen(t, fsys, "/p", cfg)
	defer l.Close()
	segs := l.Segments()
	cutSeg := segs[2]
	i := slices.IndexFunc(want.bases, func(b int64) bool { return b > cutSeg.BaseOffset })
	offset := want.bases[i]
	pin := func(off int64) (Spans, []byte) {
		ss, err := l.ReadSpans(off, 1<<20, l.NextOffset())
		if err != nil {
			t.Fatal(err)
		}
		b, err := ss.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		return ss, b
	}
	inCut, inCutBytes := pin(offset)
	inVictim, inVictimBytes := pin(segs[4].BaseOffset)
	old := l.segs[2]
	if err := l.TruncateTo(offset); err != nil {
		t.Fatal(err)
	}
	if l.segs[2] == old {
		t.Fatal("the cut segment was truncated in place under a pinned span")
	}
	for _, c := range []struct {
		ss   Spans
		want []byte
	}{{inCut, inCutBytes}, {inVictim, inVictimBytes}} {
		got, err := c.ss.Bytes()
		if err != nil || !bytes.Equal(got, c.want) {
			t.Fatalf("pinned span after truncation: %d bytes, %v", len(got), err)
		}
		c.ss.Release()
	}
	if l.Err() != nil {
		t.Fatal(l.Err())
	}
	wantImg := logImage{start: 0, end: offset}
	for j := 0; j < i; j++ {
		wantImg.batches = append(wantImg.batches, want.batches[j])
	}
	expectImage(t, l, wantImg, "after truncation")
	mustAppend(t, l, testBatch(1, 10, 1, 1))
	l.Close()
	l = mustOpen(t, fsys, "/p", cfg)
	wantImg.end++
	wantImg.batches = append(wantImg.batches, stamped(testBatch(1, 10, 1, 1), offset))
	expectImage(t, l, wantImg, "after reopen")
}

// TestTruncateUnderConcurrentReads: readers keep reading while the log is
// cut, reset and appended to; every read is whole batches or an offset out
// of range, never corruption (the race detector judges the rest).
func TestTruncateUnderConcurrentReads(t *testing.T) {
	cfg := smallConfig()
	l := mustOpen(t, vfs.NewMem(), "/p", cfg)
	defer l.Close()
	var bases []int64
	appendSome := func(n int) {
		for i := 0; i < n; i++ {
			bases = append(bases, mustAppend(t, l, testBatch(1+i%3, 100+i*13%200, int64(i), byte(i))))
		}
	}
	appendSome(60)
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 3; g++ {
		wg.Go(func() {
			rng := rand.New(rand.NewSource(int64(g)))
			for !stop.Load() {
				start, next := l.StartOffset(), l.NextOffset()
				if next <= start {
					continue
				}
				off := start + rng.Int63n(next-start)
				var b []byte
				var err error
				if g == 0 {
					b, err = l.Read(off, 1+rng.Intn(5000), next)
				} else {
					var ss Spans
					ss, err = l.ReadSpans(off, 1+rng.Intn(5000), next)
					if err == nil {
						b, err = ss.Bytes()
						ss.Release()
					}
				}
				if errors.Is(err, ErrOffsetOutOfRange) {
					continue
				}
				if err == nil {
					_, err = record.Split(b, func(record.Header, []byte) error { return nil })
				}
				if err != nil {
					errs <- fmt.Errorf("read at %d: %w", off, err)
					return
				}
			}
		})
	}
	rng := rand.New(rand.NewSource(9))
	for round := 0; round < 60; round++ {
		if round%10 == 9 {
			start := l.NextOffset() + rng.Int63n(10)
			if err := l.ResetTo(start); err != nil {
				t.Fatal(err)
			}
			bases = nil
		} else if len(bases) > 0 {
			k := rng.Intn(len(bases))
			if err := l.TruncateTo(bases[k]); err != nil {
				t.Fatal(err)
			}
			bases = bases[:k]
		}
		appendSome(5 + rng.Intn(30))
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if l.Err() != nil {
		t.Fatal(l.Err())
	}
}

// TestTruncateCompacted: in a compacted log a cut may fall between
// batches where records were removed (the end offset is then held by an
// empty segment), and the cleaner's position comes down with the cut.
func TestTruncateCompacted(t *testing.T) {
	fsys := vfs.NewMem()
	cfg := smallConfig()
	l := mustOpen(t, fsys, "/p", cfg)
	for i := 0; i < 80; i++ {
		key := fmt.Sprint("k", i%2) // overwritten: gaps
		if i%3 == 0 {
			key = fmt.Sprint("u", i) // kept
		}
		mustAppend(t, l, keyedTestBatch([]string{key}, 300, 1))
	}
	st, err := l.Clean(CleanOptions{UpTo: l.NextOffset(), Map: NewOffsetMap(1 << 20), NowMs: 1 << 40, DeleteRetentionMs: 1 << 50})
	if err != nil || st.BatchesRemoved == 0 {
		t.Fatalf("%+v %v", st, err)
	}
	before := imageOf(t, l)
	// A gap: the offset after a kept batch whose successor starts later.
	gap := int64(-1)
	bases := before.bases()
	for i := 0; i+1 < len(bases); i++ {
		h, _ := record.ParseHeader(before.batches[i])
		if h.LastOffset()+1 < bases[i+1] {
			gap = h.LastOffset() + 1
			break
		}
	}
	if gap < 0 {
		t.Fatal("no gap after cleaning")
	}
	if l.FirstDirtyOffset() <= gap {
		t.Fatalf("first dirty %d, gap at %d", l.FirstDirtyOffset(), gap)
	}
	if err := l.TruncateTo(gap); err != nil {
		t.Fatal(err)
	}
	wantImg := before.cut(gap)
	expectImage(t, l, wantImg, "after a cut in a gap")
	if l.FirstDirtyOffset() != gap {
		t.Fatalf("first dirty %d after a cut at %d", l.FirstDirtyOffset(), gap)
	}
	b := keyedTestBatch([]string{"new"}, 10, 1)
	if off := mustAppend(t, l, b); off != gap {
		t.Fatalf("append at %d, want %d", off, gap)
	}
	wantImg.end++
	wantImg.batches = append(wantImg.batches, stamped(b, gap))
	l.Close()
	l = mustOpen(t, fsys, "/p", cfg)
	defer l.Close()
	expectImage(t, l, wantImg, "after reopen")
	if l.FirstDirtyOffset() != gap {
		t.Fatalf("first dirty %d after reopen, want %d", l.FirstDirtyOffset(), gap)
	}
	// Without the append, the empty segment at the cut holds the end.
	if err := l.TruncateTo(gap); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = mustOpen(t, fsys, "/p", cfg)
	expectImage(t, l, before.cut(gap), "reopened at an offset in a gap")
}

// TestTruncateAbandonsCleaning: a truncation during a cleaning pass makes
// the pass swap nothing in: the cleaned segments held batches the
// truncation removed.
func TestTruncateAbandonsCleaning(t *testing.T) {
	fsys := vfs.NewMem()
	cfg := smallConfig()
	l := mustOpen(t, fsys, "/p", cfg)
	defer l.Close()
	for i := 0; i < 80; i++ {
		mustAppend(t, l, keyedTestBatch([]string{fmt.Sprint("k", i%5)}, 300, 1))
	}
	before := imageOf(t, l)
	cut := before.bases()[30]
	calls := 0
	st, err := l.Clean(CleanOptions{UpTo: l.NextOffset(), Map: NewOffsetMap(1 << 20), NowMs: 1 << 40, DeleteRetentionMs: 1 << 50,
		Throttle: func(int) {
			if calls++; calls == 1 {
				if err := l.TruncateTo(cut); err != nil {
					t.Error(err)
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Groups != 0 {
		t.Fatalf("%d groups swapped in after a truncation", st.Groups)
	}
	expectImage(t, l, before.cut(cut), "after the abandoned pass")
	if l.FirstDirtyOffset() > cut {
		t.Fatalf("first dirty %d above the cut %d", l.FirstDirtyOffset(), cut)
	}
	// The next pass cleans what is left.
	if st, err := l.Clean(CleanOptions{UpTo: l.NextOffset(), Map: NewOffsetMap(1 << 20), NowMs: 1 << 40, DeleteRetentionMs: 1 << 50}); err != nil || st.Groups == 0 {
		t.Fatalf("%+v %v", st, err)
	}
}

// TestTruncationRecoveryPoint: a recovery point stored before a
// truncation does not make the next Open call the removed batches lost;
// one stored after it, above anything the log reported before, still
// catches lost data.
func TestTruncationRecoveryPoint(t *testing.T) {
	cfg := smallConfig()
	mem := vfs.NewMem()
	want := fill(t, mem, "/p", cfg, 40)
	l := mustOpen(t, mem, "/p", cfg)
	stale := l.RecoveryPoint()
	cut := want.bases[20]
	if err := l.TruncateTo(cut); err != nil {
		t.Fatal(err)
	}
	crashed := mem.Crash(nil)
	if rep, err := Check(crashed, "/p", stale, nil); err != nil || len(rep.Damage) > 0 {
		t.Fatalf("check-data with the stale recovery point: %v %+v", err, rep)
	}
	l2, err := OpenAt(crashed, "/p", cfg, testLogger(t), stale)
	if err != nil || l2.Err() != nil {
		t.Fatalf("open with a recovery point from before the truncation: %v %v", err, l2.Err())
	}
	if l2.NextOffset() != cut || truncationState(t, crashed, "/p") != truncDone {
		t.Fatalf("end %d, truncation file %q", l2.NextOffset(), truncationState(t, crashed, "/p"))
	}
	// Appended and fsynced beyond anything reported before the
	// truncation; then the disk loses it.
	for l2.NextOffset() <= stale+5 {
		mustAppend(t, l2, testBatch(2, 100, 1, 1))
	}
	if err := l2.Sync(l2.NextOffset()); err != nil {
		t.Fatal(err)
	}
	fresh := l2.RecoveryPoint()
	l2.Close()
	last := lastSegmentPath(t, crashed, "/p")
	f, err := crashed.OpenFile(last, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := f.Size()
	f.Truncate(size - 10)
	f.Sync()
	f.Close()
	l3, err := OpenAt(crashed, "/p", cfg, testLogger(t), fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer l3.Close()
	if l3.Corruption() == nil {
		t.Fatalf("lost fsynced data above the truncation's ceiling passed for a torn tail (end %d, recovery point %d)", l3.NextOffset(), fresh)
	}
}

// TestTruncationFileFormat: a newer truncation file is refused, a
// malformed one ignored.
func TestTruncationFileFormat(t *testing.T) {
	for _, c := range []struct {
		contents string
		refused  bool
	}{
		{"v2 truncated 3 3 4\n", true},
		{"v1 truncated 3 4\n", false},
		{"v1 shortened 3 3 4\n", false},
		{"v1 truncated -3 -3 4\n", false},
		{"v1 truncated 3 4 4\n", false},
	} {
		fsys := vfs.NewMem()
		fill(t, fsys, "/p", smallConfig(), 5)
		if err := vfs.WriteFileAtomic(fsys, "/p/"+truncationName, []byte(c.contents)); err != nil {
			t.Fatal(err)
		}
		l, err := Open(fsys, "/p", smallConfig(), nil)
		if c.refused {
			if err == nil || !strings.Contains(err.Error(), truncationName) || !strings.Contains(err.Error(), "version 2") {
				t.Fatalf("%q: %v, want a refusal naming the file and version", c.contents, err)
			}
			continue
		}
		if err != nil || l.NextOffset() == 0 {
			t.Fatalf("%q: %v", c.contents, err)
		}
		l.Close()
	}
	for _, tr := range []truncation{{truncPendingCut, 5, 4, 9}, {truncPendingReset, 0, 0, 0}, {truncDone, 1 << 40, 1 << 40, 1 << 41}} {
		got, err := parseTruncation(tr.encode())
		if err != nil || got != tr {
			t.Fatalf("%+v round trips as %+v, %v", tr, got, err)
		}
	}
}

// FuzzParseTruncation: any bytes parse or are refused, never panic, and
// what parses survives an encode and parse unchanged.
func FuzzParseTruncation(f *testing.F) {
	f.Add([]byte("v1 truncate-to 10 8 20\n"))
	f.Add([]byte("v1 reset-to 0 0 0\n"))
	f.Add([]byte("v1 truncated 5 5 9\n"))
	f.Add([]byte("v2 truncated 5 5 9\n"))
	f.Add([]byte("v1 truncated 5 6 9\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := parseTruncation(b)
		if err != nil {
			return
		}
		if tr.kept > tr.offset || tr.kept < 0 || tr.ceiling < 0 {
			t.Fatalf("%q parsed as %+v", b, tr)
		}
		if again, err := parseTruncation(tr.encode()); err != nil || again != tr {
			t.Fatalf("%+v does not round trip: %+v %v", tr, again, err)
		}
	})
}
