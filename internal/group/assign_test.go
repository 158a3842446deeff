package group

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func topicsOf(names map[string]int32) map[string]TopicInfo {
	out := map[string]TopicInfo{}
	for n, p := range names {
		var id [16]byte
		copy(id[:], n)
		out[n] = TopicInfo{Name: n, ID: id, Partitions: p}
	}
	return out
}

// checkAssignment verifies the invariants every assignor must keep: each
// subscribed partition is assigned exactly once, only to a subscriber.
func checkAssignment(t *testing.T, in assignInput, out map[string]assignment) {
	t.Helper()
	seen := map[[16]byte]map[int32]string{}
	for mid, a := range out {
		subs := map[[16]byte]bool{}
		for _, ti := range in.subs[mid] {
			subs[ti.ID] = true
		}
		for id, ps := range a {
			if !subs[id] {
				t.Fatalf("%s got a partition of a topic it does not subscribe to", mid)
			}
			for _, p := range ps {
				if seen[id] == nil {
					seen[id] = map[int32]string{}
				}
				if other, dup := seen[id][p]; dup {
					t.Fatalf("partition %d assigned to both %s and %s", p, other, mid)
				}
				seen[id][p] = mid
			}
		}
	}
	for _, mid := range in.members {
		for _, ti := range in.subs[mid] {
			for p := int32(0); p < ti.Partitions; p++ {
				if seen[ti.ID][p] == "" {
					t.Fatalf("partition %s/%d unassigned", ti.Name, p)
				}
			}
		}
	}
}

func TestUniformHomogeneousBalancedAndSticky(t *testing.T) {
	topics := topicsOf(map[string]int32{"a": 7, "b": 11})
	all := []TopicInfo{topics["a"], topics["b"]}
	in := assignInput{subs: map[string][]TopicInfo{}, prev: map[string]assignment{}}
	for i := 0; i < 5; i++ {
		mid := fmt.Sprintf("m%d", i)
		in.members = append(in.members, mid)
		in.subs[mid] = all
	}
	out := assignUniform(in)
	checkAssignment(t, in, out)
	for mid, a := range out {
		if n := a.count(); n < 3 || n > 4 {
			t.Fatalf("%s has %d of 18 partitions over 5 members", mid, n)
		}
	}
	// A sixth member: the others keep what they can; only what the newcomer
	// needs moves.
	in.prev = out
	in.members = append(in.members, "m5")
	in.subs["m5"] = all
	next := assignUniform(in)
	checkAssignment(t, in, next)
	moved := 0
	for _, mid := range in.members[:5] {
		for id, ps := range out[mid] {
			for _, p := range ps {
				if !next[mid].has(id, p) {
					moved++
				}
			}
		}
	}
	if got := next["m5"].count(); got != 3 || moved != 3 {
		t.Fatalf("newcomer got %d, %d partitions moved; want 3 and 3", got, moved)
	}
}

func TestUniformHeterogeneousRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		names := map[string]int32{}
		for i := 0; i < 1+rng.IntN(4); i++ {
			names[fmt.Sprintf("t%d", i)] = int32(1 + rng.IntN(9))
		}
		topics := topicsOf(names)
		in := assignInput{subs: map[string][]TopicInfo{}, prev: map[string]assignment{}}
		for i := 0; i < 1+rng.IntN(6); i++ {
			mid := fmt.Sprintf("m%d", i)
			in.members = append(in.members, mid)
			for _, ti := range topics {
				if rng.IntN(2) == 0 {
					in.subs[mid] = append(in.subs[mid], ti)
				}
			}
		}
		out := assignUniform(in)
		checkAssignment(t, in, out)
		// Balanced where subscriptions allow: no partition could move to a
		// subscriber holding two or more fewer.
		for mid, a := range out {
			for id := range a {
				for _, other := range in.members {
					subscribes := false
					for _, ti := range in.subs[other] {
						subscribes = subscribes || ti.ID == id
					}
					if subscribes && out[other].count() < a.count()-1 {
						t.Fatalf("round %d: %s has %d, %s (eligible) has %d", round, mid, a.count(), other, out[other].count())
					}
				}
			}
		}
		in.prev = out
		checkAssignment(t, in, assignUniform(in))
	}
}

func TestRangeAssignor(t *testing.T) {
	topics := topicsOf(map[string]int32{"a": 5, "b": 5})
	in := assignInput{members: []string{"m0", "m1"}, subs: map[string][]TopicInfo{
		"m0": {topics["a"], topics["b"]},
		"m1": {topics["a"], topics["b"]},
	}}
	out := assignRange(in)
	checkAssignment(t, in, out)
	// Co-partitioned: the same member gets the same partition numbers of
	// both topics.
	for _, mid := range in.members {
		if fmt.Sprint(out[mid][topics["a"].ID]) != fmt.Sprint(out[mid][topics["b"].ID]) {
			t.Fatalf("range is not co-partitioned: %v", out)
		}
	}
	if got := fmt.Sprint(out["m0"][topics["a"].ID]); got != "[0 1 2]" {
		t.Fatalf("m0 got %s of a", got)
	}
}
