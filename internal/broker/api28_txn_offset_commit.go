package broker

// TxnOffsetCommit (key 28), versions 0-5.
//
// Commits consumer offsets inside the producer's transaction: they become
// the group's committed offsets if the transaction commits and are
// discarded if it aborts. The transaction coordinator first checks the
// producer: before v5 the group must have been added with AddOffsetsToTxn
// (server-side verification: a late commit from an ended transaction is
// refused); v5 (KIP-890 v2) adds the group itself. The group coordinator
// then checks membership (KIP-447: generation and member id, or static
// instance id, so a zombie from an old generation cannot commit) and stages
// the offsets durably.
//
// Errors (every partition): INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED
// (v3+; INVALID_PRODUCER_EPOCH before), INVALID_TXN_STATE (v0-4: group not
// in the transaction), TRANSACTION_ABORTABLE (v5 after a timeout abort),
// CONCURRENT_TRANSACTIONS, COORDINATOR_NOT_AVAILABLE, and the group
// coordinator's ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID,
// REBALANCE_IN_PROGRESS, GROUP_ID_NOT_FOUND; UNKNOWN_TOPIC_OR_PARTITION per
// partition. v6 (topic ids) is not served.

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/txn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(28, 0, 5, (*Broker).handleTxnOffsetCommit) }

func (b *Broker) handleTxnOffsetCommit(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.TxnOffsetCommitRequest)
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	fill := func(code int16) {
		resp.Topics = resp.Topics[:0]
		for _, t := range req.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = p.Partition, code
				if code == 0 && !b.partitionKnown(t.Topic, p.Partition) {
					rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
	}
	tc := b.coords().txn
	if req.Group == "" {
		fill(kerr.InvalidGroupID.Code)
		return immediate(resp)
	}
	v2 := req.Version >= 5
	res, wait := tc.d.Add(txn.AddRequest{TxnID: req.TransactionalID, ProducerID: req.ProducerID,
		ProducerEpoch: req.ProducerEpoch, Groups: []string{req.Group}, VerifyOnly: !v2, TV2: v2})
	return server.Reply{Wait: func() kmsg.Response {
		// The group's membership in the transaction must be durable before
		// offsets are staged under it.
		if err := wait(); err != nil {
			fill(kerr.CoordinatorNotAvailable.Code)
			return resp
		}
		switch {
		case res.Err != nil:
			fill(txnError(res.Err, req.Version, 3))
			return resp
		case len(res.MissingGroups) > 0:
			fill(kerr.InvalidTxnState.Code)
			return resp
		}
		if err := tc.groups.ValidateTxnCommit(req.Group, req.MemberID, req.Generation, req.InstanceID); err != nil {
			fill(anyErrorCode(err))
			return resp
		}
		var known []kmsg.TxnOffsetCommitRequestTopic
		for _, t := range req.Topics {
			kt := t
			kt.Partitions = nil
			for _, p := range t.Partitions {
				if b.partitionKnown(t.Topic, p.Partition) {
					kt.Partitions = append(kt.Partitions, p)
				}
			}
			if len(kt.Partitions) > 0 {
				known = append(known, kt)
			}
		}
		if err := tc.groups.StageTxnOffsets(req.ProducerID, req.ProducerEpoch, req.Group, known); err != nil {
			fill(anyErrorCode(err))
			return resp
		}
		fill(0)
		return resp
	}}
}
