package broker

// InitProducerId (key 22), versions 0-5.
//
// Without a transactional id (idempotent producer) any broker answers with
// a fresh producer id at epoch 0; ids come from blocks reserved durably in
// __transaction_state, so they are unique across restarts. With one, the
// transaction coordinator bumps the id's epoch — fencing every earlier
// producer instance — after aborting a running transaction (answered with
// CONCURRENT_TRANSACTIONS until the abort is done, as Kafka does), and moves
// to a new producer id when the epoch is exhausted. v3+ carries the
// producer's current id and epoch (KIP-360): the producer recovers, and a
// retry of a call whose answer was lost gets the same answer.
//
// Errors: INVALID_REQUEST (empty transactional id), INVALID_TRANSACTION_
// TIMEOUT (above transaction.max.timeout.ms), CONCURRENT_TRANSACTIONS,
// PRODUCER_FENCED (v4+; INVALID_PRODUCER_EPOCH before),
// COORDINATOR_NOT_AVAILABLE (coordinator log failed). No 2PC (v6, KIP-939).

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/txn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(22, 0, 5, (*Broker).handleInitProducerID) }

func (b *Broker) handleInitProducerID(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.InitProducerIDRequest)
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if !b.hosting() {
		// A cluster node without the transaction coordinator: an
		// idempotent producer (clusterGate sent transactional ones to
		// the coordinator) gets an id of this node's reserved block.
		id, err := b.idempotentPID()
		if err != nil {
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			return immediate(resp)
		}
		resp.ProducerID, resp.ProducerEpoch = id, 0
		return immediate(resp)
	}
	res, wait := b.coords().txn.d.InitProducerID(txn.InitRequest{
		TxnID: req.TransactionalID, TimeoutMs: req.TransactionTimeoutMillis,
		ProducerID: req.ProducerID, ProducerEpoch: req.ProducerEpoch,
	})
	return server.Reply{Wait: func() kmsg.Response {
		if err := wait(); err != nil {
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			return resp
		}
		resp.ErrorCode = txnError(res.Err, req.Version, 4)
		if res.Err == nil {
			resp.ProducerID, resp.ProducerEpoch = res.ProducerID, res.ProducerEpoch
		}
		return resp
	}}
}
