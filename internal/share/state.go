package share

// Share-partition state: the window of in-flight records of one
// (group, topic, partition).

import (
	"errors"
	"time"
)

// RecordState is an in-flight record's state; the values are Kafka's
// (KIP-932: AVAILABLE 0, ACQUIRED 1, ACKNOWLEDGED 2, ARCHIVED 4).
type RecordState int8

// In-flight record states.
const (
	Available    RecordState = 0
	Acquired     RecordState = 1
	Acknowledged RecordState = 2
	Archived     RecordState = 4
)

// Acknowledge types of ShareFetch/ShareAcknowledge batches.
const (
	AckGap     int8 = 0 // offsets that are no records (compaction, control)
	AckAccept  int8 = 1
	AckRelease int8 = 2
	AckReject  int8 = 3
	AckRenew   int8 = 4 // v2: extend the acquisition lock
)

// ErrInvalidRecordState is an acknowledgement of a record that is not
// acquired by the acknowledging member (INVALID_RECORD_STATE).
var ErrInvalidRecordState = errors.New("record is not acquired by this member")

// inflight is one offset in the window [SPSO, SPEO).
type inflight struct {
	state    RecordState
	count    int16     // deliveries so far
	deadline time.Time // acquisition lock expiry (Acquired only)
	member   string    // holder (Acquired only)
}

// Partition is one share partition's state. The zero value is an
// uninitialized partition (no SPSO yet).
type Partition struct {
	Initialized bool
	SPSO        int64
	recs        []inflight // recs[i] is offset SPSO+i
	// ev counts what happened to the records until the coordinator
	// collects it (metrics); it is never persisted.
	ev events
}

// events are counts of record transitions, for metrics.
type events struct {
	acquired    int64               // acquisitions (deliveries)
	redelivered int64               // acquisitions with a delivery count above 1
	acked       [AckRenew + 1]int64 // acknowledged records by type (gaps not counted)
	lockExpired int64               // acquisitions whose lock expired
	archived    int64               // records archived at the delivery-count limit
}

func (e *events) add(o events) {
	e.acquired += o.acquired
	e.redelivered += o.redelivered
	for i := range e.acked {
		e.acked[i] += o.acked[i]
	}
	e.lockExpired += o.lockExpired
	e.archived += o.archived
}

// SPEO is the share-partition end offset: the first offset never acquired.
func (p *Partition) SPEO() int64 { return p.SPSO + int64(len(p.recs)) }

// InFlight is the number of records in the window (bounded by
// group.share.partition.max.record.locks).
func (p *Partition) InFlight() int { return len(p.recs) }

// State returns the state and delivery count of offset off; offsets
// below SPSO report Acknowledged (done), offsets at or past SPEO
// Available with no delivery.
func (p *Partition) State(off int64) (RecordState, int16) {
	switch {
	case off < p.SPSO:
		return Acknowledged, 0
	case off >= p.SPEO():
		return Available, 0
	}
	r := p.recs[off-p.SPSO]
	return r.state, r.count
}

// Reset moves SPSO to off and forgets every in-flight record (initial
// position, AlterShareGroupOffsets, log truncation below).
func (p *Partition) Reset(off int64) {
	p.Initialized = true
	p.SPSO = off
	p.recs = nil
}

// advance drops the settled prefix (Acknowledged or Archived) of the
// window, moving SPSO.
func (p *Partition) advance() {
	n := 0
	for n < len(p.recs) && (p.recs[n].state == Acknowledged || p.recs[n].state == Archived) {
		n++
	}
	if n > 0 {
		p.SPSO += int64(n)
		p.recs = append(p.recs[:0:0], p.recs[n:]...)
	}
}

// TrimTo forgets offsets below start (the log start moved past them:
// retention or DeleteRecords); it reports whether anything changed.
func (p *Partition) TrimTo(start int64) bool {
	if start <= p.SPSO {
		return false
	}
	if start >= p.SPEO() {
		p.Reset(start)
		return true
	}
	p.recs = append(p.recs[:0:0], p.recs[start-p.SPSO:]...)
	p.SPSO = start
	return true
}

// Expire releases every acquisition whose lock passed now: the record
// becomes Available again, or Archived once it was delivered limit
// times. It reports whether anything changed.
func (p *Partition) Expire(now time.Time, limit int) bool {
	changed := false
	for i := range p.recs {
		r := &p.recs[i]
		if r.state == Acquired && !now.Before(r.deadline) {
			p.ev.lockExpired++
			p.release(r, limit)
			changed = true
		}
	}
	if changed {
		p.advance()
	}
	return changed
}

// ReleaseMember releases everything member holds (it left the group or its
// share session closed).
func (p *Partition) ReleaseMember(member string, limit int) bool {
	changed := false
	for i := range p.recs {
		r := &p.recs[i]
		if r.state == Acquired && r.member == member {
			p.release(r, limit)
			changed = true
		}
	}
	if changed {
		p.advance()
	}
	return changed
}

func (p *Partition) release(r *inflight, limit int) {
	r.member, r.deadline = "", time.Time{}
	if int(r.count) >= limit {
		r.state = Archived
		p.ev.archived++
	} else {
		r.state = Available
	}
}

// Holds reports whether member holds an acquired record in the window.
func (p *Partition) Holds(member string) bool {
	for _, r := range p.recs {
		if r.state == Acquired && r.member == member {
			return true
		}
	}
	return false
}

// NextAvailable returns the lowest offset that an acquisition could hand
// out: an Available record in the window, else SPEO.
func (p *Partition) NextAvailable() int64 {
	for i, r := range p.recs {
		if r.state == Available {
			return p.SPSO + int64(i)
		}
	}
	return p.SPEO()
}

// HasAvailable reports whether an Available record is in the window.
func (p *Partition) HasAvailable() bool { return p.NextAvailable() < p.SPEO() }

// Acquirer hands out records of one fetch. Offsets are offered in
// ascending order; each offered offset either is a record that may be
// delivered (Offer) or no deliverable record (Skip: a control record,
// an aborted transaction's record, a gap).
type Acquirer struct {
	p        *Partition
	member   string
	deadline time.Time
	maxLocks int
	limit    int
	left     int // records still wanted
	// Ranges acquired, with their delivery counts (contiguous offsets of
	// equal count merged).
	Ranges []AcquiredRange
}

// AcquiredRange is a run of acquired offsets with one delivery count.
type AcquiredRange struct {
	First, Last int64
	Count       int16
}

// Acquire starts an acquisition for member of at most maxRecords records,
// locked until deadline.
func (p *Partition) Acquire(member string, deadline time.Time, maxRecords, maxLocks, limit int) *Acquirer {
	return &Acquirer{p: p, member: member, deadline: deadline, maxLocks: maxLocks, limit: limit, left: maxRecords}
}

// Full reports whether no further offset can be acquired (the record
// count is reached, or the window is at max.record.locks and offset would
// extend it).
func (a *Acquirer) Full(off int64) bool {
	if a.left <= 0 {
		return true
	}
	return off >= a.p.SPEO() && len(a.p.recs) >= a.maxLocks
}

// Offer acquires off if it is Available (or new, extending the window
// over any gap before it, which is archived); it reports whether it did.
func (a *Acquirer) Offer(off int64) bool {
	p := a.p
	if off < p.SPSO || a.Full(off) {
		return false
	}
	for off > p.SPEO() {
		p.recs = append(p.recs, inflight{state: Archived})
	}
	if off == p.SPEO() {
		p.recs = append(p.recs, inflight{})
	}
	r := &p.recs[off-p.SPSO]
	if r.state != Available {
		return false
	}
	r.state, r.member, r.deadline = Acquired, a.member, a.deadline
	r.count++
	p.ev.acquired++
	if r.count > 1 {
		p.ev.redelivered++
	}
	a.left--
	if n := len(a.Ranges); n > 0 && a.Ranges[n-1].Last == off-1 && a.Ranges[n-1].Count == r.count {
		a.Ranges[n-1].Last = off
	} else {
		a.Ranges = append(a.Ranges, AcquiredRange{First: off, Last: off, Count: r.count})
	}
	return true
}

// Skip archives off if it extends the window (never delivered: a control
// record or a record of an aborted transaction). It reports false once
// the window is at max.record.locks and off lies past it.
func (a *Acquirer) Skip(off int64) bool {
	p := a.p
	if off < p.SPEO() {
		return true
	}
	for off >= p.SPEO() {
		if len(p.recs) >= a.maxLocks {
			return false
		}
		p.recs = append(p.recs, inflight{state: Archived})
	}
	return true
}

// Done settles the window after an acquisition.
func (a *Acquirer) Done() { a.p.advance() }

// Acknowledge applies one acknowledgement batch of member over
// [first, last]: types has one entry for the whole range or one per
// offset. Every offset must be Acquired by member (gaps excepted), else
// nothing changes and ErrInvalidRecordState is returned. renewUntil is the
// new lock deadline for AckRenew.
func (p *Partition) Acknowledge(member string, first, last int64, types []int8, limit int, renewUntil time.Time) error {
	if last < first || len(types) == 0 || (len(types) != 1 && int64(len(types)) != last-first+1) {
		return errInvalidBatch
	}
	typeAt := func(off int64) int8 {
		if len(types) == 1 {
			return types[0]
		}
		return types[off-first]
	}
	for _, t := range types {
		if t < AckGap || t > AckRenew {
			return errInvalidBatch
		}
	}
	// Only offsets inside the window are visited, so a batch claiming a
	// huge range costs at most the window (max.record.locks).
	lo, hi := max(first, p.SPSO), min(last, p.SPEO()-1)
	if len(types) == 1 {
		if types[0] != AckGap && (first < p.SPSO || last >= p.SPEO()) {
			return ErrInvalidRecordState
		}
	} else {
		for off := first; off <= last; off++ {
			if typeAt(off) != AckGap && (off < p.SPSO || off >= p.SPEO()) {
				return ErrInvalidRecordState
			}
		}
	}
	for off := lo; off <= hi; off++ {
		if typeAt(off) == AckGap {
			continue
		}
		r := p.recs[off-p.SPSO]
		if r.state != Acquired || r.member != member {
			return ErrInvalidRecordState
		}
	}
	for off := lo; off <= hi; off++ {
		r := &p.recs[off-p.SPSO]
		if t := typeAt(off); t != AckGap {
			p.ev.acked[t]++
		}
		switch typeAt(off) {
		case AckGap:
			if r.state == Acquired && r.member == member {
				r.state, r.member, r.deadline = Archived, "", time.Time{}
			}
		case AckAccept:
			r.state, r.member, r.deadline = Acknowledged, "", time.Time{}
		case AckRelease:
			p.release(r, limit)
		case AckReject:
			r.state, r.member, r.deadline = Archived, "", time.Time{}
		case AckRenew:
			r.deadline = renewUntil
		}
	}
	p.advance()
	return nil
}

// errInvalidBatch is a malformed acknowledgement batch (INVALID_REQUEST).
var errInvalidBatch = errors.New("invalid acknowledgement batch")

// ErrInvalidBatch reports whether err is a malformed acknowledgement batch.
func ErrInvalidBatch(err error) bool { return errors.Is(err, errInvalidBatch) }

// Counts summarizes the window for describe and metrics.
type Counts struct {
	Available, Acquired, Acknowledged, Archived int
}

// Counts counts the window's records by state.
func (p *Partition) Counts() Counts {
	var c Counts
	for _, r := range p.recs {
		switch r.state {
		case Available:
			c.Available++
		case Acquired:
			c.Acquired++
		case Acknowledged:
			c.Acknowledged++
		case Archived:
			c.Archived++
		}
	}
	return c
}
