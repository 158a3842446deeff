package quota

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

func TestFreshBucketMayBurstOneWindowThenIsThrottled(t *testing.T) {
	tr := NewTracker(DefaultWindow, DefaultWindow.span())
	b := Entity{ClientID: Name("c")}
	// Kafka measures a fresh rate over at least 10 samples of 1 s, so
	// 10 × the quota at once is exactly the quota: not throttled.
	if d := tr.Record(b, 100, 1000, t0); d != 0 {
		t.Fatalf("burst of 10 s worth of quota throttled %v, want 0", d)
	}
	// One byte more is over: (100.1 − 100) / 100 × 10 s = 10 ms.
	if d := tr.Record(b, 100, 1, t0); d != 10*time.Millisecond {
		t.Fatalf("throttle after exceeding = %v, want 10ms", d)
	}
	// Twice the quota: (200 − 100) / 100 × 10 s.
	tr2 := NewTracker(DefaultWindow, DefaultWindow.span())
	if d := tr2.Record(b, 100, 2000, t0); d != 10*time.Second {
		t.Fatalf("throttle at twice the quota = %v, want 10s", d)
	}
	// Far over: capped at the whole window.
	if d := tr2.Record(b, 100, 1e9, t0); d != 11*time.Second {
		t.Fatalf("throttle far over = %v, want the 11s cap", d)
	}
}

func TestSamplesLeaveTheWindow(t *testing.T) {
	tr := NewTracker(DefaultWindow, 0)
	b := Entity{ClientID: Name("c")}
	tr.Record(b, 100, 5000, t0)
	if r := tr.Rate(b, t0); r != 500 {
		t.Fatalf("rate = %v, want 500", r)
	}
	if r := tr.Rate(b, t0.Add(11*time.Second)); r != 0 {
		t.Fatalf("rate after a whole window idle = %v, want 0", r)
	}
	tr.Record(b, 100, 100, t0.Add(11*time.Second))
	tr.Unrecord(b, 100, t0.Add(11*time.Second))
	if r := tr.Rate(b, t0.Add(11*time.Second)); r != 0 {
		t.Fatalf("rate after unrecord = %v, want 0", r)
	}
}

// TestClientHonouringThrottleAchievesTheQuota simulates a producer that
// sends as fast as allowed: after each throttle it waits it out. Over a
// minute of fake time its rate converges on the quota.
func TestClientHonouringThrottleAchievesTheQuota(t *testing.T) {
	for _, bound := range []float64{1 << 20, 50_000} {
		tr := NewTracker(DefaultWindow, DefaultWindow.span())
		b := Entity{User: Name(Anonymous), ClientID: Name("p")}
		now, sent, throttled := t0, 0.0, 0
		chunk := bound / 20
		for now.Before(t0.Add(60 * time.Second)) {
			d := tr.Record(b, bound, chunk, now)
			sent += chunk
			if d > 0 {
				throttled++
			}
			now = now.Add(max(d, time.Millisecond))
		}
		got := sent / 60
		if got < 0.9*bound || got > 1.25*bound {
			t.Errorf("quota %v: achieved %v/s over 60s, want within [0.9, 1.25] of the quota", bound, got)
		}
		if throttled == 0 {
			t.Errorf("quota %v: never throttled", bound)
		}
	}
}

func TestTrackerBucketsAreBounded(t *testing.T) {
	tr := NewTracker(DefaultWindow, 0)
	tr.MaxBuckets = 3
	for i := range 10 {
		tr.Record(Entity{ClientID: Name(fmt.Sprint(i))}, 1, 1, t0)
	}
	if n := tr.Len(); n > 4 {
		t.Fatalf("%d buckets kept, want at most 3 + the overflow bucket", n)
	}
	// Idle buckets make room again.
	later := t0.Add(DefaultWindow.span())
	tr.Record(Entity{ClientID: Name("late")}, 1e9, 1, later)
	if n := tr.Len(); n != 1 {
		t.Fatalf("%d buckets after the others idled a whole window, want 1", n)
	}
	if r := tr.Rate(Entity{ClientID: Name("late")}, later); r == 0 {
		t.Fatalf("the new bucket has its own rate: got 0")
	}
}

func TestResolvePrecedence(t *testing.T) {
	u, c := Anonymous, "app"
	levels := []Entity{
		{User: Name(u), ClientID: Name(c)},
		{User: Name(u), ClientID: DefaultPart},
		{User: Name(u)},
		{User: DefaultPart, ClientID: Name(c)},
		{User: DefaultPart, ClientID: DefaultPart},
		{User: DefaultPart},
		{ClientID: Name(c)},
		{ClientID: DefaultPart},
	}
	buckets := []Entity{
		{User: Name(u), ClientID: Name(c)}, {User: Name(u), ClientID: Name(c)}, {User: Name(u)},
		{User: Name(u), ClientID: Name(c)}, {User: Name(u), ClientID: Name(c)}, {User: Name(u)},
		{ClientID: Name(c)}, {ClientID: Name(c)},
	}
	// With levels i.. set, level i wins.
	for i := range levels {
		s := Set{}
		for j := i; j < len(levels); j++ {
			s[levels[j]] = map[string]float64{ProducerByteRate: float64(j + 1)}
		}
		bound, bucket, ok := s.Resolve(ProducerByteRate, u, c)
		if !ok || bound != float64(i+1) || bucket != buckets[i] {
			t.Errorf("levels %d..: got (%v, %v, %v), want (%d, %v)", i+1, bound, bucket, ok, i+1, buckets[i])
		}
	}
	// Keys resolve independently: a more specific entity without the key
	// does not hide a less specific one that has it.
	s := Set{
		{ClientID: Name(c)}:       {ProducerByteRate: 1},
		{ClientID: DefaultPart}:   {ConsumerByteRate: 2},
		{ClientID: Name("other")}: {ConsumerByteRate: 3},
	}
	if b, _, ok := s.Resolve(ConsumerByteRate, u, c); !ok || b != 2 {
		t.Errorf("consumer quota = %v, %v; want the client default 2", b, ok)
	}
	if _, _, ok := s.Resolve(RequestPercentage, u, c); ok {
		t.Errorf("request_percentage resolved with none set")
	}
	// A named entity for someone else does not apply.
	if b, _, _ := s.Resolve(ConsumerByteRate, u, "other"); b != 3 {
		t.Errorf("other's consumer quota = %v, want 3", b)
	}
}

func TestManagerMetersOnlyQuotaedClients(t *testing.T) {
	m := NewManager(DefaultWindow)
	if d := m.Record(Produce, Anonymous, "free", 1e12, t0); d != 0 {
		t.Fatalf("throttled %v with no quotas", d)
	}
	m.SetQuotas(Set{{ClientID: DefaultPart}: {ProducerByteRate: 10}})
	if d := m.Record(Produce, Anonymous, "a", 1000, t0); d == 0 {
		t.Fatalf("client over the default quota not throttled")
	}
	// Each client id has its own bucket under the default.
	if d := m.Record(Produce, Anonymous, "b", 100, t0); d != 0 {
		t.Fatalf("client b throttled %v for client a's bytes", d)
	}
	if d := m.Record(Fetch, Anonymous, "a", 1e12, t0); d != 0 {
		t.Fatalf("fetch throttled %v under a produce-only quota", d)
	}
	m.SetQuotas(Set{{ClientID: DefaultPart}: {RequestPercentage: 50}})
	// 0.5 s of handler time per second is the quota; 10 s of it at once is
	// (100 − 50) / 50 × 10 s, capped at one sample: 1 s.
	if d := m.Record(Request, Anonymous, "a", PercentOf(10*time.Second), t0); d != time.Second {
		t.Fatalf("request throttle = %v, want the 1s cap", d)
	}
}

func TestParseEntityAndValues(t *testing.T) {
	name := func(s string) *string { return &s }
	bad := []struct {
		cs   []Component
		want string
	}{
		{nil, "Invalid empty client quota entity"},
		{[]Component{{TypeUser, name("a")}, {TypeUser, nil}}, "duplicate entity entry user"},
		{[]Component{{"group", name("g")}}, "Unhandled client quota entity type: group"},
		{[]Component{{TypeIP, name("1.2.3.4")}}, "Unhandled client quota entity type: ip"},
		{[]Component{{TypeClientID, name("")}}, "Empty client-id not supported"},
		{[]Component{{TypeClientID, name(strings.Repeat("x", MaxNameLen+1))}}, "at most 1024"},
	}
	for _, b := range bad {
		if _, err := ParseEntity(b.cs); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("ParseEntity(%v) = %v, want %q", b.cs, err, b.want)
		}
	}
	e, err := ParseEntity([]Component{{TypeClientID, nil}, {TypeUser, name("u")}})
	if err != nil || e != (Entity{User: Name("u"), ClientID: DefaultPart}) {
		t.Fatalf("ParseEntity = %v, %v", e, err)
	}
	for _, v := range []struct {
		key  string
		v    float64
		want string
	}{
		{"bogus", 1, "Invalid configuration key bogus"},
		{ProducerByteRate, -1, "Quota producer_byte_rate must be greater than 0"},
		{ConsumerByteRate, 0, "Quota consumer_byte_rate must be greater than 0"},
		{ProducerByteRate, 1.5, "producer_byte_rate cannot be a fractional value."},
		{RequestPercentage, math.NaN(), "must be a finite number"},
		{RequestPercentage, math.Inf(1), "must be a finite number"},
	} {
		if err := ValidateValue(v.key, v.v); err == nil || !strings.Contains(err.Error(), v.want) {
			t.Errorf("ValidateValue(%s, %v) = %v, want %q", v.key, v.v, err, v.want)
		}
	}
	for _, ok := range []struct {
		key string
		v   float64
	}{{ProducerByteRate, 1048576}, {RequestPercentage, 12.5}, {ControllerMutationRate, 0.5}} {
		if err := ValidateValue(ok.key, ok.v); err != nil {
			t.Errorf("ValidateValue(%s, %v) = %v", ok.key, ok.v, err)
		}
	}
}
