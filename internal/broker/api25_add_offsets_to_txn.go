package broker

// AddOffsetsToTxn (key 25), versions 0-4.
//
// Adds a consumer group to the producer's transaction, so offsets it then
// commits with TxnOffsetCommit are applied or discarded with the
// transaction. (Kafka adds the group's __consumer_offsets partition; here
// the coordinator records the group and completes it through the group
// coordinator when the transaction ends.) KIP-890 v2 clients skip this and
// use TxnOffsetCommit v5, which adds the group itself.
//
// Errors: INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED (v2+;
// INVALID_PRODUCER_EPOCH before), CONCURRENT_TRANSACTIONS,
// COORDINATOR_NOT_AVAILABLE, INVALID_REQUEST (empty group).

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/txn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(25, 0, 4, (*Broker).handleAddOffsetsToTxn) }

func (b *Broker) handleAddOffsetsToTxn(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.AddOffsetsToTxnRequest)
	resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	switch {
	case req.Group == "":
		resp.ErrorCode = kerr.InvalidRequest.Code
		return immediate(resp)
	}
	res, wait := b.coords().txn.d.Add(txn.AddRequest{TxnID: req.TransactionalID, ProducerID: req.ProducerID,
		ProducerEpoch: req.ProducerEpoch, Groups: []string{req.Group}})
	return server.Reply{Wait: func() kmsg.Response {
		if err := wait(); err != nil {
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		} else {
			resp.ErrorCode = txnError(res.Err, req.Version, 2)
		}
		return resp
	}}
}
