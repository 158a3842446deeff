package partition

import (
	"errors"
	"testing"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/vfs"
)

func expectOffsets(t *testing.T, p *Partition, what string, start, end, hw, lso int64) {
	t.Helper()
	if p.LogStartOffset() != start || p.LogEndOffset() != end || p.HighWatermark() != hw || p.LastStableOffset() != lso {
		t.Fatalf("%s: start %d end %d hw %d lso %d, want %d %d %d %d", what,
			p.LogStartOffset(), p.LogEndOffset(), p.HighWatermark(), p.LastStableOffset(), start, end, hw, lso)
	}
}

func expectDuplicate(t *testing.T, p *Partition, s spec, base int64) {
	t.Helper()
	raw, h := batch(s)
	res, err := p.Append(raw, h)
	if err != nil || !res.Duplicate || res.BaseOffset != base {
		t.Fatalf("retry of %+v: %+v %v, want a duplicate at %d", s, res, err, base)
	}
}

// TestTruncateRollsBackProducerState: after a truncation an idempotent
// producer's batches above the cut are accepted again (its sequence is
// rolled back, also across a snapshot taken above the cut), while a retry
// of a batch below the cut is still a duplicate; the truncation survives
// a crash and a reopen.
func TestTruncateRollsBackProducerState(t *testing.T) {
	mem := vfs.NewMem()
	p := open(t, mem)
	appendOK(t, p, spec{pid: 7, seq: 0, n: 2}) // 0-1
	appendOK(t, p, spec{pid: 7, seq: 2, n: 2}) // 2-3
	if err := p.takeSnapshot(); err != nil {   // at 4
		t.Fatal(err)
	}
	appendOK(t, p, spec{pid: 7, seq: 4, n: 2}) // 4-5
	appendOK(t, p, spec{pid: -1, n: 1})        // 6
	appendOK(t, p, spec{pid: 7, seq: 6, n: 2}) // 7-8
	if err := p.takeSnapshot(); err != nil {   // at 9: above the cut
		t.Fatal(err)
	}
	appendOK(t, p, spec{pid: 7, seq: 8, n: 1}) // 9
	if err := p.TruncateTo(5); !errors.Is(err, log.ErrNotBoundary) {
		t.Fatalf("cut inside a batch: %v", err)
	}
	expectOffsets(t, p, "after a refused cut", 0, 10, 10, 10)
	if err := p.TruncateTo(4); err != nil {
		t.Fatal(err)
	}
	expectOffsets(t, p, "after the cut", 0, 4, 4, 4)
	if offs, _ := p.snapshots(); len(offs) != 1 || offs[0] != 4 {
		t.Fatalf("snapshots after the cut: %v, want only the one at 4", offs)
	}
	expectDuplicate(t, p, spec{pid: 7, seq: 2, n: 2}, 2)
	if res := appendOK(t, p, spec{pid: 7, seq: 4, n: 2}); res.BaseOffset != 4 || res.Duplicate {
		t.Fatalf("the first batch above the cut again: %+v", res)
	}
	raw, h := batch(spec{pid: 7, seq: 8, n: 1})
	if _, err := p.Append(raw, h); !errors.Is(err, producerstate.ErrOutOfOrderSequence) {
		t.Fatalf("a batch the cut removed skipped ahead: %v", err)
	}
	if res := appendOK(t, p, spec{pid: 7, seq: 6, n: 2}); res.BaseOffset != 6 {
		t.Fatalf("the next batch at %d, want 6", res.BaseOffset)
	}
	expectOffsets(t, p, "after appending again", 0, 8, 8, 8)

	// What TruncateTo did is durable: a crash keeps it and the appends
	// acknowledged since.
	q := open(t, mem.Crash(nil))
	expectOffsets(t, q, "after a crash", 0, 8, 8, 8)
	expectDuplicate(t, q, spec{pid: 7, seq: 6, n: 2}, 6)
	expectDuplicate(t, q, spec{pid: 7, seq: 2, n: 2}, 2)
	q.Close()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	r := open(t, mem)
	defer r.Close()
	expectDuplicate(t, r, spec{pid: 7, seq: 4, n: 2}, 4)
	appendOK(t, r, spec{pid: 7, seq: 8, n: 1})
}

// TestTruncateReopensTransaction: a cut below a transaction's ABORT
// marker opens the transaction again: the LSO comes back to its first
// offset and the aborted index forgets it.
func TestTruncateReopensTransaction(t *testing.T) {
	p := open(t, vfs.NewMem())
	defer p.Close()
	appendOK(t, p, spec{pid: -1, n: 2})                    // 0-1
	appendOK(t, p, spec{pid: 10, seq: 0, n: 2, txn: true}) // 2-3
	if err := p.WriteTxnMarker(10, 0, false, 0); err != nil {
		t.Fatal(err) // abort at 4
	}
	appendOK(t, p, spec{pid: -1, n: 1}) // 5
	if got := p.AbortedTxns(0, 6); len(got) != 1 {
		t.Fatalf("aborted %v", got)
	}
	if err := p.TruncateTo(4); err != nil {
		t.Fatal(err)
	}
	expectOffsets(t, p, "after cutting the marker", 0, 4, 4, 2)
	if got := p.AbortedTxns(0, 4); len(got) != 0 {
		t.Fatalf("aborted index still lists %v", got)
	}
	if p.OpenTxn(10) != 2 {
		t.Fatalf("open transaction %d, want 2", p.OpenTxn(10))
	}
	if err := p.WriteTxnMarker(10, 0, true, 0); err != nil {
		t.Fatal(err)
	}
	expectOffsets(t, p, "after committing instead", 0, 5, 5, 5)
}

// TestTruncateVoidsVerification: a transactional batch verified with the
// coordinator before a truncation removed its transaction's start must
// not open a new transaction afterwards.
func TestTruncateVoidsVerification(t *testing.T) {
	p := open(t, vfs.NewMem())
	defer p.Close()
	appendOK(t, p, spec{pid: -1, n: 2})
	appendOK(t, p, spec{pid: 10, seq: 0, n: 2, txn: true}) // 2-3, open
	guard := p.TxnGuard(10)
	if err := p.TruncateTo(2); err != nil {
		t.Fatal(err)
	}
	if p.OpenTxn(10) != -1 {
		t.Fatal("the cut transaction is still open")
	}
	raw, h := batch(spec{pid: 10, seq: 0, n: 2, txn: true})
	if _, err := p.AppendGuarded(raw, h, guard); !errors.Is(err, producerstate.ErrInvalidTxnState) {
		t.Fatalf("a batch verified before the truncation opened a transaction: %v", err)
	}
	if _, err := p.AppendGuarded(raw, h, p.TxnGuard(10)); err != nil {
		t.Fatalf("freshly verified batch refused: %v", err)
	}
}

// TestResetToPartition: a follower's partition starts over at its
// leader's start offset.
func TestResetToPartition(t *testing.T) {
	mem := vfs.NewMem()
	p := open(t, mem)
	appendOK(t, p, spec{pid: 7, seq: 0, n: 3})
	appendOK(t, p, spec{pid: -1, n: 2})
	if err := p.ResetTo(100); err != nil {
		t.Fatal(err)
	}
	expectOffsets(t, p, "after the reset", 100, 100, 100, 100)
	if res := appendOK(t, p, spec{pid: -1, n: 2}); res.BaseOffset != 100 {
		t.Fatalf("append at %d after reset to 100", res.BaseOffset)
	}
	if err := p.ResetTo(40); err != nil {
		t.Fatal(err)
	}
	expectOffsets(t, p, "after a reset below", 40, 40, 40, 40)
	p.Close()
	q := open(t, mem)
	defer q.Close()
	expectOffsets(t, q, "reopened", 40, 40, 40, 40)
}

// TestTruncateStateFailure: when the producer state cannot be rebuilt
// after a truncation, the partition refuses appends instead of checking
// them against a wrong state.
func TestTruncateStateFailure(t *testing.T) {
	ff := vfs.NewFaulty(vfs.NewMem())
	p := open(t, ff)
	defer p.Close()
	appendOK(t, p, spec{pid: 7, seq: 0, n: 2})
	appendOK(t, p, spec{pid: 7, seq: 2, n: 2})
	ff.FailOnce(vfs.OpReadDir, 0, nil)
	if err := p.TruncateTo(2); !errors.Is(err, ErrOffline) {
		t.Fatalf("truncation with a failing state rebuild: %v", err)
	}
	raw, h := batch(spec{pid: 7, seq: 2, n: 2})
	if _, err := p.Append(raw, h); !errors.Is(err, ErrOffline) {
		t.Fatalf("append after a failed rebuild: %v", err)
	}
}

// TestCrashAfterLogTruncation: a crash after the log was cut but before
// the producer state followed leaves a snapshot above the end; the next
// open deletes it, so it is never taken for the state of batches appended
// there later.
func TestCrashAfterLogTruncation(t *testing.T) {
	mem := vfs.NewMem()
	p := open(t, mem)
	for i := int32(0); i < 5; i++ {
		appendOK(t, p, spec{pid: 7, seq: 2 * i, n: 2}) // 0-9
	}
	if err := p.takeSnapshot(); err != nil { // at 10
		t.Fatal(err)
	}
	if err := p.log.TruncateTo(4); err != nil { // the partition's state does not follow
		t.Fatal(err)
	}
	crashed := mem.Crash(nil)
	q := open(t, crashed)
	if offs, _ := q.snapshots(); len(offs) != 0 {
		t.Fatalf("snapshots above the end survived the open: %v", offs)
	}
	// Another producer's batches take the offsets the snapshot described.
	for i := int32(0); i < 4; i++ {
		appendOK(t, q, spec{pid: 8, seq: 2 * i, n: 2}) // 4-11
	}
	r := open(t, crashed.Crash(nil))
	defer r.Close()
	expectDuplicate(t, r, spec{pid: 7, seq: 2, n: 2}, 2)
	if res := appendOK(t, r, spec{pid: 7, seq: 4, n: 2}); res.Duplicate || res.BaseOffset != 12 {
		t.Fatalf("producer 7's first batch above the cut: %+v", res)
	}
	expectDuplicate(t, r, spec{pid: 8, seq: 6, n: 2}, 10)
}
