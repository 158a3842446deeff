package verify

import (
	"fmt"
	"sort"
	"time"
)

// Share-mode anomalies (Forbidden(Share) adds AnomalyLost and
// AnomalyInconsistentOffsets).
const (
	// AnomalyOverDelivered: a record delivered with a count above the
	// limit, twice with the same count (two holders of one acquisition),
	// or again after an ACCEPT or REJECT of it was confirmed.
	AnomalyOverDelivered = "over_delivered"
	// AnomalyAcceptedTwice: two confirmed ACCEPTs of one record.
	AnomalyAcceptedTwice = "accepted_twice"
)

// exampleUnobserved keys the examples of records that ended after
// deliveries no consumer saw (ShareOutcome.EndedUnobserved: not an
// anomaly).
const exampleUnobserved = "unobserved"

// HiddenDeliveryWindow bounds how long before a consumer records a
// delivery the broker may have made it: a share fetch answered while the
// worker waits for its acknowledgements (at most 15 s) is handed over by
// the next poll (0.5 s). The checker looks this far back for events that
// could have hidden later deliveries of a record.
const HiddenDeliveryWindow = 16 * time.Second

// ShareOutcome is what became of the input records in share mode. Each
// record (a partition and offset of the final input log) is counted in
// exactly one of Accepted, AcceptedUnconfirmed, Archived, EndedUnobserved,
// Lost (the part of Result.Lost that is not LostWrites) or Result.Unseen.
type ShareOutcome struct {
	// DeliveryLimit is group.share.delivery.count.limit.
	DeliveryLimit int32 `json:"delivery_limit"`
	// Deliveries counts deliveries consumers recorded; Redelivered counts
	// records delivered more than once.
	Deliveries  int `json:"deliveries"`
	Redelivered int `json:"redelivered"`
	// Accepted counts records with a confirmed ACCEPT.
	Accepted int `json:"accepted"`
	// AcceptedUnconfirmed counts records whose last delivery was ACCEPTed
	// without an answer (lost in a fault) and that were never delivered
	// again: the ACCEPT took effect, or the record was archived after
	// deliveries nobody saw; either ends it.
	AcceptedUnconfirmed int `json:"accepted_unconfirmed"`
	// Rejected counts records archived by a REJECT, confirmed or sent on
	// their last delivery.
	Rejected int `json:"rejected"`
	// ArchivedAtLimit counts records whose delivery number limit was seen
	// and not accepted: archived by the broker.
	ArchivedAtLimit int `json:"archived_at_limit"`
	// EndedUnobserved counts finished records with no ACCEPT or REJECT and
	// no delivery at the limit seen, for which enough events (broker
	// kills, connection resets, dropped answers, consumer starts and
	// ends) happened after their last seen delivery to have hidden the
	// rest of their deliveries: archived, as far as the history can tell.
	EndedUnobserved int `json:"ended_unobserved"`
}

// shareDelivery is one acquisition of a record a consumer recorded.
type shareDelivery struct {
	proc  string
	count int32
	t     int64
}

// shareAckRec is one acknowledgement a consumer sent (or was about to).
type shareAckRec struct {
	proc      string
	count     int32
	kind      string
	t         int64
	confirmed bool
}

// shareRecord is everything the history says about one input record.
type shareRecord struct {
	deliveries []shareDelivery
	acks       []*shareAckRec
}

// shareIndex is the share-mode view of a history.
type shareIndex struct {
	recs  map[loc]*shareRecord
	spso  map[int32]int64
	haveS bool
	// hides are the times of events that may hide a delivery from the
	// history: a broker kill, a connection reset or a dropped answer
	// breaks fetches in flight, and a consumer's start (the assignment
	// moves) or end (what it fetched and never polled is released) may
	// strand what it fetched. Unknown ends count as the end of time.
	hides []int64
}

func buildShareIndex(h History, in string) *shareIndex {
	sx := &shareIndex{recs: map[loc]*shareRecord{}, spso: map[int32]int64{}}
	get := func(l loc) *shareRecord {
		r := sx.recs[l]
		if r == nil {
			r = &shareRecord{}
			sx.recs[l] = r
		}
		return r
	}
	type pp struct {
		proc string
		p    int32
	}
	pending := map[pp][]*shareAckRec{}
	started := map[string]bool{}
	ended := map[string]bool{}
	for _, e := range h {
		switch e.Type {
		case EvSharePoll:
			if e.Topic != in {
				continue
			}
			for i, o := range e.Offsets {
				if i < len(e.Counts) {
					r := get(loc{in, e.Partition, o})
					r.deliveries = append(r.deliveries, shareDelivery{e.Proc, e.Counts[i], e.Time})
				}
			}
		case EvShareAck:
			if e.Topic != in {
				continue
			}
			k := pp{e.Proc, e.Partition}
			pending[k] = nil
			for i, o := range e.Offsets {
				if i < len(e.Counts) && i < len(e.Acks) {
					a := &shareAckRec{proc: e.Proc, count: e.Counts[i], kind: e.Acks[i], t: e.Time}
					get(loc{in, e.Partition, o}).acks = append(get(loc{in, e.Partition, o}).acks, a)
					pending[k] = append(pending[k], a)
				}
			}
		case EvShareAckResult:
			k := pp{e.Proc, e.Partition}
			if e.OK {
				for _, a := range pending[k] {
					a.confirmed = true
				}
			}
			delete(pending, k)
		case EvShareOffsets:
			sx.haveS = true
			for p, o := range e.Commits[in] {
				sx.spso[p] = o
			}
		case EvFault:
			switch {
			case e.Detail == string(FaultBrokerKill), e.Detail == string(FaultReset),
				e.Detail == FaultDroppedResponse && e.Value == "79": // ShareAcknowledge
				sx.hides = append(sx.hides, e.Time)
			}
		case EvStart:
			// The worker's own start event names its role.
			if e.Detail == RoleShare && !started[e.Proc] {
				started[e.Proc] = true
				sx.hides = append(sx.hides, e.Time)
			}
		case EvExit:
			if !ended[e.Proc] {
				ended[e.Proc] = true
				if started[e.Proc] {
					sx.hides = append(sx.hides, e.Time)
				}
			}
		}
	}
	for p := range started {
		if !ended[p] {
			sx.hides = append(sx.hides, 1<<62)
		}
	}
	sort.Slice(sx.hides, func(i, j int) bool { return sx.hides[i] < sx.hides[j] })
	return sx
}

// hidesSince counts the events at or after t that may hide a delivery.
func (sx *shareIndex) hidesSince(t int64) int {
	return len(sx.hides) - sort.Search(len(sx.hides), func(i int) bool { return sx.hides[i] >= t })
}

// checkShare judges a share-mode history. Each record of the final input
// log is settled by what the history shows (see ShareOutcome); a record
// at or past the group's final share-partition start offset is unseen.
func checkShare(ix *index, sx *shareIndex, limit int32, r *Result) {
	so := &ShareOutcome{DeliveryLimit: limit}
	r.Share = so
	r.Attempted = len(ix.attempted)
	r.Acked = len(ix.ack)
	r.InputRecords = len(ix.inCount)
	for _, v := range sortedKeys(ix.ack) {
		if ix.inCount[v] == 0 {
			r.LostWrites++
			l := ix.acked[v]
			r.example(AnomalyLost, "%s acknowledged at %s/%d@%d is not in the input log", v, l.topic, l.partition, l.offset)
		}
	}
	r.Lost = r.LostWrites
	checkInconsistentOffsets(ix, r)

	overDelivered := map[loc]bool{}
	over := func(l loc, format string, args ...any) {
		if !overDelivered[l] {
			overDelivered[l] = true
			r.example(AnomalyOverDelivered, "%s/%d@%d "+format, append([]any{l.topic, l.partition, l.offset}, args...)...)
		}
	}
	for _, p := range sortedParts(ix.final[ix.in]) {
		for _, rc := range ix.final[ix.in][p] {
			l := loc{ix.in, p, rc.offset}
			sr := sx.recs[l]
			if sr == nil {
				sr = &shareRecord{}
			}
			so.Deliveries += len(sr.deliveries)
			if len(sr.deliveries) > 1 {
				so.Redelivered++
			}
			// Every acquisition adds one to the count, durably before it
			// is handed out: counts of one record never repeat, never
			// pass the limit, and none follows a confirmed end.
			byCount := map[int32]string{}
			var last int32
			var lastT int64 = -1 << 62
			for _, d := range sr.deliveries {
				if d.count > limit {
					over(l, "was delivered with count %d, over the limit %d (to %s)", d.count, limit, d.proc)
				}
				if prev, ok := byCount[d.count]; ok {
					over(l, "was delivered twice with count %d (to %s and %s)", d.count, prev, d.proc)
				}
				byCount[d.count] = d.proc
				last = max(last, d.count)
				lastT = max(lastT, d.t)
			}
			accepts := 0
			var ended *shareAckRec
			for _, a := range sr.acks {
				last = max(last, a.count)
				lastT = max(lastT, a.t)
				if !a.confirmed || a.kind == AckRelease {
					continue
				}
				if a.kind == AckAccept {
					accepts++
				}
				if ended == nil || a.count < ended.count {
					ended = a
				}
			}
			if ended != nil {
				for _, d := range sr.deliveries {
					if d.count > ended.count {
						over(l, "was delivered again (count %d, to %s) after %s's %s of delivery %d was confirmed", d.count, d.proc, ended.proc, ended.kind, ended.count)
						break
					}
				}
			}
			if accepts > 1 {
				r.AcceptedTwice++
				r.example(AnomalyAcceptedTwice, "%s/%d@%d (%s) has %d confirmed ACCEPTs", l.topic, l.partition, l.offset, rc.value, accepts)
			}

			// Settled?
			spso, ok := sx.spso[p]
			if !ok || rc.offset >= spso {
				r.Unseen++
				r.example(exampleUnseen, "%s/%d@%d (%s) was not settled at the end (share-partition start offset %s; last delivery count %d)",
					l.topic, l.partition, l.offset, rc.value, groupOffset(spso, ok), last)
				continue
			}
			var lastAck *shareAckRec
			for _, a := range sr.acks {
				if a.count == last && (lastAck == nil || a.kind != AckRelease) {
					lastAck = a
				}
			}
			switch {
			case accepts > 0:
				so.Accepted++
			case lastAck != nil && lastAck.kind == AckAccept:
				so.AcceptedUnconfirmed++
			case ended != nil || (lastAck != nil && lastAck.kind == AckReject):
				so.Rejected++
			case last >= limit:
				so.ArchivedAtLimit++
			case sx.hidesSince(lastT-int64(HiddenDeliveryWindow)) >= int(limit-last):
				so.EndedUnobserved++
				r.example(exampleUnobserved, "%s/%d@%d (%s) ended after delivery %d of %d without an ACCEPT or REJECT; %d later deliveries were not seen",
					l.topic, l.partition, l.offset, rc.value, last, limit, limit-last)
			default:
				r.Lost++
				what := "never delivered"
				if last > 0 {
					what = fmt.Sprintf("last delivered with count %d", last)
				}
				r.example(AnomalyLost, "%s/%d@%d (%s) was settled (share-partition start offset %d) but %s, never ACCEPTed or REJECTed, below the limit %d, with too few faults since to hide %d deliveries",
					l.topic, l.partition, l.offset, rc.value, spso, what, limit, limit-last)
			}
		}
	}
	r.OverDelivered = len(overDelivered)
	r.Polled = so.Deliveries
	r.Consumed = so.Accepted + so.AcceptedUnconfirmed
}
