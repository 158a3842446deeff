package verify

import (
	"sort"
	"strconv"
	"strings"
)

// loc is where a record sits in a log.
type loc struct {
	topic     string
	partition int32
	offset    int64
}

// rec is one record of a final read.
type rec struct {
	offset int64
	value  string
}

// offsetConflict is an offset seen holding two different values: the value
// first seen there and the first one that contradicted it.
type offsetConflict struct {
	at        loc
	old, then string
}

// index is what one pass over a history learns, arranged the way the
// anomaly checks ask for it: by value, by partition and by process. The
// checks read only the index, never the history.
type index struct {
	in, out string

	// By value.

	// attempted holds the input values producers tried to send.
	attempted map[string]bool
	// acked holds where each acknowledged input write landed.
	acked map[string]loc
	// ack holds the acknowledged input values: acked, and known committed
	// when written in a transaction.
	ack map[string]bool
	// aborted holds every value of a transaction known to have aborted.
	aborted map[string]bool
	// inCount and inFirst are each value's copies in the final input log
	// and where its first copy sits.
	inCount map[string]int
	inFirst map[string]loc
	// outCount counts each input value's deliveries to the final output
	// log.
	outCount map[string]int

	// By partition.

	// final is what the final reader found, per topic and partition,
	// sorted by offset with one record per offset; finalOffsets holds
	// the same offsets alone.
	final        map[string]map[int32][]rec
	finalOffsets map[string]map[int32][]int64
	// group is the pipeline group's final committed offset per input
	// partition; haveGroup says whether the history holds it at all.
	group     map[int32]int64
	haveGroup bool
	// conflicts lists each offset seen holding two values once, in the
	// order the history revealed them.
	conflicts []offsetConflict

	// By process.

	// consumer holds, in history order, every poll and every event that
	// lets the same instance's polls go back (rebalances, rewinds,
	// starts).
	consumer []Event
}

// runOptions fills the zero fields of opts from h's run event.
func runOptions(h History, opts CheckOptions) CheckOptions {
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
		for _, v := range e.Values {
			if n, ok := strings.CutPrefix(v, shareLimitKey+"="); ok && opts.DeliveryLimit == 0 {
				if l, err := strconv.Atoi(n); err == nil {
					opts.DeliveryLimit = int32(l)
				}
			}
		}
		break
	}
	if opts.DeliveryLimit <= 0 {
		opts.DeliveryLimit = 5 // Kafka's default
	}
	return opts
}

// shareLimitKey names the delivery-count limit in the run event's values.
const shareLimitKey = "delivery.count.limit"

// buildIndex makes the one pass over h that every anomaly check needs.
func buildIndex(h History, in, out string) *index {
	ix := &index{
		in: in, out: out,
		attempted: map[string]bool{}, acked: map[string]loc{}, ack: map[string]bool{},
		aborted: map[string]bool{}, inCount: map[string]int{}, inFirst: map[string]loc{},
		outCount: map[string]int{}, final: map[string]map[int32][]rec{},
		finalOffsets: map[string]map[int32][]int64{}, group: map[int32]int64{},
	}
	var (
		txnal     = map[string]bool{}
		committed = map[string]bool{}
		at        = map[loc]string{}
		conflict  = map[loc]bool{}
	)
	// seen compares every value observed at an offset (acknowledged,
	// polled, finally read) with the first one observed there.
	seen := func(l loc, v string) {
		if l.offset < 0 {
			return
		}
		if old, ok := at[l]; ok && old != v {
			if !conflict[l] {
				conflict[l] = true
				ix.conflicts = append(ix.conflicts, offsetConflict{l, old, v})
			}
			return
		}
		at[l] = v
	}
	for _, e := range h {
		switch e.Type {
		case EvSend:
			if e.Topic == in {
				ix.attempted[e.Value] = true
				if e.Txn > 0 {
					txnal[e.Value] = true
				}
			}
		case EvAck:
			l := loc{e.Topic, e.Partition, e.Offset}
			if e.Topic == in {
				ix.acked[e.Value] = l
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
				ix.aborted[v] = true
			}
		case EvPoll:
			for i, o := range e.Offsets {
				if i < len(e.Values) {
					seen(loc{e.Topic, e.Partition, o}, e.Values[i])
				}
			}
			ix.consumer = append(ix.consumer, e)
		case EvSharePoll:
			for i, o := range e.Offsets {
				if i < len(e.Values) {
					seen(loc{e.Topic, e.Partition, o}, e.Values[i])
				}
			}
		case EvAssign, EvRevoke, EvLost, EvReset, EvStart:
			ix.consumer = append(ix.consumer, e)
		case EvFinal:
			if ix.final[e.Topic] == nil {
				ix.final[e.Topic] = map[int32][]rec{}
			}
			for i, o := range e.Offsets {
				if i < len(e.Values) {
					ix.final[e.Topic][e.Partition] = append(ix.final[e.Topic][e.Partition], rec{o, e.Values[i]})
					seen(loc{e.Topic, e.Partition, o}, e.Values[i])
				}
			}
		case EvGroupOffsets:
			ix.haveGroup = true
			for p, o := range e.Commits[in] {
				ix.group[p] = o
			}
		}
	}

	for v := range ix.acked {
		if !txnal[v] || committed[v] {
			ix.ack[v] = true
		}
	}
	ix.sortFinal()
	for _, p := range sortedParts(ix.final[in]) {
		for _, r := range ix.final[in][p] {
			ix.inCount[r.value]++
			if ix.inCount[r.value] == 1 {
				ix.inFirst[r.value] = loc{in, p, r.offset}
			}
		}
	}
	for _, p := range sortedParts(ix.final[out]) {
		for _, r := range ix.final[out][p] {
			ix.outCount[SourceValue(r.value)]++
		}
	}
	return ix
}

// sortFinal sorts the final reads by offset, keeps one record per offset
// (a reread partition repeats some) and fills finalOffsets.
func (ix *index) sortFinal() {
	for t, parts := range ix.final {
		ix.finalOffsets[t] = map[int32][]int64{}
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
			for _, r := range out {
				ix.finalOffsets[t][p] = append(ix.finalOffsets[t][p], r.offset)
			}
		}
	}
}

// undelivered returns, sorted, the values of the input log that never
// reached the output.
func (ix *index) undelivered() []string {
	var vs []string
	for _, v := range sortedKeys(ix.inCount) {
		if ix.outCount[v] == 0 {
			vs = append(vs, v)
		}
	}
	return vs
}

// claimed says whether the group's final committed offset lies past l: the
// pipeline claimed to have processed the record there.
func (ix *index) claimed(l loc) bool {
	next, ok := ix.group[l.partition]
	return ok && l.offset < next
}

// pollStep is one poll of one partition by one instance, with the last
// offset of that instance's previous poll of the partition since its last
// rebalance, rewind or start.
type pollStep struct {
	e    *Event
	prev int64
	had  bool
}

// backwards says whether the poll went back or repeated an offset, against
// the previous poll or within itself.
func (s pollStep) backwards() bool {
	bad := false
	for i, o := range s.e.Offsets {
		before := s.prev
		if i > 0 {
			before = s.e.Offsets[i-1]
		}
		if (i > 0 || s.had) && o <= before {
			bad = true
		}
	}
	return bad
}

// eachPoll calls f for every non-empty poll in history order, tracking each
// instance's last polled offset per partition and forgetting it whenever
// the instance rebalances, rewinds or starts.
func (ix *index) eachPoll(f func(pollStep)) {
	type tp struct {
		topic string
		p     int32
	}
	last := map[string]map[tp]int64{}
	for i := range ix.consumer {
		e := &ix.consumer[i]
		if e.Type != EvPoll {
			delete(last, e.Proc)
			continue
		}
		if len(e.Offsets) == 0 {
			continue
		}
		m := last[e.Proc]
		if m == nil {
			m = map[tp]int64{}
			last[e.Proc] = m
		}
		k := tp{e.Topic, e.Partition}
		prev, had := m[k]
		f(pollStep{e: e, prev: prev, had: had})
		m[k] = e.Offsets[len(e.Offsets)-1]
	}
}
