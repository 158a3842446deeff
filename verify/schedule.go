package verify

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"
)

// FaultKind names a fault the nemesis can inject.
type FaultKind string

// The faults. Network faults act in the proxy every client goes through;
// process faults act on the worker processes; broker kills need a managed
// broker.
const (
	// FaultBrokerKill SIGKILLs the managed broker and restarts it on the
	// same data directory and port after a pause.
	FaultBrokerKill FaultKind = "broker-kill"
	// FaultLostAck drops responses to writes (Produce, OffsetCommit,
	// TxnOffsetCommit, EndTxn, ...) after the broker handled them, for a
	// window: the client sees a broken connection for a write that
	// happened.
	FaultLostAck FaultKind = "lost-ack"
	// FaultDelay holds every response for up to a delay, for a window.
	FaultDelay FaultKind = "delay"
	// FaultReset resets every client connection at once.
	FaultReset FaultKind = "reset"
	// FaultProducerKill SIGKILLs a producer, before or after it commits a
	// transaction (or anywhere, for plain producers).
	FaultProducerKill FaultKind = "producer-kill"
	// FaultConsumerKill SIGKILLs a pipeline worker right before or right
	// after it commits offsets.
	FaultConsumerKill FaultKind = "consumer-kill"
	// FaultRebalance adds a pipeline worker to the group and removes it
	// again, forcing two rebalances.
	FaultRebalance FaultKind = "rebalance"
	// FaultZombie SIGSTOPs a producer or pipeline worker, starts its
	// replacement with the same identity (which fences it, if fencing
	// exists), then SIGCONTs it.
	FaultZombie FaultKind = "zombie"
	// FaultBrokerPause SIGSTOPs one node of a managed cluster and
	// SIGCONTs it after a while: a node that stops answering without its
	// connections closing (a long GC pause, a stalled VM).
	FaultBrokerPause FaultKind = "broker-pause"
	// FaultClusterKill SIGKILLs every node of a managed cluster at once
	// and restarts them together: what is acknowledged must survive a
	// whole-cluster power loss.
	FaultClusterKill FaultKind = "cluster-kill"
	// FaultPartition cuts one node of a managed cluster off from the
	// other nodes, both ways, for a while; clients still reach it.
	FaultPartition FaultKind = "partition"
	// FaultOneWayPartition cuts what one node sends another, for a
	// while; what the other sends it still arrives.
	FaultOneWayPartition FaultKind = "partition-one-way"
	// FaultNodeDelay holds the traffic between every two nodes for up to
	// a delay, for a window.
	FaultNodeDelay FaultKind = "node-delay"
)

// ClusterFaults are the faults that need a managed cluster of several
// nodes (a broker kill then hits one node, drawn by the schedule). The
// network faults between nodes act on the links every node reaches the
// others through (Links).
var ClusterFaults = []FaultKind{FaultBrokerPause, FaultClusterKill, FaultPartition, FaultOneWayPartition, FaultNodeDelay}

// AllFaults lists every fault; broker kills only with a managed broker.
func AllFaults(managed bool) []FaultKind {
	fs := []FaultKind{FaultLostAck, FaultDelay, FaultReset, FaultProducerKill, FaultConsumerKill, FaultRebalance, FaultZombie}
	if managed {
		fs = append([]FaultKind{FaultBrokerKill}, fs...)
	}
	return fs
}

// ParseFaults reads a --faults value: "all", "none" or a comma list.
func ParseFaults(s string, managed bool) ([]FaultKind, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "", "none":
		return nil, nil
	case "all":
		return AllFaults(managed), nil
	}
	known := map[FaultKind]bool{}
	for _, f := range append(AllFaults(true), ClusterFaults...) {
		known[f] = true
	}
	var out []FaultKind
	seen := map[FaultKind]bool{}
	for _, part := range strings.Split(s, ",") {
		f := FaultKind(strings.TrimSpace(part))
		if f == "all" {
			return AllFaults(managed), nil
		}
		if !known[f] {
			var names []string
			for _, k := range AllFaults(true) {
				names = append(names, string(k))
			}
			return nil, fmt.Errorf("unknown fault %q (known: %s, all, none)", f, strings.Join(names, ", "))
		}
		if (f == FaultBrokerKill || slices.Contains(ClusterFaults, f)) && !managed {
			return nil, fmt.Errorf("fault %s needs --managed (verify can only kill a broker it started)", f)
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out, nil
}

// Kill phases for FaultProducerKill and FaultConsumerKill.
const (
	// PhaseBeforeCommit kills after the work, before its commit.
	PhaseBeforeCommit = "before-commit"
	// PhaseAfterCommit kills right after the commit, before more work.
	PhaseAfterCommit = "after-commit"
)

// Roles of worker processes.
const (
	// RoleProducer writes unique values to the input topic.
	RoleProducer = "producer"
	// RolePipeline consumes the input, writes the output and commits.
	RolePipeline = "pipeline"
	// RoleShare is what a pipeline slot runs in share mode: a share-group
	// consumer that acknowledges every record it gets (ACCEPT, RELEASE or
	// REJECT) and writes no output.
	RoleShare = "share"
)

// Fault is one scheduled fault.
type Fault struct {
	// At is when the fault starts, from the start of the workload.
	At time.Duration `json:"at"`
	// Kind is what to do.
	Kind FaultKind `json:"kind"`
	// For is how long it lasts: a network fault's window, a broker's
	// downtime, a zombie's pause, an extra group member's stay.
	For time.Duration `json:"for,omitempty"`
	// Role is the kind of process a kill or zombie targets.
	Role string `json:"role,omitempty"`
	// Target is the index of the slot of that role.
	Target int `json:"target,omitempty"`
	// Node is the managed cluster's node a broker kill, pause or
	// partition hits (1 to Brokers; the sender of a one-way partition);
	// 0 on a single broker.
	Node int `json:"node,omitempty"`
	// Peer is the node a one-way partition keeps Node's traffic from.
	Peer int `json:"peer,omitempty"`
	// Phase is PhaseBeforeCommit or PhaseAfterCommit (kills).
	Phase string `json:"phase,omitempty"`
	// Probability is the share of write responses dropped (lost-ack).
	Probability float64 `json:"probability,omitempty"`
	// Delay is the longest added response delay (delay).
	Delay time.Duration `json:"delay,omitempty"`
}

// String describes the fault in one line.
func (f Fault) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6.2fs %s", f.At.Seconds(), f.Kind)
	if f.Role != "" {
		fmt.Fprintf(&b, " %s#%d", f.Role, f.Target)
	}
	if f.Node > 0 {
		fmt.Fprintf(&b, " node %d", f.Node)
	}
	if f.Peer > 0 {
		fmt.Fprintf(&b, " -> node %d", f.Peer)
	}
	if f.Phase != "" {
		fmt.Fprintf(&b, " %s", f.Phase)
	}
	if f.Probability > 0 {
		fmt.Fprintf(&b, " p=%.2f", f.Probability)
	}
	if f.Delay > 0 {
		fmt.Fprintf(&b, " delay<=%s", f.Delay)
	}
	if f.For > 0 {
		fmt.Fprintf(&b, " for %s", f.For)
	}
	return b.String()
}

// ScheduleOptions shape a fault schedule.
type ScheduleOptions struct {
	// Seed makes the schedule reproducible.
	Seed int64
	// Duration is the workload's length; no fault starts in its last
	// second.
	Duration time.Duration
	// Kinds are the faults to draw from; each appears before any repeats.
	Kinds []FaultKind
	// Producers and Pipelines are the slot counts targets are drawn from.
	Producers, Pipelines int
	// Brokers is the managed cluster's node count broker kills and pauses
	// draw their node from (0 or 1: the one broker).
	Brokers int
}

// NewSchedule draws a fault schedule. The same options always give the same
// schedule: it depends on nothing but them.
func NewSchedule(o ScheduleOptions) []Fault {
	if len(o.Kinds) == 0 || o.Duration <= 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(uint64(o.Seed), 0x9e3779b97f4a7c15))
	kinds := append([]FaultKind(nil), o.Kinds...)
	sort.Slice(kinds, func(i, j int) bool { return kinds[i] < kinds[j] })
	ms := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Millisecond }
	pick := func(n int) int {
		if n <= 1 {
			return 0
		}
		return rng.IntN(n)
	}
	var out []Fault
	var deck []FaultKind
	// Kills of one role alternate between the two phases (from a random
	// first one), so any two kills cover both sides of a commit.
	phases := []string{PhaseBeforeCommit, PhaseAfterCommit}
	nextPhase := map[string]int{RoleProducer: rng.IntN(2), RolePipeline: rng.IntN(2)}
	phase := func(role string) string {
		p := phases[nextPhase[role]%2]
		nextPhase[role]++
		return p
	}
	end := o.Duration - time.Second
	for at := ms(1500, 2500); at < end; at += ms(700, 2200) {
		if len(deck) == 0 {
			deck = append(deck, kinds...)
			rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		f := Fault{At: at, Kind: deck[0]}
		deck = deck[1:]
		switch f.Kind {
		case FaultBrokerKill:
			f.For = ms(300, 1500)
			if o.Brokers > 1 {
				f.Node = 1 + pick(o.Brokers)
			}
		case FaultBrokerPause:
			f.For, f.Node = ms(1500, 4000), 1+pick(o.Brokers)
		case FaultClusterKill:
			f.For = ms(300, 1500)
		case FaultPartition:
			f.For, f.Node = ms(1500, 5000), 1+pick(o.Brokers)
		case FaultOneWayPartition:
			f.For, f.Node = ms(1500, 5000), 1+pick(o.Brokers)
			// Any other node: the draw skips Node.
			f.Peer = 1 + pick(max(o.Brokers-1, 1))
			if f.Peer >= f.Node {
				f.Peer++
			}
		case FaultNodeDelay:
			f.For, f.Delay = ms(1000, 4000), ms(20, 300)
		case FaultLostAck:
			f.For, f.Probability = ms(1500, 4000), float64(15+rng.IntN(21))/100
		case FaultDelay:
			f.For, f.Delay = ms(1000, 3000), ms(100, 800)
		case FaultReset:
		case FaultProducerKill:
			f.Role, f.Target = RoleProducer, pick(o.Producers)
			f.Phase = phase(f.Role)
		case FaultConsumerKill:
			f.Role, f.Target = RolePipeline, pick(o.Pipelines)
			f.Phase = phase(f.Role)
		case FaultRebalance:
			f.For = ms(1500, 4000)
		case FaultZombie:
			f.Role = []string{RoleProducer, RolePipeline}[rng.IntN(2)]
			if f.Role == RoleProducer {
				f.Target = pick(o.Producers)
			} else {
				f.Target = pick(o.Pipelines)
			}
			f.For = ms(1500, 3500)
		}
		out = append(out, f)
	}
	return out
}
