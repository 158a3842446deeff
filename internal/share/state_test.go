package share

import (
	"errors"
	"math"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

// acquireN offers offsets from..to-1 to member and returns the acquired
// ranges.
func acquireN(p *Partition, member string, from, to int64, maxRecords, maxLocks, limit int, lock time.Time) []AcquiredRange {
	a := p.Acquire(member, lock, maxRecords, maxLocks, limit)
	for off := from; off < to && !a.Full(off); off++ {
		a.Offer(off)
	}
	a.Done()
	return a.Ranges
}

func wantState(t *testing.T, p *Partition, off int64, st RecordState, count int16) {
	t.Helper()
	if gotSt, gotCount := p.State(off); gotSt != st || gotCount != count {
		t.Fatalf("offset %d: state %d count %d, want state %d count %d", off, gotSt, gotCount, st, count)
	}
}

func TestAcknowledgeAcceptReleaseReject(t *testing.T) {
	p := &Partition{}
	p.Reset(0)
	got := acquireN(p, "a", 0, 10, 100, 100, 5, t0.Add(time.Minute))
	if len(got) != 1 || got[0] != (AcquiredRange{0, 9, 1}) {
		t.Fatalf("acquired %+v, want one range 0-9 at count 1", got)
	}
	if err := p.Acknowledge("a", 0, 4, []int8{AckAccept}, 5, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Acknowledge("a", 5, 6, []int8{AckRelease, AckReject}, 5, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if p.SPSO != 5 {
		t.Fatalf("SPSO %d after accepting 0-4, want 5", p.SPSO)
	}
	wantState(t, p, 5, Available, 1)
	wantState(t, p, 6, Archived, 1)
	wantState(t, p, 7, Acquired, 1)
	// A redelivery of 5 counts 2; 6 is never handed out again.
	got = acquireN(p, "b", 5, 7, 100, 100, 5, t0.Add(time.Minute))
	if len(got) != 1 || got[0] != (AcquiredRange{5, 5, 2}) {
		t.Fatalf("redelivery %+v, want offset 5 at count 2", got)
	}
}

func TestAcknowledgeRefusesWhatMemberDoesNotHold(t *testing.T) {
	p := &Partition{}
	p.Reset(100)
	acquireN(p, "a", 100, 105, 100, 100, 5, t0.Add(time.Minute))
	cases := []struct {
		name        string
		member      string
		first, last int64
		types       []int8
	}{
		{"other member", "b", 100, 100, []int8{AckAccept}},
		{"below SPSO", "a", 99, 100, []int8{AckAccept}},
		{"past SPEO", "a", 104, 105, []int8{AckAccept}},
		{"huge range", "a", 0, math.MaxInt64, []int8{AckAccept}},
	}
	for _, tc := range cases {
		if err := p.Acknowledge(tc.member, tc.first, tc.last, tc.types, 5, time.Time{}); !errors.Is(err, ErrInvalidRecordState) {
			t.Errorf("%s: %v, want ErrInvalidRecordState", tc.name, err)
		}
	}
	// Accepting twice: the second finds the record no longer acquired.
	if err := p.Acknowledge("a", 100, 100, []int8{AckAccept}, 5, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Acknowledge("a", 100, 100, []int8{AckAccept}, 5, time.Time{}); !errors.Is(err, ErrInvalidRecordState) {
		t.Fatalf("second accept: %v, want ErrInvalidRecordState", err)
	}
	for _, bad := range [][]int8{{}, {9}, {1, 1, 1}} {
		if err := p.Acknowledge("a", 101, 102, bad, 5, time.Time{}); !ErrInvalidBatch(err) {
			t.Errorf("types %v: %v, want an invalid batch", bad, err)
		}
	}
	// Nothing changed by the refused batches.
	for off := int64(101); off < 105; off++ {
		wantState(t, p, off, Acquired, 1)
	}
}

func TestDeliveryCountLimitArchives(t *testing.T) {
	const limit = 3
	p := &Partition{}
	p.Reset(0)
	for i := 1; i <= limit; i++ {
		got := acquireN(p, "a", 0, 1, 10, 10, limit, t0.Add(time.Minute))
		if len(got) != 1 || got[0].Count != int16(i) {
			t.Fatalf("delivery %d: acquired %+v", i, got)
		}
		if err := p.Acknowledge("a", 0, 0, []int8{AckRelease}, limit, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	if p.SPSO != 1 {
		t.Fatalf("after %d releases SPSO %d, want 1 (record archived)", limit, p.SPSO)
	}
	if got := acquireN(p, "a", 0, 1, 10, 10, limit, t0.Add(time.Minute)); len(got) != 0 {
		t.Fatalf("archived record acquired again: %+v", got)
	}
}

func TestLockExpiryRedeliversThenArchives(t *testing.T) {
	const limit = 2
	p := &Partition{}
	p.Reset(0)
	acquireN(p, "a", 0, 2, 10, 10, limit, t0.Add(time.Second))
	if p.Expire(t0, limit) {
		t.Fatal("locks expired before their deadline")
	}
	if !p.Expire(t0.Add(time.Second), limit) {
		t.Fatal("locks did not expire at their deadline")
	}
	wantState(t, p, 0, Available, 1)
	if err := p.Acknowledge("a", 0, 0, []int8{AckAccept}, limit, time.Time{}); !errors.Is(err, ErrInvalidRecordState) {
		t.Fatalf("accept after the lock expired: %v, want ErrInvalidRecordState", err)
	}
	got := acquireN(p, "b", 0, 2, 10, 10, limit, t0.Add(2*time.Second))
	if len(got) != 1 || got[0] != (AcquiredRange{0, 1, 2}) {
		t.Fatalf("redelivery %+v", got)
	}
	p.Expire(t0.Add(2*time.Second), limit)
	if p.SPSO != 2 || p.InFlight() != 0 {
		t.Fatalf("after the last allowed delivery expired: SPSO %d in flight %d, want 2 and 0", p.SPSO, p.InFlight())
	}
}

func TestRenewExtendsLock(t *testing.T) {
	p := &Partition{}
	p.Reset(0)
	acquireN(p, "a", 0, 1, 10, 10, 5, t0.Add(time.Second))
	if err := p.Acknowledge("a", 0, 0, []int8{AckRenew}, 5, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p.Expire(t0.Add(30*time.Second), 5) {
		t.Fatal("renewed lock expired at its old deadline")
	}
	wantState(t, p, 0, Acquired, 1)
}

func TestWindowBoundedByMaxRecordLocks(t *testing.T) {
	p := &Partition{}
	p.Reset(0)
	got := acquireN(p, "a", 0, 1000, 1000, 100, 5, t0.Add(time.Minute))
	if p.InFlight() != 100 || len(got) != 1 || got[0].Last != 99 {
		t.Fatalf("window %d, acquired %+v; want 100 records in flight", p.InFlight(), got)
	}
	// Skip (control records) cannot grow it past the bound either.
	a := p.Acquire("a", t0.Add(time.Minute), 10, 100, 5)
	if a.Skip(100) {
		t.Fatal("Skip extended a full window")
	}
	// Settling the head makes room again.
	if err := p.Acknowledge("a", 0, 9, []int8{AckAccept}, 5, time.Time{}); err != nil {
		t.Fatal(err)
	}
	got = acquireN(p, "a", 100, 1000, 1000, 100, 5, t0.Add(time.Minute))
	if len(got) != 1 || got[0] != (AcquiredRange{100, 109, 1}) {
		t.Fatalf("after settling 10: acquired %+v, want 100-109", got)
	}
}

func TestReleaseMemberAndGapsInWindow(t *testing.T) {
	p := &Partition{}
	p.Reset(0)
	a := p.Acquire("a", t0.Add(time.Minute), 10, 100, 5)
	a.Offer(0)
	a.Skip(1) // a control record
	a.Offer(3)
	a.Done()
	wantState(t, p, 1, Archived, 0)
	wantState(t, p, 2, Archived, 0) // a gap in the log
	if len(a.Ranges) != 2 {
		t.Fatalf("ranges %+v, want 0 and 3 separately", a.Ranges)
	}
	if !p.ReleaseMember("a", 5) {
		t.Fatal("nothing released")
	}
	wantState(t, p, 0, Available, 1)
	wantState(t, p, 3, Available, 1)
}

func TestRecordRoundTrip(t *testing.T) {
	p := &Partition{}
	p.Reset(40)
	acquireN(p, "a", 40, 50, 100, 100, 3, t0.Add(time.Minute))
	if err := p.Acknowledge("a", 41, 43, []int8{AckAccept, AckReject, AckRelease}, 3, time.Time{}); err != nil {
		t.Fatal(err)
	}
	k := partitionKey{Group: "g/with\"odd", TopicID: [16]byte{1, 2, 3}, Partition: 7}
	d, err := decodeRecord(encodePartitionKey(k), encodePartition(p), 3)
	if err != nil {
		t.Fatal(err)
	}
	if d.kind != 'p' || d.part != k {
		t.Fatalf("decoded key %+v", d.part)
	}
	q := d.window
	// Acquired records come back Available with their delivery count.
	wantState(t, q, 40, Available, 1)
	wantState(t, q, 41, Acknowledged, 1)
	wantState(t, q, 42, Archived, 1)
	wantState(t, q, 43, Available, 1)
	wantState(t, q, 49, Available, 1)
	if q.SPSO != 40 || q.SPEO() != 50 {
		t.Fatalf("window [%d, %d), want [40, 50)", q.SPSO, q.SPEO())
	}
	// At the limit, an Acquired record comes back Archived.
	d, err = decodeRecord(encodePartitionKey(k), []byte(`{"spso":5,"runs":[[1,3,2],[0,1,1]]}`), 3)
	if err != nil {
		t.Fatal(err)
	}
	if d.window.SPSO != 7 {
		t.Fatalf("records acquired at the limit not archived on replay: SPSO %d, want 7", d.window.SPSO)
	}
}

func TestDecodeRecordRejectsMalformed(t *testing.T) {
	key := encodePartitionKey(partitionKey{Group: "g", Partition: 0})
	for _, tc := range []struct{ key, value string }{
		{`["p","g"]`, `{}`},
		{`["x","g"]`, `{}`},
		{`["p","g","zz",0]`, `{"spso":0,"runs":[]}`},
		{`["p","g","00000000000000000000000000000000",-1]`, `{"spso":0,"runs":[]}`},
		{string(key), `{"spso":-1,"runs":[]}`},
		{string(key), `{"spso":0,"runs":[[3,0,1]]}`},
		{string(key), `{"spso":0,"runs":[[0,0,0]]}`},
		{string(key), `{"spso":0,"runs":[[0,0,2000000]]}`},
		{string(key), `{"spso":0,"runs":[[0,-1,1]]}`},
		{string(key), `not json`},
		{`["c","g"]`, `[]`},
		{`["g","g"]`, `7`},
	} {
		if _, err := decodeRecord([]byte(tc.key), []byte(tc.value), 5); err == nil {
			t.Errorf("key %s value %s decoded without error", tc.key, tc.value)
		}
	}
}

// FuzzDecodeRecord: whatever bytes __share_group_state holds, decoding
// never panics, never allocates past its bounds, and a decoded window
// re-encodes to a record that decodes to the same window.
func FuzzDecodeRecord(f *testing.F) {
	p := &Partition{}
	p.Reset(3)
	acquireN(p, "a", 3, 8, 100, 100, 5, t0)
	f.Add(encodePartitionKey(partitionKey{Group: "g", Partition: 1}), encodePartition(p))
	f.Add(encodeConfigKey("g"), encodeConfig(map[string]string{"share.auto.offset.reset": "earliest"}))
	f.Add([]byte(`["g","x"]`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		d, err := decodeRecord(key, value, 5)
		if err != nil || d.window == nil {
			return
		}
		again, err := decodeRecord(key, encodePartition(d.window), 5)
		if err != nil {
			t.Fatalf("re-encoded window does not decode: %v", err)
		}
		if again.window.SPSO != d.window.SPSO || again.window.SPEO() != d.window.SPEO() {
			t.Fatalf("round trip changed the window: [%d,%d) → [%d,%d)", d.window.SPSO, d.window.SPEO(), again.window.SPSO, again.window.SPEO())
		}
	})
}
