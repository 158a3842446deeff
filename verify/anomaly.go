package verify

import (
	"fmt"
	"sort"
)

// countWork fills the counts that are not anomalies: what was attempted,
// acknowledged, logged, delivered and polled.
func countWork(ix *index, r *Result) {
	r.Attempted = len(ix.attempted)
	r.Acked = len(ix.ack)
	r.InputRecords = len(ix.inCount)
	for v := range ix.inCount {
		if ix.outCount[v] > 0 {
			r.Consumed++
		}
	}
	for _, e := range ix.consumer {
		if e.Type == EvPoll {
			r.Polled += len(e.Offsets)
		}
	}
}

// checkLost counts acknowledged writes missing from the input log
// (LostWrites), and input values the group committed past that never
// reached the output.
func checkLost(ix *index, r *Result) {
	for _, v := range sortedKeys(ix.ack) {
		if ix.inCount[v] == 0 {
			r.LostWrites++
			l := ix.acked[v]
			r.example(AnomalyLost, "%s acknowledged at %s/%d@%d is not in the input log", v, l.topic, l.partition, l.offset)
		}
	}
	r.Lost = r.LostWrites
	for _, v := range ix.undelivered() {
		l := ix.inFirst[v]
		if !ix.claimed(l) {
			continue
		}
		r.Lost++
		r.example(AnomalyLost, "%s at %s/%d@%d never reached the output though the group committed past it (next %d)", v, l.topic, l.partition, l.offset, ix.group[l.partition])
	}
}

// checkUnseen counts input values that never reached the output and that
// the group never committed past: neither lost nor delivered.
func checkUnseen(ix *index, r *Result) {
	for _, v := range ix.undelivered() {
		l := ix.inFirst[v]
		if ix.claimed(l) {
			continue
		}
		r.Unseen++
		next, ok := ix.group[l.partition]
		r.example(exampleUnseen, "%s at %s/%d@%d never reached the output (group offset %s)", v, l.topic, l.partition, l.offset, groupOffset(next, ok && ix.haveGroup))
	}
}

// checkDuplicates counts values with more than one copy in the input log
// or more than one delivery to the output.
func checkDuplicates(ix *index, r *Result) {
	dups := map[string]bool{}
	for _, v := range sortedKeys(ix.inCount) {
		if ix.inCount[v] > 1 {
			dups[v] = true
			r.example(AnomalyDuplicates, "%s is in the input log %d times", v, ix.inCount[v])
		}
	}
	for _, v := range sortedKeys(ix.outCount) {
		if ix.outCount[v] > 1 && !dups[v] {
			dups[v] = true
			r.example(AnomalyDuplicates, "%s was delivered to the output %d times", v, ix.outCount[v])
		}
	}
	r.Duplicates = len(dups)
}

// checkAbortedReads counts aborted values returned by a read_committed
// poll or by the final (read_committed) reader, or whose effect is in the
// output.
func checkAbortedReads(ix *index, r *Result) {
	seen := map[string]bool{}
	saw := func(v, where string) {
		if ix.aborted[v] && !seen[v] {
			seen[v] = true
			r.example(AnomalyAbortedReads, "%s was aborted but %s", v, where)
		}
	}
	for _, e := range ix.consumer {
		if e.Type == EvPoll && e.ReadCommitted {
			for _, v := range e.Values {
				saw(v, fmt.Sprintf("a read_committed poll by %s returned it", e.Proc))
			}
		}
	}
	for _, t := range []string{ix.in, ix.out} {
		for _, p := range sortedParts(ix.final[t]) {
			for _, rc := range ix.final[t][p] {
				saw(rc.value, fmt.Sprintf("the final reader found it at %s/%d@%d", t, p, rc.offset))
				if t == ix.out {
					saw(SourceValue(rc.value), fmt.Sprintf("its effect %s is at %s/%d@%d", rc.value, t, p, rc.offset))
				}
			}
		}
	}
	r.AbortedReads = len(seen)
}

// prodPart is one producer instance's records in one partition.
type prodPart struct {
	proc string
	p    int32
}

// checkSendOrder counts adjacent pairs of one producer's values stored in a
// partition of the input log out of send order (first copies only).
func checkSendOrder(ix *index, r *Result) {
	sends := map[prodPart][][2]int64{} // seq, offset
	for _, p := range sortedParts(ix.final[ix.in]) {
		for _, rc := range ix.final[ix.in][p] {
			if ix.inFirst[rc.value].offset != rc.offset {
				continue
			}
			proc, seq, err := parseInputValue(rc.value)
			if err != nil {
				continue
			}
			k := prodPart{proc, p}
			sends[k] = append(sends[k], [2]int64{seq, rc.offset})
		}
	}
	for _, k := range sortedProdParts(sends) {
		s := sends[k]
		sort.Slice(s, func(i, j int) bool { return s[i][0] < s[j][0] })
		for i := 1; i < len(s); i++ {
			if s[i][1] < s[i-1][1] {
				r.OrderViolations++
				r.example(AnomalyOrderViolations, "%s sent %s before %s but %s/%d holds them at %d and %d",
					k.proc, InputValue(k.proc, s[i-1][0]), InputValue(k.proc, s[i][0]), ix.in, k.p, s[i-1][1], s[i][1])
			}
		}
	}
}

// checkOutputOrder counts adjacent first deliveries of one input
// partition's values to the output out of input order.
func checkOutputOrder(ix *index, r *Result) {
	for _, op := range sortedParts(ix.final[ix.out]) {
		delivered := map[string]bool{}
		last := map[int32]rec{} // input partition -> last first-delivery
		for _, rc := range ix.final[ix.out][op] {
			src := SourceValue(rc.value)
			if delivered[src] {
				continue
			}
			delivered[src] = true
			l, ok := ix.inFirst[src]
			if !ok {
				continue
			}
			if prev, ok := last[l.partition]; ok && l.offset < prev.offset {
				r.OrderViolations++
				r.example(AnomalyOrderViolations, "%s/%d delivers %s (input %d/%d) after %s (input %d/%d)",
					ix.out, op, src, l.partition, l.offset, prev.value, l.partition, prev.offset)
			}
			last[l.partition] = rec{l.offset, src}
		}
	}
}

// checkInconsistentOffsets counts offsets seen holding two values.
func checkInconsistentOffsets(ix *index, r *Result) {
	r.InconsistentOffsets = len(ix.conflicts)
	for _, c := range ix.conflicts {
		r.example(AnomalyInconsistentOffsets, "%s/%d@%d holds %q and %q", c.at.topic, c.at.partition, c.at.offset, c.old, c.then)
	}
}

// checkNonMonotonicPolls counts polls that went backwards or repeated an
// offset with no rebalance or rewind of the instance in between.
func checkNonMonotonicPolls(ix *index, r *Result) {
	ix.eachPoll(func(s pollStep) {
		if s.backwards() {
			e := s.e
			r.NonMonotonicPolls++
			r.example(AnomalyNonMonotonicPolls, "%s polled %s/%d offsets %v after %d", e.Proc, e.Topic, e.Partition, truncate(e.Offsets), s.prev)
		}
	})
}

// checkPollSkips counts jumps over a record the final reader found, between
// an instance's polls of a partition or within one poll. A poll that went
// backwards is a non-monotonic poll instead.
func checkPollSkips(ix *index, r *Result) {
	ix.eachPoll(func(s pollStep) {
		if s.backwards() {
			return
		}
		e := s.e
		offs := ix.finalOffsets[e.Topic][e.Partition]
		if s.had {
			if skipped, ok := firstBetween(offs, s.prev, e.Offsets[0]); ok {
				r.PollSkips++
				r.example(AnomalyPollSkips, "%s polled %s/%d offset %d then %d, skipping %d", e.Proc, e.Topic, e.Partition, s.prev, e.Offsets[0], skipped)
			}
		}
		for i := 1; i < len(e.Offsets); i++ {
			if skipped, ok := firstBetween(offs, e.Offsets[i-1], e.Offsets[i]); ok {
				r.PollSkips++
				r.example(AnomalyPollSkips, "%s polled %s/%d offsets %d and %d in one poll, skipping %d", e.Proc, e.Topic, e.Partition, e.Offsets[i-1], e.Offsets[i], skipped)
			}
		}
	})
}

// firstBetween returns the first offset in sorted offs strictly between lo
// and hi.
func firstBetween(offs []int64, lo, hi int64) (int64, bool) {
	i := sort.Search(len(offs), func(i int) bool { return offs[i] > lo })
	if i < len(offs) && offs[i] < hi {
		return offs[i], true
	}
	return 0, false
}

func groupOffset(o int64, ok bool) string {
	if !ok {
		return "none"
	}
	return fmt.Sprint(o)
}

func truncate(o []int64) []int64 {
	if len(o) > 6 {
		return o[:6]
	}
	return o
}

func sortedParts[V any](m map[int32]V) []int32 {
	ps := make([]int32, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sortedProdParts[K interface{ comparable }, V any](m map[K]V) []K {
	ks := make([]K, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool { return fmt.Sprint(ks[i]) < fmt.Sprint(ks[j]) })
	return ks
}
