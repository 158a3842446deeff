package group

// Server-side assignors for KIP-848 groups.
//
// uniform (the default) spreads every subscribed partition as evenly as the
// subscriptions allow while keeping partitions where they were in the
// previous target assignment: fewer moves means fewer revoke/assign rounds,
// each of which costs the members a heartbeat or two. range gives each
// subscribed member a contiguous range of every topic's partitions, members
// sorted by id (co-partitioned topics line up, as with the client-side range
// assignor).
//
// Both are deterministic: the same input gives the same output, which the
// transcript tests depend on.

import (
	"bytes"
	"slices"
	"sort"
)

// assignment maps topic id → sorted partitions.
type assignment map[[16]byte][]int32

func (a assignment) count() int {
	n := 0
	for _, ps := range a {
		n += len(ps)
	}
	return n
}

func (a assignment) has(id [16]byte, p int32) bool {
	_, ok := slices.BinarySearch(a[id], p)
	return ok
}

func (a assignment) add(id [16]byte, p int32) {
	ps := a[id]
	i, ok := slices.BinarySearch(ps, p)
	if !ok {
		a[id] = slices.Insert(ps, i, p)
	}
}

func (a assignment) remove(id [16]byte, p int32) {
	ps := a[id]
	if i, ok := slices.BinarySearch(ps, p); ok {
		ps = slices.Delete(ps, i, i+1)
		if len(ps) == 0 {
			delete(a, id)
		} else {
			a[id] = ps
		}
	}
}

func (a assignment) clone() assignment {
	out := make(assignment, len(a))
	for id, ps := range a {
		out[id] = slices.Clone(ps)
	}
	return out
}

func (a assignment) equal(b assignment) bool {
	if len(a) != len(b) {
		return false
	}
	for id, ps := range a {
		if !slices.Equal(ps, b[id]) {
			return false
		}
	}
	return true
}

// ids returns the topic ids in byte order, for deterministic iteration.
func (a assignment) ids() [][16]byte {
	out := make([][16]byte, 0, len(a))
	for id := range a {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i][:], out[j][:]) < 0 })
	return out
}

type tp struct {
	id   [16]byte
	name string
	p    int32
}

// assignInput is what an assignor sees: members (sorted by id), the topics
// each subscribes to (existing topics only), and the previous target.
type assignInput struct {
	members []string
	subs    map[string][]TopicInfo
	prev    map[string]assignment
}

func assignTarget(name string, in assignInput) map[string]assignment {
	if name == "range" {
		return assignRange(in)
	}
	return assignUniform(in)
}

func assignRange(in assignInput) map[string]assignment {
	out := make(map[string]assignment, len(in.members))
	byTopic := map[string][]string{}
	topics := map[string]TopicInfo{}
	for _, mid := range in.members {
		out[mid] = assignment{}
		for _, t := range in.subs[mid] {
			byTopic[t.Name] = append(byTopic[t.Name], mid)
			topics[t.Name] = t
		}
	}
	names := make([]string, 0, len(topics))
	for n := range topics {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		t, subs := topics[n], byTopic[n] // subs is sorted: members are
		per, extra := int(t.Partitions)/len(subs), int(t.Partitions)%len(subs)
		next := int32(0)
		for i, mid := range subs {
			quota := per
			if i < extra {
				quota++
			}
			for k := 0; k < quota; k++ {
				out[mid].add(t.ID, next)
				next++
			}
		}
	}
	return out
}

func assignUniform(in assignInput) map[string]assignment {
	out := make(map[string]assignment, len(in.members))
	for _, mid := range in.members {
		out[mid] = assignment{}
	}
	if len(in.members) == 0 {
		return out
	}
	// Every subscribed partition, sorted by topic name then partition, and
	// who may own it.
	eligible := map[[16]byte]map[string]bool{}
	topics := map[string]TopicInfo{}
	homogeneous := true
	var first []string
	for i, mid := range in.members {
		var names []string
		for _, t := range in.subs[mid] {
			topics[t.Name] = t
			if eligible[t.ID] == nil {
				eligible[t.ID] = map[string]bool{}
			}
			eligible[t.ID][mid] = true
			names = append(names, t.Name)
		}
		sort.Strings(names)
		if i == 0 {
			first = names
		} else if !slices.Equal(first, names) {
			homogeneous = false
		}
	}
	names := make([]string, 0, len(topics))
	for n := range topics {
		names = append(names, n)
	}
	sort.Strings(names)
	var all []tp
	for _, n := range names {
		t := topics[n]
		for p := int32(0); p < t.Partitions; p++ {
			all = append(all, tp{id: t.ID, name: n, p: p})
		}
	}
	if len(all) == 0 {
		return out
	}
	owner := map[[16]byte]map[int32]string{}
	setOwner := func(x tp, mid string) {
		if owner[x.id] == nil {
			owner[x.id] = map[int32]string{}
		}
		owner[x.id][x.p] = mid
		out[mid].add(x.id, x.p)
	}
	load := func(mid string) int { return out[mid].count() }

	if homogeneous {
		// Exact quotas: base each, the first `extra` members (by how much
		// they already hold, then id) one more.
		base, extra := len(all)/len(in.members), len(all)%len(in.members)
		kept := map[string][]tp{}
		for _, x := range all {
			for _, mid := range in.members {
				if in.prev[mid].has(x.id, x.p) {
					kept[mid] = append(kept[mid], x)
					break
				}
			}
		}
		order := slices.Clone(in.members)
		sort.SliceStable(order, func(i, j int) bool { return len(kept[order[i]]) > len(kept[order[j]]) })
		quota := map[string]int{}
		for i, mid := range order {
			quota[mid] = base
			if i < extra {
				quota[mid]++
			}
		}
		for _, mid := range in.members {
			for i, x := range kept[mid] {
				if i >= quota[mid] {
					break
				}
				setOwner(x, mid)
			}
		}
		for _, x := range all {
			if owner[x.id][x.p] != "" {
				continue
			}
			best := ""
			for _, mid := range order {
				if load(mid) < quota[mid] && (best == "" || load(mid) < load(best)) {
					best = mid
				}
			}
			setOwner(x, best)
		}
		return out
	}

	// Heterogeneous subscriptions: keep what is still valid, give the rest
	// to the least loaded eligible member, then move partitions from the
	// most to the least loaded while that narrows the gap by more than one.
	// Each move lowers the sum of squared loads, so this terminates.
	for _, x := range all {
		for _, mid := range in.members {
			if eligible[x.id][mid] && in.prev[mid].has(x.id, x.p) {
				setOwner(x, mid)
				break
			}
		}
	}
	leastLoaded := func(x tp, except string) string {
		best := ""
		for _, mid := range in.members {
			if mid == except || !eligible[x.id][mid] {
				continue
			}
			if best == "" || load(mid) < load(best) {
				best = mid
			}
		}
		return best
	}
	for _, x := range all {
		if owner[x.id][x.p] == "" {
			setOwner(x, leastLoaded(x, ""))
		}
	}
	for moved := true; moved; {
		moved = false
		byLoad := slices.Clone(in.members)
		sort.SliceStable(byLoad, func(i, j int) bool { return load(byLoad[i]) > load(byLoad[j]) })
		for _, from := range byLoad {
			for i := len(all) - 1; i >= 0 && !moved; i-- {
				x := all[i]
				if owner[x.id][x.p] != from {
					continue
				}
				to := leastLoaded(x, from)
				if to != "" && load(to) < load(from)-1 {
					out[from].remove(x.id, x.p)
					setOwner(x, to)
					moved = true
				}
			}
			if moved {
				break
			}
		}
	}
	return out
}
