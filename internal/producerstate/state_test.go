package producerstate

import (
	"errors"
	"reflect"
	"testing"

	"github.com/exactly/exactly/internal/record"
)

func hdr(pid int64, epoch int16, seq int32, n int32, base int64, attrs int16) *record.Header {
	return &record.Header{ProducerID: pid, ProducerEpoch: epoch, BaseSequence: seq, LastOffsetDelta: n - 1, NumRecords: n, BaseOffset: base, Attributes: attrs, MaxTimestamp: 1000 + base}
}

func TestKeepsLastFiveBatches(t *testing.T) {
	s := New()
	for i := int32(0); i < 7; i++ {
		h := hdr(1, 0, i, 1, int64(i), 0)
		if dup, err := s.Check(h, 0); dup != nil || err != nil {
			t.Fatalf("batch %d: %v %v", i, dup, err)
		}
		s.Apply(h, -1, 0)
	}
	for i := int32(2); i < 7; i++ {
		if dup, err := s.Check(hdr(1, 0, i, 1, 0, 0), 0); err != nil || dup == nil || dup.BaseOffset != int64(i) {
			t.Fatalf("retry of batch %d: %v %v", i, dup, err)
		}
	}
	// Older than the last five: no longer recognisable, and out of order.
	if _, err := s.Check(hdr(1, 0, 1, 1, 0, 0), 0); err == nil {
		t.Fatal("a retry older than five batches was accepted as new")
	}
}

func TestSequenceWraps(t *testing.T) {
	s := New()
	h := hdr(1, 0, 0, 1, 0, 0)
	s.Apply(h, -1, 0)
	s.producers[1].Batches[0].LastSeq = 0x7fffffff
	if _, err := s.Check(hdr(1, 0, 0, 1, 1, 0), 0); err != nil {
		t.Fatalf("sequence after MaxInt32 must wrap to 0: %v", err)
	}
}

func TestNonTransactionalInsideTxnRejected(t *testing.T) {
	s := New()
	s.Apply(hdr(1, 0, 0, 1, 0, record.AttrTransactional), -1, 0)
	if _, err := s.Check(hdr(1, 0, 1, 1, 1, 0), 0); err == nil {
		t.Fatal("non-transactional batch accepted inside an open transaction")
	}
}

func TestAbortedInRangeSortedByFirstOffset(t *testing.T) {
	ab := []AbortedTxn{{1, 10, 20}, {2, 5, 25}, {3, 30, 31}}
	got := AbortedInRange(ab, 21, 40)
	want := []AbortedTxn{{2, 5, 25}, {3, 30, 31}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if got := AbortedInRange(ab, 0, 6); !reflect.DeepEqual(got, []AbortedTxn{{2, 5, 25}}) {
		t.Fatalf("got %v", got)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := New()
	s.Apply(hdr(1, 2, 0, 3, 0, record.AttrTransactional), -1, 0)
	s.Apply(hdr(5, 0, 0, 1, 3, 0), -1, 0)
	s.Apply(hdr(1, 2, -1, 1, 4, record.AttrTransactional|record.AttrControl), 0, 7)
	s.Apply(hdr(1, 2, 3, 1, 5, record.AttrTransactional), -1, 0)
	data := s.Encode(6)
	got, off, err := Decode(data)
	if err != nil || off != 6 {
		t.Fatal(off, err)
	}
	if !reflect.DeepEqual(got.Producers(), s.Producers()) || !reflect.DeepEqual(got.Aborted(), s.Aborted()) {
		t.Fatalf("round trip differs:\n%+v\n%+v", got.Producers(), s.Producers())
	}
	data[len(data)/2] ^= 1
	if _, _, err := Decode(data); err == nil {
		t.Fatal("corrupt snapshot decoded")
	}
}

// FuzzDecode: snapshot files are read from disk after crashes; arbitrary
// bytes must be rejected or decoded, never panic, and what decodes must
// re-encode identically.
func FuzzDecode(f *testing.F) {
	s := New()
	s.Apply(hdr(1, 0, 0, 2, 0, record.AttrTransactional), -1, 0)
	s.Apply(hdr(1, 0, -1, 1, 2, record.AttrTransactional|record.AttrControl), 0, 1)
	f.Add(s.Encode(3))
	f.Add(New().Encode(0))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, off, err := Decode(b)
		if err != nil {
			return
		}
		if again, off2, err := Decode(st.Encode(off)); err != nil || off2 != off || !reflect.DeepEqual(again.Producers(), st.Producers()) {
			t.Fatalf("decoded snapshot does not round-trip: %v", err)
		}
	})
}

// Expiry forgets idle producers without open transactions, never one with
// a transaction open however old.
func TestExpireKeepsOpenTransactions(t *testing.T) {
	s := New()
	s.Apply(hdr(1, 0, 0, 1, 0, 0), -1, 0)                        // idle since 1000
	s.Apply(hdr(2, 0, 0, 1, 1, record.AttrTransactional), -1, 0) // open, since 1001
	s.Apply(hdr(3, 0, 0, 1, 5000, 0), -1, 0)                     // active at 6000
	if n := s.Expire(5000); n != 1 || s.Known(1) || !s.Known(2) || !s.Known(3) {
		t.Fatalf("expired %d; known 1:%v 2:%v 3:%v, want only 1 gone", n, s.Known(1), s.Known(2), s.Known(3))
	}
	if n := s.Expire(1 << 40); n != 1 || !s.Known(2) {
		t.Fatalf("expired %d with everything idle; the open transaction's producer must stay", n)
	}
}

// A full state takes a new producer only by evicting the least recently
// active one without an open transaction, and only if that one is idle
// long enough; replay (Apply alone) evicts the same one.
func TestProducerCap(t *testing.T) {
	s := New()
	s.SetLimits(Limits{MaxProducers: 3, EvictIdleMs: 100})
	s.Apply(hdr(1, 0, 0, 1, 0, record.AttrTransactional), -1, 0) // ts 1000, open
	s.Apply(hdr(2, 0, 0, 1, 10, 0), -1, 0)                       // ts 1010
	s.Apply(hdr(3, 0, 0, 1, 20, 0), -1, 0)                       // ts 1020
	if _, err := s.Check(hdr(4, 0, 0, 1, 30, 0), 1050); !errors.Is(err, ErrTooManyProducers) {
		t.Fatalf("new producer while the oldest idle one is idle 40 ms: %v", err)
	}
	if _, err := s.Check(hdr(2, 0, 1, 1, 30, 0), 1050); err != nil {
		t.Fatalf("a known producer is never refused for the cap: %v", err)
	}
	h := hdr(4, 0, 0, 1, 30, 0)
	if _, err := s.Check(h, 1200); err != nil {
		t.Fatalf("new producer once one is idle 190 ms: %v", err)
	}
	if n := s.Apply(h, -1, 0); n != 1 || s.Known(2) || !s.Known(1) || s.Len() != 3 {
		t.Fatalf("evicted %d, known 1:%v 2:%v, %d producers; want 2 evicted, 1 (open) kept", n, s.Known(1), s.Known(2), s.Len())
	}
}

// A batch stamped in the future counts as activity now: its producer can
// still expire and be evicted.
func TestFutureTimestampsAreCapped(t *testing.T) {
	s := New()
	s.SetLimits(Limits{NowMs: func() int64 { return 5000 }})
	h := hdr(1, 0, 0, 1, 0, 0)
	h.MaxTimestamp = 1 << 50
	s.Apply(h, -1, 0)
	if n := s.Expire(6000); n != 1 {
		t.Fatalf("a producer stamping the future never expires (expired %d)", n)
	}
}
