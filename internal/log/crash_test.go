package log

import (
	"bytes"
	"errors"
	"math/rand"
	"testing"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

var errCrashed = errors.New("machine crashed")

// crashAfter makes every filesystem operation from the n-th on fail, taking
// a crash snapshot of mem just before the n-th executes. The snapshot
// function returns it (or a snapshot at call time if the crash never
// happened).
func crashAfter(ff *vfs.FaultyFS, mem *vfs.MemFS, n int, rng *rand.Rand) func() *vfs.MemFS {
	var crashed *vfs.MemFS
	ops := 0
	ff.SetHook(func(vfs.Op, string) error {
		if crashed != nil {
			return errCrashed
		}
		if ops++; ops >= n {
			crashed = mem.Crash(rng)
			return errCrashed
		}
		return nil
	})
	return func() *vfs.MemFS {
		if crashed == nil {
			crashed = mem.Crash(rng)
		}
		return crashed
	}
}

// model tracks what a crash test appended and what the log promised.
type model struct {
	batches  map[int64][]byte // by base offset
	next     int64
	durable  int64 // offsets below were promised durable
	minStart int64 // start offset promised durable
	maxStart int64 // highest start offset requested
}

func (m *model) add(base int64, b []byte) {
	m.batches[base] = bytes.Clone(b)
	h, _ := record.ParseHeader(b)
	m.next = h.LastOffset() + 1
}

// verify checks that l holds a prefix of the model that covers everything
// promised durable, and returns the offsets that l holds.
func (m *model) verify(t *testing.T, l *Log, what string) {
	t.Helper()
	next, start := l.NextOffset(), l.StartOffset()
	if next < m.durable || next > m.next {
		t.Fatalf("%s: next offset %d, durable %d, appended up to %d", what, next, m.durable, m.next)
	}
	if start < m.minStart || start > m.maxStart {
		t.Fatalf("%s: start offset %d outside [%d, %d]", what, start, m.minStart, m.maxStart)
	}
	if l.DurableOffset() != next {
		t.Fatalf("%s: durable %d after open, next %d", what, l.DurableOffset(), next)
	}
	off := start
	for i, b := range readBatches(t, l, start, 1+rand.Intn(3000)) {
		h, _ := record.ParseHeader(b)
		if (i == 0 && (h.BaseOffset > off || h.LastOffset() < off)) || (i > 0 && h.BaseOffset != off) {
			t.Fatalf("%s: batch %d..%d breaks contiguity at %d", what, h.BaseOffset, h.LastOffset(), off)
		}
		if !bytes.Equal(b, m.batches[h.BaseOffset]) {
			t.Fatalf("%s: batch at %d differs from what was appended", what, h.BaseOffset)
		}
		off = h.LastOffset() + 1
	}
	if off != next && next != start {
		t.Fatalf("%s: batches end at %d, next offset %d", what, off, next)
	}
	// Make the recovered state the model's: what was lost is gone for good.
	m.next = next
	m.durable = next
	m.minStart, m.maxStart = start, start
}

// crashStats summarizes a crash test run, to show it exercises something.
type crashStats struct {
	iterations, segments         int
	appended, durable, recovered int64
}

func TestCrashRecovery(t *testing.T) {
	var stats crashStats
	defer func() { t.Logf("%+v", stats) }()
	iters := 400
	if testing.Short() {
		iters = 50
	}
	for seed := 0; seed < iters; seed++ {
		crashIteration(t, int64(seed), &stats)
	}
}

func crashIteration(t *testing.T, seed int64, stats *crashStats) {
	rng := rand.New(rand.NewSource(seed))
	cfg := DefaultConfig()
	cfg.SegmentBytes = int64(300 + rng.Intn(3000)*rng.Intn(10))
	cfg.IndexIntervalBytes = rng.Intn(600)
	mem := vfs.NewMem()
	ff := vfs.NewFaulty(mem)
	snapshot := crashAfter(ff, mem, 1+rng.Intn(300), rng)
	m := &model{batches: map[int64][]byte{}}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: "+format, append([]any{seed}, args...)...)
	}

	// rp is a recovery point as the broker would have stored it: read from
	// the log at some step, so it may lag. Damage below it would be
	// reported as corruption; a crash must never cause any.
	var rp int64
	l, err := Open(ff, "/data/p", cfg, nil)
	if err == nil {
	workload:
		for step := 0; step < 150; step++ {
			switch r := rng.Intn(100); {
			case r < 70:
				b := testBatch(1+rng.Intn(4), rng.Intn(200), int64(step), byte(rng.Intn(256)))
				base, err := l.Append(b)
				if err != nil {
					break workload
				}
				if base != m.next {
					fail("append at %d, want %d", base, m.next)
				}
				m.add(base, b)
			case r < 85:
				upto := m.next
				if m.next > 0 && rng.Intn(2) == 0 {
					upto = rng.Int63n(m.next + 1)
				}
				if err := l.Sync(upto); err != nil {
					break workload
				}
				if l.DurableOffset() < upto {
					fail("Sync(%d) returned with durable offset %d", upto, l.DurableOffset())
				}
			case r < 92:
				to := m.minStart
				if d := l.DurableOffset(); d > to {
					to += rng.Int63n(d - to + 1)
				}
				m.maxStart = max(m.maxStart, to)
				if err := l.DeleteRecordsBefore(to); err != nil {
					break workload
				}
				m.minStart = max(m.minStart, to)
			case r < 95:
				cfg.RetentionBytes = rng.Int63n(l.Size() + 1)
				l.SetConfig(cfg)
				_, err := l.ApplyRetention(l.now())
				// Retention deletes whole segments without a checkpoint: a
				// crash may bring them back, so only the upper bound moves,
				// even if removing the files failed.
				m.maxStart = max(m.maxStart, l.StartOffset())
				if err != nil {
					break workload
				}
			default:
				if err := l.Close(); err != nil {
					break workload
				}
				m.durable = m.next
				if l, err = Open(ff, "/data/p", cfg, nil); err != nil {
					break workload
				}
			}
			m.durable = max(m.durable, l.DurableOffset())
			if rng.Intn(8) == 0 {
				rp = l.RecoveryPoint() // stored after the fsyncs it covers, as the broker does
			}
		}
	}
	crashed := snapshot()

	// Sometimes crash again during recovery.
	if rng.Intn(3) == 0 {
		ff2 := vfs.NewFaulty(crashed)
		snap2 := crashAfter(ff2, crashed, 1+rng.Intn(20), rng)
		if l2, err := OpenAt(ff2, "/data/p", cfg, nil, rp); err == nil {
			l2.Close()
		}
		crashed = snap2()
	}

	l2, err := OpenAt(crashed, "/data/p", cfg, testLogger(t), rp)
	if err != nil {
		fail("open after crash: %v", err)
	}
	if l2.Err() != nil {
		fail("a crash looks like corruption (recovery point %d): %v", rp, l2.Err())
	}
	stats.iterations++
	stats.appended += m.next
	stats.durable += m.durable
	cfg.RetentionBytes = -1
	m.verify(t, l2, "after crash")
	stats.recovered += l2.NextOffset()
	stats.segments += len(l2.Segments())

	// The recovered log keeps working and survives a clean reopen.
	for i := 0; i < 10; i++ {
		b := testBatch(1+rng.Intn(3), rng.Intn(300), 1000, byte(i))
		base, err := l2.Append(b)
		if err != nil || base != m.next {
			fail("append after recovery: base %d, want %d, err %v", base, m.next, err)
		}
		m.add(base, b)
	}
	if err := l2.Sync(m.next); err != nil {
		fail("sync after recovery: %v", err)
	}
	m.durable = m.next
	if err := l2.Close(); err != nil {
		fail("close: %v", err)
	}
	l3, err := Open(crashed.Crash(rng), "/data/p", cfg, nil)
	if err != nil {
		fail("reopen: %v", err)
	}
	m.verify(t, l3, "after reopen")
	l3.Close()
}
