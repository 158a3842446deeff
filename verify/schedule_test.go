package verify

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestScheduleIsAFunctionOfTheSeed(t *testing.T) {
	o := ScheduleOptions{Seed: 42, Duration: 30 * time.Second, Kinds: AllFaults(true), Producers: 2, Pipelines: 2}
	a, b := NewSchedule(o), NewSchedule(o)
	if len(a) == 0 || !reflect.DeepEqual(a, b) {
		t.Fatalf("same seed, different schedules:\n%v\n%v", a, b)
	}
	// The order of --faults does not matter either.
	rev := o
	rev.Kinds = nil
	for i := len(o.Kinds) - 1; i >= 0; i-- {
		rev.Kinds = append(rev.Kinds, o.Kinds[i])
	}
	if c := NewSchedule(rev); !reflect.DeepEqual(a, c) {
		t.Fatalf("reordered kinds changed the schedule")
	}
	o.Seed = 43
	if c := NewSchedule(o); reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 42 and 43 gave the same schedule")
	}
}

func TestScheduleCoversEveryKindAndStaysInTheRun(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		o := ScheduleOptions{Seed: seed, Duration: 30 * time.Second, Kinds: AllFaults(true), Producers: 2, Pipelines: 3}
		s := NewSchedule(o)
		seen := map[FaultKind]bool{}
		var last time.Duration
		for _, f := range s {
			seen[f.Kind] = true
			if f.At <= last || f.At >= o.Duration-time.Second {
				t.Fatalf("seed %d: fault at %s (previous %s) outside the run or out of order", seed, f.At, last)
			}
			last = f.At
			switch f.Kind {
			case FaultProducerKill, FaultConsumerKill:
				if f.Phase != PhaseBeforeCommit && f.Phase != PhaseAfterCommit {
					t.Fatalf("seed %d: kill without a phase: %v", seed, f)
				}
			case FaultLostAck:
				if f.Probability <= 0 || f.For <= 0 {
					t.Fatalf("seed %d: lost-ack without teeth: %v", seed, f)
				}
			}
			if f.Role == RolePipeline && f.Target >= 3 || f.Role == RoleProducer && f.Target >= 2 {
				t.Fatalf("seed %d: target out of range: %v", seed, f)
			}
		}
		phases := map[string]map[string]bool{}
		for _, f := range s {
			if f.Phase != "" {
				if phases[f.Role] == nil {
					phases[f.Role] = map[string]bool{}
				}
				phases[f.Role][f.Phase] = true
			}
		}
		for role, ps := range phases {
			if n := len(s); n > 0 && len(ps) != 2 && countRole(s, role) > 1 {
				t.Fatalf("seed %d: %s kills never cover both phases: %v", seed, role, s)
			}
		}
		for _, k := range AllFaults(true) {
			if !seen[k] {
				t.Fatalf("seed %d: a 30s schedule never injects %s: %v", seed, k, s)
			}
		}
	}
}

func TestParseFaults(t *testing.T) {
	if fs, err := ParseFaults("all", false); err != nil || len(fs) != len(AllFaults(false)) {
		t.Fatalf("all (external): %v %v", fs, err)
	}
	for _, f := range AllFaults(false) {
		if f == FaultBrokerKill {
			t.Fatal("broker-kill offered without a managed broker")
		}
	}
	if _, err := ParseFaults("broker-kill", false); err == nil {
		t.Fatal("broker-kill accepted without --managed")
	}
	if _, err := ParseFaults("lost-ack,bogus", true); err == nil {
		t.Fatal("unknown fault accepted")
	}
	if fs, err := ParseFaults(" lost-ack , reset,lost-ack", true); err != nil || !reflect.DeepEqual(fs, []FaultKind{FaultLostAck, FaultReset}) {
		t.Fatalf("list: %v %v", fs, err)
	}
	if fs, err := ParseFaults("none", true); err != nil || fs != nil {
		t.Fatalf("none: %v %v", fs, err)
	}
}

func TestProfilesFollowSemantics(t *testing.T) {
	amo, alo, eos := DefaultProfile(AtMostOnce), DefaultProfile(AtLeastOnce), DefaultProfile(ExactlyOnce)
	if amo.Producer.Acks != "1" || amo.Producer.Retries != 0 || amo.Producer.Idempotent || amo.Consumer.Commit != CommitBefore {
		t.Fatalf("at-most-once: %+v", amo)
	}
	if alo.Producer.Acks != "all" || alo.Producer.Retries != -1 || alo.Producer.Idempotent || alo.Consumer.Commit != CommitAfter {
		t.Fatalf("at-least-once: %+v", alo)
	}
	if !eos.Producer.Transactional || !eos.Producer.Idempotent || !eos.Consumer.ReadCommitted || eos.Consumer.Commit != CommitTxn {
		t.Fatalf("exactly-once: %+v", eos)
	}
	for _, m := range Modes {
		if err := DefaultProfile(m).Validate(); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
	}
	// Weakening cascades; contradictions are refused.
	p := DefaultProfile(ExactlyOnce)
	if err := p.Apply([]string{"acks=1"}, nil); err != nil || p.Producer.Idempotent || p.Producer.Transactional || p.Consumer.Commit != CommitAfter {
		t.Fatalf("acks=1 on exactly-once: %+v %v", p, err)
	}
	p = DefaultProfile(AtLeastOnce)
	if err := p.Apply(nil, []string{"enable.auto.commit=true", "auto.commit.interval.ms=100", "isolation.level=read_committed"}); err != nil ||
		p.Consumer.Commit != CommitAuto || p.Consumer.AutoCommitIntervalMs != 100 || !p.Consumer.ReadCommitted {
		t.Fatalf("consumer overrides: %+v %v", p, err)
	}
	p = DefaultProfile(ExactlyOnce)
	if err := p.Apply(nil, []string{"group.protocol=consumer"}); err != nil || p.Consumer.GroupProtocol != "consumer" ||
		!strings.Contains(p.String(), "group.protocol=consumer") {
		t.Fatalf("group.protocol=consumer: %+v %v", p, err)
	}
	if err := p.Apply(nil, []string{"group.protocol=classic"}); err != nil || p.Consumer.GroupProtocol != "" {
		t.Fatalf("group.protocol=classic: %+v %v", p, err)
	}
	if err := p.Apply(nil, []string{"group.protocol=eager"}); err == nil {
		t.Fatal("unknown group protocol accepted")
	}
	p = DefaultProfile(AtLeastOnce)
	if err := p.Apply(nil, []string{"commit=txn"}); err == nil {
		t.Fatal("commit=txn accepted without a transactional producer")
	}
	if err := p.Apply([]string{"bogus=1"}, nil); err == nil {
		t.Fatal("unknown producer key accepted")
	}
	if err := p.Apply([]string{"acks"}, nil); err == nil {
		t.Fatal("override without = accepted")
	}
}

func countRole(s []Fault, role string) int {
	n := 0
	for _, f := range s {
		if f.Phase != "" && f.Role == role {
			n++
		}
	}
	return n
}

// TestScheduleDrawsClusterNodes: on a managed cluster a broker kill,
// pause or partition names a node in 1..Brokers and every node is hit, a
// one-way partition names two different nodes; on one broker
// the kill names none (and the schedule is what it was before clusters).
func TestScheduleDrawsClusterNodes(t *testing.T) {
	kinds := append([]FaultKind{FaultBrokerKill}, ClusterFaults...)
	hit := map[int]bool{}
	oneWay := map[[2]int]bool{}
	for _, f := range NewSchedule(ScheduleOptions{Seed: 3, Duration: 10 * time.Minute, Kinds: kinds, Brokers: 3}) {
		switch f.Kind {
		case FaultBrokerKill, FaultBrokerPause, FaultPartition:
			if f.Node < 1 || f.Node > 3 {
				t.Fatalf("%s names node %d", f, f.Node)
			}
			hit[f.Node] = true
		case FaultOneWayPartition:
			if f.Node < 1 || f.Node > 3 || f.Peer < 1 || f.Peer > 3 || f.Peer == f.Node || f.For <= 0 {
				t.Fatalf("one-way partition %s", f)
			}
			oneWay[[2]int{f.Node, f.Peer}] = true
		case FaultNodeDelay:
			if f.Delay <= 0 || f.For <= 0 {
				t.Fatalf("node delay %s", f)
			}
		case FaultClusterKill:
			if f.Node != 0 || f.For <= 0 {
				t.Fatalf("cluster kill %s", f)
			}
		}
	}
	if len(hit) != 3 {
		t.Fatalf("nodes hit: %v", hit)
	}
	if len(oneWay) < 4 { // of the six ordered pairs
		t.Fatalf("one-way partitions drew only %v", oneWay)
	}
	for _, f := range NewSchedule(ScheduleOptions{Seed: 3, Duration: time.Minute, Kinds: []FaultKind{FaultBrokerKill}}) {
		if f.Node != 0 {
			t.Fatalf("single-broker kill names node %d", f.Node)
		}
	}
	if _, err := ParseFaults("broker-pause,cluster-kill", false); err == nil {
		t.Fatal("cluster faults accepted without a managed broker")
	}
	if fs, err := ParseFaults("broker-pause,cluster-kill", true); err != nil || len(fs) != 2 {
		t.Fatalf("ParseFaults = %v, %v", fs, err)
	}
}
