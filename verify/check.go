package verify

import (
	"fmt"
	"sort"
)

// Anomaly names, as they appear in Result.Violations, in the JSON output and
// in the table.
const (
	AnomalyLost                = "lost"
	AnomalyDuplicates          = "duplicates"
	AnomalyAbortedReads        = "aborted_reads"
	AnomalyOrderViolations     = "order_violations"
	AnomalyInconsistentOffsets = "inconsistent_offsets"
	AnomalyNonMonotonicPolls   = "nonmonotonic_polls"
	AnomalyPollSkips           = "poll_skips"
)

// Forbidden lists the anomalies a mode promises never to show. Whatever the
// mode, one offset holding two values is forbidden: no configuration permits
// the log to contradict itself.
func Forbidden(m Mode) []string {
	switch m {
	case AtMostOnce:
		return []string{AnomalyDuplicates, AnomalyInconsistentOffsets}
	case AtLeastOnce:
		return []string{AnomalyLost, AnomalyInconsistentOffsets}
	case ExactlyOnce:
		return []string{AnomalyLost, AnomalyDuplicates, AnomalyAbortedReads, AnomalyOrderViolations,
			AnomalyInconsistentOffsets, AnomalyNonMonotonicPolls, AnomalyPollSkips}
	}
	return []string{AnomalyInconsistentOffsets}
}

// CheckOptions say what to check a history against. Zero fields are taken
// from the history's run event.
type CheckOptions struct {
	// InTopic is the topic producers write and the pipeline consumes.
	InTopic string
	// OutTopic is the topic the pipeline writes.
	OutTopic string
	// Promise is the guarantee to hold the history to.
	Promise Mode
}

// Result is what Check found. Counts are distinct input values unless said
// otherwise.
type Result struct {
	// Mode is the guarantee the history was held to.
	Mode Mode `json:"mode"`
	// Attempted counts values producers tried to send.
	Attempted int `json:"attempted"`
	// Acked counts acknowledged input writes (for transactional producers:
	// writes in transactions known to have committed).
	Acked int `json:"acked"`
	// InputRecords counts values the final reader found in the input log.
	InputRecords int `json:"input_records"`
	// Consumed counts values delivered to the output (read from the input,
	// processed and found in the final output log).
	Consumed int `json:"consumed"`
	// Polled counts records the pipeline's polls returned (with repeats).
	Polled int `json:"polled"`
	// Lost counts acknowledged writes missing from the input log, and
	// input values the group committed past that never reached the output.
	Lost int `json:"lost"`
	// LostWrites is the part of Lost the broker lost: acknowledged writes
	// missing from the input log itself.
	LostWrites int `json:"lost_writes"`
	// Unseen counts input values that never reached the output and lie at
	// or past the group's final committed offset: the pipeline never
	// claimed to have processed them (a drain that did not finish, or a
	// consumer that never commits). Not lost, not delivered: unknown.
	Unseen int `json:"unseen"`
	// Duplicates counts values present more than once in the input log or
	// delivered more than once to the output.
	Duplicates int `json:"duplicates"`
	// AbortedReads counts values written by aborted transactions that a
	// read_committed reader returned or whose effect reached the output.
	AbortedReads int `json:"aborted_reads"`
	// OrderViolations counts adjacent pairs stored out of order: one
	// producer's values in a partition out of send order, or the output of
	// one input partition out of input order.
	OrderViolations int `json:"order_violations"`
	// InconsistentOffsets counts offsets seen holding two different values.
	InconsistentOffsets int `json:"inconsistent_offsets"`
	// NonMonotonicPolls counts polls that went backwards (or repeated an
	// offset) with no rebalance or rewind in between.
	NonMonotonicPolls int `json:"nonmonotonic_polls"`
	// PollSkips counts polls that jumped over a record the final reader
	// found, with no rebalance or rewind in between.
	PollSkips int `json:"poll_skips"`
	// Violations names the forbidden anomalies that occurred.
	Violations []string `json:"violations"`
	// Inconclusive is true when values are Unseen under a promise that
	// forbids loss: whether they would have arrived is unknown.
	Inconclusive bool `json:"inconclusive"`
	// OK is true when no forbidden anomaly occurred and the run is not
	// Inconclusive.
	OK bool `json:"ok"`
	// Examples holds a few instances of each anomaly found, for humans.
	Examples map[string][]string `json:"examples,omitempty"`
}

// Count returns the count of the named anomaly.
func (r *Result) Count(anomaly string) int {
	switch anomaly {
	case AnomalyLost:
		return r.Lost
	case AnomalyDuplicates:
		return r.Duplicates
	case AnomalyAbortedReads:
		return r.AbortedReads
	case AnomalyOrderViolations:
		return r.OrderViolations
	case AnomalyInconsistentOffsets:
		return r.InconsistentOffsets
	case AnomalyNonMonotonicPolls:
		return r.NonMonotonicPolls
	case AnomalyPollSkips:
		return r.PollSkips
	}
	return 0
}

const maxExamples = 5

func (r *Result) example(anomaly, format string, args ...any) {
	if r.Examples == nil {
		r.Examples = map[string][]string{}
	}
	if len(r.Examples[anomaly]) < maxExamples {
		r.Examples[anomaly] = append(r.Examples[anomaly], fmt.Sprintf(format, args...))
	}
}

type loc struct {
	topic     string
	partition int32
	offset    int64
}

type rec struct {
	offset int64
	value  string
}

// Check finds the anomalies in h and judges them against the promise.
//
// The final reader's events (EvFinal) are the ground truth for what each
// log holds; acknowledgements, transaction outcomes, polls and the group's
// final offsets are compared against it. Missing events (a process killed
// before it flushed) can hide anomalies but never invent one.
func Check(h History, opts CheckOptions) Result {
	for _, e := range h {
		if e.Type != EvRun {
			continue
		}
		if opts.InTopic == "" {
			opts.InTopic = e.Topic
		}
		if opts.OutTopic == "" && len(e.Values) > 0 {
			opts.OutTopic = e.Values[0]
		}
		if opts.Promise == "" {
			opts.Promise = Mode(e.Detail)
		}
		break
	}
	res := Result{Mode: opts.Promise}

	var (
		attempted = map[string]bool{}
		txnal     = map[string]bool{}
		acked     = map[string]loc{}
		committed = map[string]bool{}
		aborted   = map[string]bool{}
		final     = map[string]map[int32][]rec{}
		group     = map[int32]int64{}
		haveGroup bool
		at        = map[loc]string{}
		conflicts = map[loc]bool{}
	)
	seen := func(l loc, v string) {
		if l.offset < 0 {
			return
		}
		if old, ok := at[l]; ok && old != v {
			if !conflicts[l] {
				conflicts[l] = true
				res.example(AnomalyInconsistentOffsets, "%s/%d@%d holds %q and %q", l.topic, l.partition, l.offset, old, v)
			}
			return
		}
		at[l] = v
	}
	for _, e := range h {
		switch e.Type {
		case EvSend:
			if e.Topic == opts.InTopic {
				attempted[e.Value] = true
				if e.Txn > 0 {
					txnal[e.Value] = true
				}
			}
		case EvAck:
			l := loc{e.Topic, e.Partition, e.Offset}
			if e.Topic == opts.InTopic {
				acked[e.Value] = l
				if e.Txn > 0 {
					txnal[e.Value] = true
				}
			}
			seen(l, e.Value)
		case EvTxnCommit:
			for _, v := range e.Values {
				committed[v] = true
			}
		case EvTxnAbort:
			for _, v := range e.Values {
				aborted[v] = true
			}
		case EvPoll:
			for i, o := range e.Offsets {
				if i < len(e.Values) {
					seen(loc{e.Topic, e.Partition, o}, e.Values[i])
				}
			}
			res.Polled += len(e.Offsets)
		case EvFinal:
			if final[e.Topic] == nil {
				final[e.Topic] = map[int32][]rec{}
			}
			for i, o := range e.Offsets {
				if i < len(e.Values) {
					final[e.Topic][e.Partition] = append(final[e.Topic][e.Partition], rec{o, e.Values[i]})
					seen(loc{e.Topic, e.Partition, o}, e.Values[i])
				}
			}
		case EvGroupOffsets:
			haveGroup = true
			for p, o := range e.Commits[opts.InTopic] {
				group[p] = o
			}
		}
	}
	res.InconsistentOffsets = len(conflicts)
	res.Attempted = len(attempted)

	// Sort and deduplicate the final reads by offset.
	for _, parts := range final {
		for p, rs := range parts {
			sort.SliceStable(rs, func(i, j int) bool { return rs[i].offset < rs[j].offset })
			out := rs[:0]
			for i, r := range rs {
				if i > 0 && r.offset == rs[i-1].offset {
					continue
				}
				out = append(out, r)
			}
			parts[p] = out
		}
	}

	// The input log: copies of each value and where each first appears.
	inCount := map[string]int{}
	inFirst := map[string]loc{}
	for _, p := range sortedParts(final[opts.InTopic]) {
		for _, r := range final[opts.InTopic][p] {
			inCount[r.value]++
			if inCount[r.value] == 1 {
				inFirst[r.value] = loc{opts.InTopic, p, r.offset}
			}
		}
	}
	res.InputRecords = len(inCount)
	// The output log: deliveries of each input value.
	outCount := map[string]int{}
	for _, p := range sortedParts(final[opts.OutTopic]) {
		for _, r := range final[opts.OutTopic][p] {
			outCount[SourceValue(r.value)]++
		}
	}

	// Acknowledged: acked, and committed if written in a transaction.
	ack := map[string]bool{}
	for v := range acked {
		if !txnal[v] || committed[v] {
			ack[v] = true
		}
	}
	res.Acked = len(ack)

	// Lost: acknowledged or logged, never delivered.
	lost := map[string]bool{}
	for _, v := range sortedKeys(ack) {
		if inCount[v] == 0 {
			lost[v] = true
			res.LostWrites++
			l := acked[v]
			res.example(AnomalyLost, "%s acknowledged at %s/%d@%d is not in the input log", v, l.topic, l.partition, l.offset)
		}
	}
	for _, v := range sortedKeys(inCount) {
		if outCount[v] > 0 {
			res.Consumed++
			continue
		}
		if lost[v] {
			continue
		}
		l := inFirst[v]
		next, ok := group[l.partition]
		if !ok || l.offset >= next {
			res.Unseen++
			res.example("unseen", "%s at %s/%d@%d never reached the output (group offset %s)", v, l.topic, l.partition, l.offset, groupOffset(next, ok && haveGroup))
			continue
		}
		lost[v] = true
		res.example(AnomalyLost, "%s at %s/%d@%d never reached the output though the group committed past it (next %d)", v, l.topic, l.partition, l.offset, next)
	}
	res.Lost = len(lost)

	// Duplicates: more than one copy in the input log or the output.
	dups := map[string]bool{}
	for _, v := range sortedKeys(inCount) {
		if inCount[v] > 1 {
			dups[v] = true
			res.example(AnomalyDuplicates, "%s is in the input log %d times", v, inCount[v])
		}
	}
	for _, v := range sortedKeys(outCount) {
		if outCount[v] > 1 && !dups[v] {
			dups[v] = true
			res.example(AnomalyDuplicates, "%s was delivered to the output %d times", v, outCount[v])
		}
	}
	res.Duplicates = len(dups)

	// Aborted reads: an aborted value returned by a read_committed poll or
	// by the final (read_committed) reader, or whose effect is in the
	// output.
	abortedSeen := map[string]bool{}
	sawAborted := func(v, where string) {
		if aborted[v] && !abortedSeen[v] {
			abortedSeen[v] = true
			res.example(AnomalyAbortedReads, "%s was aborted but %s", v, where)
		}
	}
	for _, e := range h {
		if e.Type == EvPoll && e.ReadCommitted {
			for _, v := range e.Values {
				sawAborted(v, fmt.Sprintf("a read_committed poll by %s returned it", e.Proc))
			}
		}
	}
	for _, t := range []string{opts.InTopic, opts.OutTopic} {
		for _, p := range sortedParts(final[t]) {
			for _, r := range final[t][p] {
				sawAborted(r.value, fmt.Sprintf("the final reader found it at %s/%d@%d", t, p, r.offset))
				if t == opts.OutTopic {
					sawAborted(SourceValue(r.value), fmt.Sprintf("its effect %s is at %s/%d@%d", r.value, t, p, r.offset))
				}
			}
		}
	}
	res.AbortedReads = len(abortedSeen)

	// Order: each producer's values per partition in send order; each input
	// partition's values in the output in input order.
	type prodPart struct {
		proc string
		p    int32
	}
	sends := map[prodPart][][2]int64{} // seq, offset
	for _, p := range sortedParts(final[opts.InTopic]) {
		for _, r := range final[opts.InTopic][p] {
			if inFirst[r.value].offset != r.offset {
				continue
			}
			proc, seq, err := parseInputValue(r.value)
			if err != nil {
				continue
			}
			k := prodPart{proc, p}
			sends[k] = append(sends[k], [2]int64{seq, r.offset})
		}
	}
	for _, k := range sortedProdParts(sends) {
		s := sends[k]
		sort.Slice(s, func(i, j int) bool { return s[i][0] < s[j][0] })
		for i := 1; i < len(s); i++ {
			if s[i][1] < s[i-1][1] {
				res.OrderViolations++
				res.example(AnomalyOrderViolations, "%s sent %s before %s but %s/%d holds them at %d and %d",
					k.proc, InputValue(k.proc, s[i-1][0]), InputValue(k.proc, s[i][0]), opts.InTopic, k.p, s[i-1][1], s[i][1])
			}
		}
	}
	for _, op := range sortedParts(final[opts.OutTopic]) {
		delivered := map[string]bool{}
		last := map[int32]rec{} // input partition -> last first-delivery
		for _, r := range final[opts.OutTopic][op] {
			src := SourceValue(r.value)
			if delivered[src] {
				continue
			}
			delivered[src] = true
			l, ok := inFirst[src]
			if !ok {
				continue
			}
			if prev, ok := last[l.partition]; ok && l.offset < prev.offset {
				res.OrderViolations++
				res.example(AnomalyOrderViolations, "%s/%d delivers %s (input %d/%d) after %s (input %d/%d)",
					opts.OutTopic, op, src, l.partition, l.offset, prev.value, l.partition, prev.offset)
			}
			last[l.partition] = rec{l.offset, src}
		}
	}

	// Polls: per consumer instance, offsets strictly increase and skip no
	// record the final reader found, unless a rebalance or rewind happened.
	finalOffsets := map[string]map[int32][]int64{}
	for t, parts := range final {
		finalOffsets[t] = map[int32][]int64{}
		for p, rs := range parts {
			for _, r := range rs {
				finalOffsets[t][p] = append(finalOffsets[t][p], r.offset)
			}
		}
	}
	type tp struct {
		topic string
		p     int32
	}
	lastPoll := map[string]map[tp]int64{}
	for _, e := range h {
		switch e.Type {
		case EvAssign, EvRevoke, EvLost, EvReset, EvStart:
			delete(lastPoll, e.Proc)
		case EvPoll:
			if len(e.Offsets) == 0 {
				continue
			}
			m := lastPoll[e.Proc]
			if m == nil {
				m = map[tp]int64{}
				lastPoll[e.Proc] = m
			}
			k := tp{e.Topic, e.Partition}
			prev, had := m[k]
			bad := false
			for i, o := range e.Offsets {
				before := prev
				if i > 0 {
					before = e.Offsets[i-1]
				}
				if (i > 0 || had) && o <= before {
					bad = true
				}
			}
			if bad {
				res.NonMonotonicPolls++
				res.example(AnomalyNonMonotonicPolls, "%s polled %s/%d offsets %v after %d", e.Proc, e.Topic, e.Partition, truncate(e.Offsets), prev)
			} else {
				from := e.Offsets[0]
				if had {
					if skipped, ok := firstBetween(finalOffsets[e.Topic][e.Partition], prev, from); ok {
						res.PollSkips++
						res.example(AnomalyPollSkips, "%s polled %s/%d offset %d then %d, skipping %d", e.Proc, e.Topic, e.Partition, prev, from, skipped)
					}
				}
				for i := 1; i < len(e.Offsets); i++ {
					if skipped, ok := firstBetween(finalOffsets[e.Topic][e.Partition], e.Offsets[i-1], e.Offsets[i]); ok {
						res.PollSkips++
						res.example(AnomalyPollSkips, "%s polled %s/%d offsets %d and %d in one poll, skipping %d", e.Proc, e.Topic, e.Partition, e.Offsets[i-1], e.Offsets[i], skipped)
					}
				}
			}
			m[k] = e.Offsets[len(e.Offsets)-1]
		}
	}

	for _, a := range Forbidden(res.Mode) {
		if res.Count(a) > 0 {
			res.Violations = append(res.Violations, a)
		}
	}
	if res.Violations == nil {
		res.Violations = []string{}
	}
	for _, a := range Forbidden(res.Mode) {
		if a == AnomalyLost && res.Unseen > 0 {
			res.Inconclusive = true
		}
	}
	res.OK = len(res.Violations) == 0 && !res.Inconclusive
	return res
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
