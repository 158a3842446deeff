package log

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// truncCrashStats show what TestTruncateCrash exercised.
type truncCrashStats struct {
	cases, crashes, old, new int
	inPlace, copied          int
	compacted                int
}

// TestTruncateCrash crashes the machine at every filesystem operation of
// TruncateTo and ResetTo (and once after), on logs of random shapes
// (contiguous or compacted, indexes loaded or rebuilt, the cut segment
// pinned by a reader or not), and sometimes again during the recovery.
// The reopened log, given a recovery point stored before the operation,
// is never corrupt and is exactly the log before or the log after:
// never a mix of the two.
func TestTruncateCrash(t *testing.T) {
	var st truncCrashStats
	seeds := 40
	if testing.Short() {
		seeds = 8
	}
	for seed := int64(0); seed < int64(seeds); seed++ {
		for _, reset := range []bool{false, true} {
			ops := truncCrashCase(t, seed, reset, 0, &st)
			for n := 1; n <= ops+1; n++ {
				truncCrashCase(t, seed, reset, n, &st)
			}
		}
	}
	t.Logf("%+v", st)
	if st.old == 0 || st.new == 0 || st.inPlace == 0 || st.copied == 0 || st.compacted == 0 {
		t.Fatalf("the crashes did not exercise every outcome: %+v", st)
	}
}

// truncCrashCase builds the log of seed and runs one truncation on it.
// With crashAt 0 it counts the filesystem operations the truncation makes
// and checks its result; otherwise the machine crashes at the crashAt-th.
func truncCrashCase(t *testing.T, seed int64, reset bool, crashAt int, st *truncCrashStats) int {
	rng := rand.New(rand.NewSource(seed))
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d reset %v crash at %d: %s", seed, reset, crashAt, fmt.Sprintf(format, args...))
	}
	cfg := DefaultConfig()
	cfg.SegmentBytes = int64(400 + rng.Intn(2500))
	cfg.IndexIntervalBytes = rng.Intn(500)
	mem := vfs.NewMem()
	ff := vfs.NewFaulty(mem)
	const dir = "/data/p"
	l, err := Open(ff, dir, cfg, nil)
	if err != nil {
		fail("open: %v", err)
	}
	compacted := rng.Intn(3) == 0
	for i, n := 0, 20+rng.Intn(60); i < n; i++ {
		var b []byte
		if compacted {
			key := fmt.Sprint("k", rng.Intn(4))
			if rng.Intn(3) == 0 {
				key = fmt.Sprint("u", i)
			}
			b = keyedTestBatch([]string{key}, rng.Intn(200), int64(i))
		} else {
			b = testBatch(1+rng.Intn(4), rng.Intn(150), int64(i), byte(i))
		}
		if _, err := l.Append(b); err != nil {
			fail("append: %v", err)
		}
	}
	if compacted {
		if _, err := l.Clean(CleanOptions{UpTo: l.NextOffset(), Map: NewOffsetMap(1 << 20), NowMs: 1 << 40, DeleteRetentionMs: 1 << 50}); err != nil {
			fail("clean: %v", err)
		}
	}
	if rng.Intn(3) == 0 {
		bases := imageOf(t, l).bases()
		if err := l.DeleteRecordsBefore(bases[rng.Intn(len(bases))]); err != nil {
			fail("delete records: %v", err)
		}
	}
	if rng.Intn(2) == 0 { // closed segments come from their index files
		if err := l.Close(); err != nil {
			fail("close: %v", err)
		}
		if l, err = Open(ff, dir, cfg, nil); err != nil {
			fail("reopen: %v", err)
		}
	}
	if err := l.Sync(l.NextOffset()); err != nil {
		fail("sync: %v", err)
	}
	before := imageOf(t, l)
	rp := l.RecoveryPoint() // as the broker stored it before the call
	if rng.Intn(4) == 0 {
		rp = rng.Int63n(rp + 1)
	}

	var offset int64
	var want logImage
	if reset {
		offset = rng.Int63n(before.end + 20)
		want = logImage{start: offset, end: offset}
	} else {
		// A batch base, the start or the end; in a compacted log also an
		// offset between batches.
		candidates := []int64{before.start, before.end}
		for _, b := range before.bases() {
			if b >= before.start {
				candidates = append(candidates, b)
			}
		}
		offset = candidates[rng.Intn(len(candidates))]
		if compacted && rng.Intn(2) == 0 {
			if o := before.start + rng.Int63n(before.end-before.start+1); !inside(before, o) {
				offset = o
			}
		}
		if inside(before, offset) { // the start in the middle of a batch
			offset = before.end
		}
		want = before.cut(offset)
	}
	// A reader holds the segment that is cut (or some other), which
	// makes the cut a copy.
	var pinned Spans
	if before.end > before.start && rng.Intn(2) == 0 {
		at := before.start + rng.Int63n(before.end-before.start)
		if !reset && offset > before.start && rng.Intn(2) == 0 {
			at = offset - 1
		}
		if pinned, err = l.ReadSpans(at, 1+rng.Intn(500), before.end); err != nil {
			fail("pin: %v", err)
		}
	}
	var cutSeg *segment
	var cutSize int64
	if !reset {
		for _, s := range l.segs {
			if s.base <= offset {
				cutSeg, cutSize = s, s.size.Load()
			}
		}
	}
	run := func() error {
		if reset {
			return l.ResetTo(offset)
		}
		return l.TruncateTo(offset)
	}

	if crashAt == 0 {
		ops := 0
		ff.SetHook(func(vfs.Op, string) error { ops++; return nil })
		if err := run(); err != nil {
			fail("%v", err)
		}
		ff.SetHook(nil)
		pinned.Release()
		st.cases++
		if compacted {
			st.compacted++
		}
		switch {
		case cutSeg == nil:
		case !slices.Contains(l.segs, cutSeg):
			st.copied++
		case cutSeg.size.Load() < cutSize:
			st.inPlace++
		}
		expectImage(t, l, want, fmt.Sprintf("seed %d: after the call", seed))
		if err := l.Close(); err != nil {
			fail("close: %v", err)
		}
		l2, err := OpenAt(mem, dir, cfg, nil, rp)
		if err != nil || l2.Err() != nil {
			fail("reopen: %v %v", err, l2.Err())
		}
		expectImage(t, l2, want, fmt.Sprintf("seed %d: reopened", seed))
		l2.Close()
		return ops
	}

	snapshot := crashAfter(ff, mem, crashAt, rng)
	err = run()
	pinned.Release()
	crashed := snapshot()
	st.crashes++
	if rng.Intn(3) == 0 { // and again during the recovery
		ff2 := vfs.NewFaulty(crashed)
		snap2 := crashAfter(ff2, crashed, 1+rng.Intn(40), rng)
		if l2, err := OpenAt(ff2, dir, cfg, nil, rp); err == nil {
			l2.Close()
		}
		crashed = snap2()
	}
	// check-data judges the directory as Open will.
	if rep, err := Check(crashed, dir, rp, nil); err != nil || len(rep.Damage) > 0 {
		fail("check-data after the crash: %v %v", err, rep.Damage)
	}
	l2, err2 := OpenAt(crashed, dir, cfg, testLogger(t), rp)
	if err2 != nil {
		fail("open after the crash: %v", err2)
	}
	if l2.Err() != nil {
		fail("a crash looks like corruption (recovery point %d): %v", rp, l2.Err())
	}
	got := imageOf(t, l2)
	switch {
	case got.equal(want):
		st.new++
	case got.equal(before) && err != nil:
		st.old++
	default:
		fail("reopened log %v, want the one before %v or after %v (the call returned %v)", got, before, want, err)
	}
	names, _ := crashed.ReadDir(dir)
	for _, n := range names {
		if strings.HasSuffix(n, tmpSuffix) {
			fail("%s left after recovery", n)
		}
	}
	// It keeps working and reopens as itself.
	b := testBatch(2, 20, 1, 1)
	base, err := l2.Append(b)
	if err != nil || base != got.end {
		fail("append after recovery at %d, want %d: %v", base, got.end, err)
	}
	got.batches = append(got.batches, stamped(b, base))
	got.end += 2
	if err := l2.Close(); err != nil {
		fail("close: %v", err)
	}
	l3, err := OpenAt(crashed.Crash(rng), dir, cfg, nil, l2.RecoveryPoint())
	if err != nil || l3.Err() != nil {
		fail("reopen: %v %v", err, l3.Err())
	}
	expectImage(t, l3, got, fmt.Sprintf("seed %d crash at %d: reopened", seed, crashAt))
	l3.Close()
	return 0
}

// inside reports whether offset lies inside a batch of img (after its
// base, at or before its last offset).
func inside(img logImage, offset int64) bool {
	for _, b := range img.batches {
		h, _ := record.ParseHeader(b)
		if h.BaseOffset < offset && offset <= h.LastOffset() {
			return true
		}
	}
	return false
}
