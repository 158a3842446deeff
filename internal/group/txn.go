package group

// Transactional offset commits (KIP-98, KIP-447), for the transaction
// coordinator.
//
// TxnOffsetCommit is validated (ValidateTxnCommit) and its offsets are
// staged per producer id (StageTxnOffsets): durable, but invisible to
// OffsetFetch. When the transaction ends, CompleteTxn writes a marker:
// COMMIT makes the staged offsets the group's committed offsets, ABORT
// drops them. Until then OffsetFetch with RequireStable answers
// UNSTABLE_OFFSET_COMMIT for the staged partitions, so a consumer taking
// over never starts from an offset a transaction is about to move.
//
// Staged offsets and markers are records in __consumer_offsets like any
// other, so a crash between staging and completion leaves the offsets
// staged after replay; the transaction coordinator's own recovery then
// completes them.

import (
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// TxnOffset is one offset staged by a transactional producer.
type TxnOffset struct {
	Topic       string
	Partition   int32
	Offset      int64
	LeaderEpoch int32
	Metadata    string
}

// ValidateTxnCommit checks a TxnOffsetCommit's group membership fields
// (KIP-447): it returns nil, or a *kerr.Error the caller answers with —
// UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, ILLEGAL_GENERATION (also for a
// KIP-848 member whose epoch is not current), or COORDINATOR_NOT_AVAILABLE.
// A producer that does not use group membership sends generation -1 and an
// empty member id and is not checked.
func (m *Machine) ValidateTxnCommit(group, memberID string, generation int32, instanceID *string) error {
	if m.failed != nil {
		return kerr.CoordinatorNotAvailable
	}
	if group == "" {
		return kerr.InvalidGroupID
	}
	g := m.groups[group]
	if g == nil && generation >= 0 && memberID == "" {
		generation = -1 // nothing to check against
	}
	var code int16
	if g != nil && g.kind == kindConsumer {
		if g.state == stateDead {
			return kerr.CoordinatorNotAvailable
		}
		if memberID == "" && generation < 0 {
			return nil
		}
		code, _ = m.validateConsumerCommit(g, memberID, generation, 0, true)
	} else {
		code = m.validateClassicCommit(g, memberID, generation, instanceID, true)
	}
	if code != 0 {
		return kerr.ErrorForCode(code)
	}
	return nil
}

// StageTxnOffsets stages offsets for producerID's open transaction; the
// reply (Err nil) for tok comes once they are durable. Staging the same
// partition again replaces the staged offset.
func (m *Machine) StageTxnOffsets(now time.Time, tok Token, producerID int64, producerEpoch int16, group string, offsets []TxnOffset) Output {
	m.begin(now)
	if m.failed != nil {
		m.out.Replies = append(m.out.Replies, Reply{Token: tok, Err: kerr.CoordinatorNotAvailable})
		return m.end()
	}
	recs := make([]record, 0, len(offsets))
	for _, o := range offsets {
		recs = append(recs, record{kind: recTxnOffset, pid: producerID, epoch: producerEpoch, group: group,
			topic: o.Topic, partition: o.Partition,
			val: Offset{Offset: o.Offset, LeaderEpoch: o.LeaderEpoch, Metadata: o.Metadata, CommitTime: now.UnixMilli()}})
	}
	m.persist(recs, Reply{Token: tok})
	return m.end()
}

// CompleteTxn writes producerID's COMMIT (commit true) or ABORT marker for
// group: on COMMIT its staged offsets become committed, on ABORT they are
// dropped. The reply for tok comes once the marker is durable. With
// nothing staged it answers at once.
func (m *Machine) CompleteTxn(now time.Time, tok Token, producerID int64, group string, commit bool) Output {
	m.begin(now)
	if m.failed != nil {
		m.out.Replies = append(m.out.Replies, Reply{Token: tok, Err: kerr.CoordinatorNotAvailable})
		return m.end()
	}
	var recs []record
	if g := m.groups[group]; g != nil && g.txn[producerID] != nil {
		recs = append(recs, record{kind: recTxnMarker, pid: producerID, group: group, commit: commit})
	}
	m.persist(recs, Reply{Token: tok})
	return m.end()
}

// HasPendingTxnOffsets reports whether an open transaction has staged an
// offset for the partition in group.
func (m *Machine) HasPendingTxnOffsets(group, topic string, partition int32) bool {
	g := m.groups[group]
	return g != nil && g.hasPendingTxn(topic, partition)
}

// PendingTxns lists the producer ids with offsets staged in group (for
// the transaction coordinator's recovery and for tests).
func (m *Machine) PendingTxns(group string) []int64 {
	g := m.groups[group]
	if g == nil {
		return nil
	}
	out := make([]int64, 0, len(g.txn))
	for pid := range g.txn {
		out = append(out, pid)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
