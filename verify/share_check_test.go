package verify

import (
	"fmt"
	"strings"
	"testing"
)

// shareLimit is the delivery-count limit of the hand-built share histories.
const shareLimit = 4

func newShareHist() *hist {
	b := &hist{}
	b.add(Event{Proc: "verify", Type: EvRun, Topic: tin, Detail: string(Share),
		Values: []string{tout, fmt.Sprintf("%s=%d", shareLimitKey, shareLimit)}})
	return b
}

func (b *hist) shareStart(proc string) {
	b.add(Event{Proc: proc, Type: EvStart, Detail: RoleShare})
}

func (b *hist) shareExit(proc string) {
	b.add(Event{Proc: proc, Type: EvExit, OK: true})
}

// deliver is one poll of one record, its acknowledgement and the answer:
// ok "yes" (confirmed), "no" (error) or "" (none: the consumer died).
func (b *hist) deliver(proc string, p int32, o int64, v string, count int32, ack, ok string) {
	b.add(Event{Proc: proc, Type: EvSharePoll, Topic: tin, Partition: p, Offsets: []int64{o}, Values: []string{v}, Counts: []int32{count}})
	if ack == "" {
		return
	}
	b.add(Event{Proc: proc, Type: EvShareAck, Topic: tin, Partition: p, Offsets: []int64{o}, Counts: []int32{count}, Acks: []string{ack}})
	switch ok {
	case "yes":
		b.add(Event{Proc: proc, Type: EvShareAckResult, Topic: tin, Partition: p, OK: true})
	case "no":
		b.add(Event{Proc: proc, Type: EvShareAckResult, Topic: tin, Partition: p, Error: "connection reset"})
	}
}

func (b *hist) shareOffsets(spso map[int32]int64) {
	b.add(Event{Proc: "verify", Type: EvShareOffsets, Commits: map[string]map[int32]int64{tin: spso}})
}

// cleanShare is a correct share run: a accepted, b released then accepted,
// c rejected, d released up to the limit (archived); the final input log
// holds a, b at 0/0-1 and c, d at 1/0-1 and the group settled everything.
func cleanShare() (*hist, []string) {
	b := newShareHist()
	vs := []string{InputValue("p0.0", 0), InputValue("p0.0", 1), InputValue("p0.0", 2), InputValue("p0.0", 3)}
	b.write("p0.0", tin, 0, 0, vs[0], 0)
	b.write("p0.0", tin, 0, 1, vs[1], 0)
	b.write("p0.0", tin, 1, 0, vs[2], 0)
	b.write("p0.0", tin, 1, 1, vs[3], 0)
	b.shareStart("c0.0")
	b.deliver("c0.0", 0, 0, vs[0], 1, AckAccept, "yes")
	b.deliver("c0.0", 0, 1, vs[1], 1, AckRelease, "yes")
	b.deliver("c0.0", 0, 1, vs[1], 2, AckAccept, "yes")
	b.deliver("c0.0", 1, 0, vs[2], 1, AckReject, "yes")
	for n := int32(1); n <= shareLimit; n++ {
		b.deliver("c0.0", 1, 1, vs[3], n, AckRelease, "yes")
	}
	return b, vs
}

func (b *hist) finishShare(vs []string, spso map[int32]int64) History {
	b.shareExit("c0.0")
	b.final(tin, 0, []int64{0, 1}, vs[0], vs[1])
	b.final(tin, 1, []int64{0, 1}, vs[2], vs[3])
	b.shareOffsets(spso)
	return b.h
}

var settled = map[int32]int64{0: 2, 1: 2}

func TestCheckShareCleanHistory(t *testing.T) {
	b, vs := cleanShare()
	r := Check(b.finishShare(vs, settled), CheckOptions{})
	if !r.OK || len(r.Violations) != 0 || r.Mode != Share {
		t.Fatalf("clean share history judged %+v", r)
	}
	so := r.Share
	want := ShareOutcome{DeliveryLimit: shareLimit, Deliveries: 8, Redelivered: 2, Accepted: 2, Rejected: 1, ArchivedAtLimit: 1}
	if so == nil || *so != want {
		t.Fatalf("outcome %+v, want %+v", so, want)
	}
	if r.Acked != 4 || r.InputRecords != 4 || r.Consumed != 2 || r.Lost != 0 {
		t.Fatalf("counts %+v", r)
	}
}

// Each case adds one thing to the clean history and says what the checker
// must count.
func TestCheckShareFindsEachAnomaly(t *testing.T) {
	cases := []struct {
		name     string
		build    func(b *hist, vs []string) History
		counts   map[string]int
		ok       bool
		outcome  func(so ShareOutcome) bool
		examples string
	}{
		{
			name: "a settled record nobody ever got (lost)",
			build: func(b *hist, vs []string) History {
				e := InputValue("p0.0", 4)
				b.write("p0.0", tin, 0, 2, e, 0)
				b.shareExit("c0.0")
				b.final(tin, 0, []int64{0, 1, 2}, vs[0], vs[1], e)
				b.final(tin, 1, []int64{0, 1}, vs[2], vs[3])
				b.shareOffsets(map[int32]int64{0: 3, 1: 2})
				return b.h
			},
			counts:   map[string]int{AnomalyLost: 1},
			examples: "never delivered",
		},
		{
			name: "a settled record released once, then nothing (lost)",
			build: func(b *hist, vs []string) History {
				e := InputValue("p0.0", 4)
				b.write("p0.0", tin, 0, 2, e, 0)
				b.deliver("c0.0", 0, 2, e, 1, AckRelease, "yes")
				b.shareExit("c0.0")
				b.final(tin, 0, []int64{0, 1, 2}, vs[0], vs[1], e)
				b.final(tin, 1, []int64{0, 1}, vs[2], vs[3])
				b.shareOffsets(map[int32]int64{0: 3, 1: 2})
				return b.h
			},
			counts:   map[string]int{AnomalyLost: 1},
			examples: "last delivered with count 1",
		},
		{
			name: "the same record unexplained, but enough broker kills since to hide its deliveries",
			build: func(b *hist, vs []string) History {
				e := InputValue("p0.0", 4)
				b.write("p0.0", tin, 0, 2, e, 0)
				b.deliver("c0.0", 0, 2, e, 1, AckRelease, "yes")
				for range 2 {
					b.add(Event{Proc: "nemesis", Type: EvFault, Detail: string(FaultBrokerKill)})
				}
				b.shareExit("c0.0") // the third event that may hide a delivery
				b.final(tin, 0, []int64{0, 1, 2}, vs[0], vs[1], e)
				b.final(tin, 1, []int64{0, 1}, vs[2], vs[3])
				b.shareOffsets(map[int32]int64{0: 3, 1: 2})
				return b.h
			},
			ok:      true,
			outcome: func(so ShareOutcome) bool { return so.EndedUnobserved == 1 },
		},
		{
			name: "delivered over the limit",
			build: func(b *hist, vs []string) History {
				b.deliver("c0.0", 1, 1, vs[3], shareLimit+1, AckRelease, "yes")
				return b.finishShare(vs, settled)
			},
			counts:   map[string]int{AnomalyOverDelivered: 1},
			examples: "over the limit",
		},
		{
			name: "two consumers hold one acquisition",
			build: func(b *hist, vs []string) History {
				b.shareStart("c1.0")
				b.deliver("c1.0", 0, 1, vs[1], 2, AckRelease, "no")
				return b.finishShare(vs, settled)
			},
			counts:   map[string]int{AnomalyOverDelivered: 1},
			examples: "delivered twice with count 2",
		},
		{
			name: "accepted, confirmed, delivered and accepted again",
			build: func(b *hist, vs []string) History {
				b.shareStart("c1.0")
				b.deliver("c1.0", 0, 0, vs[0], 2, AckAccept, "yes")
				return b.finishShare(vs, settled)
			},
			counts:   map[string]int{AnomalyOverDelivered: 1, AnomalyAcceptedTwice: 1},
			examples: "after c0.0's accept of delivery 1 was confirmed",
		},
		{
			name: "rejected, confirmed, then delivered again",
			build: func(b *hist, vs []string) History {
				b.deliver("c0.0", 1, 0, vs[2], 2, AckRelease, "yes")
				return b.finishShare(vs, settled)
			},
			counts: map[string]int{AnomalyOverDelivered: 1},
		},
		{
			name: "an ACCEPT whose answer was lost, then a redelivery accepted: not twice",
			build: func(b *hist, vs []string) History {
				e := InputValue("p0.0", 4)
				b.write("p0.0", tin, 0, 2, e, 0)
				b.deliver("c0.0", 0, 2, e, 1, AckAccept, "no")
				b.deliver("c0.0", 0, 2, e, 2, AckAccept, "yes")
				b.shareExit("c0.0")
				b.final(tin, 0, []int64{0, 1, 2}, vs[0], vs[1], e)
				b.final(tin, 1, []int64{0, 1}, vs[2], vs[3])
				b.shareOffsets(map[int32]int64{0: 3, 1: 2})
				return b.h
			},
			ok:      true,
			outcome: func(so ShareOutcome) bool { return so.Accepted == 3 && so.AcceptedUnconfirmed == 0 },
		},
		{
			name: "an ACCEPT whose consumer died before the answer, never delivered again",
			build: func(b *hist, vs []string) History {
				e := InputValue("p0.0", 4)
				b.write("p0.0", tin, 0, 2, e, 0)
				b.deliver("c0.0", 0, 2, e, 1, AckAccept, "")
				b.shareExit("c0.0")
				b.final(tin, 0, []int64{0, 1, 2}, vs[0], vs[1], e)
				b.final(tin, 1, []int64{0, 1}, vs[2], vs[3])
				b.shareOffsets(map[int32]int64{0: 3, 1: 2})
				return b.h
			},
			ok:      true,
			outcome: func(so ShareOutcome) bool { return so.AcceptedUnconfirmed == 1 && so.Accepted == 2 },
		},
		{
			name: "records not settled when the run ended (inconclusive)",
			build: func(b *hist, vs []string) History {
				return b.finishShare(vs, map[int32]int64{0: 1, 1: 2})
			},
			outcome: func(so ShareOutcome) bool { return so.Accepted == 1 },
		},
		{
			name: "acknowledged write missing from the log",
			build: func(b *hist, vs []string) History {
				b.write("p0.0", tin, 0, 2, InputValue("p0.0", 4), 0)
				return b.finishShare(vs, settled)
			},
			counts: map[string]int{AnomalyLost: 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, vs := cleanShare()
			r := Check(tc.build(b, vs), CheckOptions{})
			for _, a := range Forbidden(Share) {
				if got := r.Count(a); got != tc.counts[a] {
					t.Errorf("%s = %d, want %d (examples %v)", a, got, tc.counts[a], r.Examples)
				}
			}
			if r.OK != tc.ok {
				t.Errorf("OK = %v, want %v: violations %v inconclusive %v", r.OK, tc.ok, r.Violations, r.Inconclusive)
			}
			if len(tc.counts) > 0 && len(r.Violations) != len(tc.counts) {
				t.Errorf("violations %v, want %d", r.Violations, len(tc.counts))
			}
			if tc.outcome != nil && !tc.outcome(*r.Share) {
				t.Errorf("outcome %+v", *r.Share)
			}
			if tc.examples != "" && !strings.Contains(fmt.Sprint(r.Examples), tc.examples) {
				t.Errorf("no example mentions %q: %v", tc.examples, r.Examples)
			}
		})
	}
}

func TestShareAckForIsSeededAndProportioned(t *testing.T) {
	n := map[string]int{}
	for i := range 20000 {
		v := InputValue("p0.0", int64(i))
		a := ShareAckFor(7, v, 1, 0.25, 0.05)
		if ShareAckFor(7, v, 1, 0.25, 0.05) != a {
			t.Fatal("not a function of its arguments")
		}
		n[a]++
	}
	if f := float64(n[AckRelease]) / 20000; f < 0.23 || f > 0.27 {
		t.Fatalf("release fraction %.3f, want 0.25", f)
	}
	if f := float64(n[AckReject]) / 20000; f < 0.04 || f > 0.06 {
		t.Fatalf("reject fraction %.3f, want 0.05", f)
	}
	differ := 0
	for i := range 1000 {
		v := InputValue("p0.0", int64(i))
		if ShareAckFor(7, v, 1, 0.25, 0.05) != ShareAckFor(8, v, 1, 0.25, 0.05) || ShareAckFor(7, v, 1, 0.25, 0.05) != ShareAckFor(7, v, 2, 0.25, 0.05) {
			differ++
		}
	}
	if differ < 100 {
		t.Fatalf("the seed and the delivery count hardly change the choice (%d of 1000 differ)", differ)
	}
}
