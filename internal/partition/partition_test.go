package partition

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type spec struct {
	pid   int64
	epoch int16
	seq   int32
	n     int
	txn   bool
}

// batch builds a valid produced batch with n records.
func batch(s spec) ([]byte, record.Header) {
	var recs []byte
	for i := 0; i < s.n; i++ {
		r := kmsg.NewRecord()
		r.OffsetDelta = int32(i)
		r.Value = []byte{byte(i)}
		body := r.AppendTo(nil)[1:]
		recs = binary.AppendVarint(recs, int64(len(body)))
		recs = append(recs, body...)
	}
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.LastOffsetDelta = int32(s.n - 1)
	b.FirstTimestamp, b.MaxTimestamp = 1000, 1000
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = s.pid, s.epoch, s.seq
	if s.pid < 0 {
		b.ProducerEpoch, b.FirstSequence = -1, -1
	}
	if s.txn {
		b.Attributes = record.AttrTransactional
	}
	b.NumRecords = int32(s.n)
	b.Records = recs
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	h, err := record.Validate(raw)
	if err != nil {
		panic(err)
	}
	return raw, h
}

func open(t *testing.T, fs vfs.FS) *Partition {
	t.Helper()
	p, err := Open(fs, "/data/t-0", "t", 0, log.DefaultConfig(), quiet, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func appendOK(t *testing.T, p *Partition, s spec) AppendResult {
	t.Helper()
	raw, h := batch(s)
	res, err := p.Append(raw, h)
	if err != nil {
		t.Fatalf("append %+v: %v", s, err)
	}
	if err := p.WaitDurable(p.LogEndOffset()); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestIdempotentDedupAndFencing(t *testing.T) {
	p := open(t, vfs.NewMem())
	defer p.Close()
	first := appendOK(t, p, spec{pid: 7, seq: 0, n: 3})
	appendOK(t, p, spec{pid: -1, n: 2}) // a plain producer in between
	second := appendOK(t, p, spec{pid: 7, seq: 3, n: 2})
	if first.BaseOffset != 0 || second.BaseOffset != 5 {
		t.Fatalf("offsets %d, %d", first.BaseOffset, second.BaseOffset)
	}
	end := p.LogEndOffset()
	for _, s := range []spec{{pid: 7, seq: 0, n: 3}, {pid: 7, seq: 3, n: 2}} {
		raw, h := batch(s)
		res, err := p.Append(raw, h)
		if err != nil || !res.Duplicate {
			t.Fatalf("retry %+v: %+v %v", s, res, err)
		}
	}
	if dupRes, _ := p.Append(batch(spec{pid: 7, seq: 0, n: 3})); dupRes.BaseOffset != 0 || p.LogEndOffset() != end {
		t.Fatalf("duplicate appended or wrong offset: %+v, end %d→%d", dupRes, end, p.LogEndOffset())
	}
	cases := []struct {
		s    spec
		want error
	}{
		{spec{pid: 7, seq: 9, n: 1}, producerstate.ErrOutOfOrderSequence},
		{spec{pid: 7, epoch: 1, seq: 4, n: 1}, producerstate.ErrOutOfOrderSequence},
		{spec{pid: 8, seq: 5, n: 1}, producerstate.ErrUnknownProducer},
	}
	for _, c := range cases {
		raw, h := batch(c.s)
		if _, err := p.Append(raw, h); !errors.Is(err, c.want) {
			t.Errorf("%+v: got %v, want %v", c.s, err, c.want)
		}
	}
	appendOK(t, p, spec{pid: 7, epoch: 1, seq: 0, n: 1}) // new epoch restarts at 0
	raw, h := batch(spec{pid: 7, epoch: 0, seq: 5, n: 1})
	if _, err := p.Append(raw, h); !errors.Is(err, producerstate.ErrInvalidEpoch) {
		t.Fatalf("zombie epoch: %v", err)
	}
}

// TestProducerStateSurvivesCrash: after a crash (unsynced data may vanish)
// and after retention deleted every segment the batches were in, a retry
// of an acknowledged batch is still recognised as a duplicate.
func TestProducerStateSurvivesCrash(t *testing.T) {
	for seed := int64(0); seed < 20; seed++ {
		mem := vfs.NewMem()
		p := open(t, mem)
		acked := 0
		for i := 0; i < 10; i++ {
			appendOK(t, p, spec{pid: 3, seq: int32(i * 2), n: 2})
			acked++
		}
		// Unacknowledged tail that the crash may or may not keep.
		raw, h := batch(spec{pid: 3, seq: 20, n: 2})
		if _, err := p.Append(raw, h); err != nil {
			t.Fatal(err)
		}
		crashed := mem.Crash(rand.New(rand.NewSource(seed)))
		q := open(t, crashed)
		raw, h = batch(spec{pid: 3, seq: 18, n: 2}) // the last acknowledged batch
		res, err := q.Append(raw, h)
		if err != nil || !res.Duplicate || res.BaseOffset != 18 {
			t.Fatalf("seed %d: retry after crash: %+v %v", seed, res, err)
		}
		if _, err := q.DeleteRecordsBefore(q.HighWatermark()); err != nil {
			t.Fatal(err)
		}
		// Crash again without a clean close: only the snapshot taken before
		// the segments were deleted can remember producer 3.
		r := open(t, crashed.Crash(nil))
		next := int32(20)
		if r.LogEndOffset() > 20 { // the unacknowledged batch survived
			next = 22
		}
		appendOK(t, r, spec{pid: 3, seq: next, n: 1})
		raw, h = batch(spec{pid: 3, seq: 40, n: 1})
		if _, err := r.Append(raw, h); !errors.Is(err, producerstate.ErrOutOfOrderSequence) {
			t.Fatalf("seed %d: state lost after retention: gap accepted (%v)", seed, err)
		}
		r.Close()
	}
}

func TestTransactionsLSOAndAbortedIndex(t *testing.T) {
	mem := vfs.NewMem()
	p := open(t, mem)
	appendOK(t, p, spec{pid: -1, n: 2})                    // 0-1 plain
	appendOK(t, p, spec{pid: 10, seq: 0, n: 2, txn: true}) // 2-3 txn A
	appendOK(t, p, spec{pid: 11, seq: 0, n: 1, txn: true}) // 4 txn B
	appendOK(t, p, spec{pid: -1, n: 1})                    // 5 plain
	if lso, hw := p.LastStableOffset(), p.HighWatermark(); lso != 2 || hw != 6 {
		t.Fatalf("lso %d hw %d, want 2 and 6", lso, hw)
	}
	if err := p.WriteTxnMarker(10, 0, false, 0); err != nil { // abort A at 6
		t.Fatal(err)
	}
	if lso := p.LastStableOffset(); lso != 4 {
		t.Fatalf("after aborting A lso %d, want 4 (B still open)", lso)
	}
	if err := p.WriteTxnMarker(11, 0, true, 0); err != nil { // commit B at 7
		t.Fatal(err)
	}
	if lso, hw := p.LastStableOffset(), p.HighWatermark(); lso != hw || hw != 8 {
		t.Fatalf("lso %d hw %d, want both 8", lso, hw)
	}
	want := []producerstate.AbortedTxn{{ProducerID: 10, FirstOffset: 2, LastOffset: 6}}
	check := func(p *Partition, when string) {
		got := p.AbortedTxns(0, p.HighWatermark())
		if len(got) != 1 || got[0] != want[0] {
			t.Fatalf("%s: aborted %v, want %v", when, got, want)
		}
		if got := p.AbortedTxns(7, 8); len(got) != 0 {
			t.Fatalf("%s: aborted txn reported for a fetch after its marker: %v", when, got)
		}
	}
	check(p, "live")
	// A marker from a stale epoch is a zombie's.
	appendOK(t, p, spec{pid: 10, epoch: 1, seq: 0, n: 1, txn: true})
	if err := p.WriteTxnMarker(10, 0, true, 0); !errors.Is(err, producerstate.ErrInvalidEpoch) {
		t.Fatalf("stale marker: %v", err)
	}
	p.WriteTxnMarker(10, 1, false, 0)
	want = append(want, producerstate.AbortedTxn{ProducerID: 10, FirstOffset: 8, LastOffset: 9})
	crashed := mem.Crash(nil)
	q := open(t, crashed)
	defer q.Close()
	if got := q.AbortedTxns(0, q.HighWatermark()); len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("after crash: aborted %v, want %v", got, want)
	}
	if q.LastStableOffset() != q.HighWatermark() {
		t.Fatalf("after crash: lso %d hw %d", q.LastStableOffset(), q.HighWatermark())
	}
}

// TestVerificationGuard: a transactional batch verified before its
// producer's transaction ended must not open a new transaction afterwards.
func TestVerificationGuard(t *testing.T) {
	p := open(t, vfs.NewMem())
	defer p.Close()
	appendOK(t, p, spec{pid: 4, seq: 0, n: 1, txn: true})
	guard := p.TxnGuard(4) // verification of the next batch starts
	if err := p.WriteTxnMarker(4, 0, true, 0); err != nil {
		t.Fatal(err)
	}
	raw, h := batch(spec{pid: 4, seq: 1, n: 1, txn: true})
	if _, err := p.AppendGuarded(raw, h, guard); !errors.Is(err, producerstate.ErrInvalidTxnState) {
		t.Fatalf("late batch opened a transaction: %v", err)
	}
	if lso, hw := p.LastStableOffset(), p.HighWatermark(); lso != hw {
		t.Fatalf("lso %d stuck below hw %d", lso, hw)
	}
	if _, err := p.AppendGuarded(raw, h, p.TxnGuard(4)); err != nil {
		t.Fatalf("freshly verified batch refused: %v", err)
	}
}

// TestBackgroundWorkStopsAtDelete: acks=0 producers schedule background
// fsyncs while the topic is deleted; none may start once Delete waits for
// them. SyncSoon used to check "closed" and then start its goroutine, which
// raced Delete's wait (found by the race detector in the bench tests); this
// stresses that window with slow fsyncs, for the race detector to judge,
// and checks that no fsync reaches a partition Delete has returned from.
func TestBackgroundWorkStopsAtDelete(t *testing.T) {
	for i := 0; i < 50; i++ {
		fs := vfs.NewFaulty(vfs.NewMem())
		var deleted atomic.Bool
		fs.SetHook(func(op vfs.Op, name string) error {
			if op == vfs.OpSync {
				if deleted.Load() {
					t.Errorf("fsync of %s after Delete returned", name)
				}
				time.Sleep(100 * time.Microsecond)
			}
			return nil
		})
		p := open(t, fs)
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Go(func() {
				for j := 0; j < 20; j++ {
					raw, h := batch(spec{pid: -1, n: 1})
					if _, err := p.Append(raw, h); err != nil {
						return // closed under us: expected
					}
					p.SyncSoon()
				}
			})
		}
		time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
		if gone, err := p.Delete(); err != nil || !gone {
			t.Fatal(gone, err)
		}
		deleted.Store(true)
		wg.Wait()
	}
}

// TestMarkerIfOpen: a marker requested over the wire ends only the
// transaction it was checked against — not a producer with nothing open
// (the marker would bump its epoch and fence it), nor a transaction that
// started after the check.
func TestMarkerIfOpen(t *testing.T) {
	p := open(t, vfs.NewMem())
	defer p.Close()
	appendOK(t, p, spec{pid: 3, seq: 0, n: 1}) // idempotent, nothing open
	if err := p.WriteTxnMarkerIfOpen(3, 1, false, 0, p.OpenTxn(3)); !errors.Is(err, producerstate.ErrInvalidTxnState) {
		t.Fatalf("marker for a producer with nothing open: %v", err)
	}
	appendOK(t, p, spec{pid: 3, seq: 1, n: 1}) // still epoch 0: not fenced
	appendOK(t, p, spec{pid: 4, seq: 0, n: 1, txn: true})
	first := p.OpenTxn(4)
	if err := p.WriteTxnMarker(4, 0, true, 0); err != nil { // the coordinator ends it
		t.Fatal(err)
	}
	appendOK(t, p, spec{pid: 4, seq: 1, n: 1, txn: true}) // the next one starts
	if err := p.WriteTxnMarkerIfOpen(4, 0, false, 0, first); !errors.Is(err, producerstate.ErrInvalidTxnState) {
		t.Fatalf("marker checked against an ended transaction hit the next: %v", err)
	}
	if err := p.WriteTxnMarkerIfOpen(4, 0, false, 0, p.OpenTxn(4)); err != nil {
		t.Fatalf("marker for the open transaction: %v", err)
	}
	if p.OpenTxn(4) != -1 {
		t.Fatal("transaction still open after its marker")
	}
}
