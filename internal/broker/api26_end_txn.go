package broker

// EndTxn (key 26), versions 0-5.
//
// Commits or aborts the producer's transaction: the coordinator makes the
// decision (PrepareCommit/PrepareAbort) durable, writes a COMMIT or ABORT
// marker to every partition in the transaction and completes the offsets
// staged in its groups, then records CompleteCommit/CompleteAbort. Unlike
// Kafka, which answers once the decision is durable, the answer waits for
// the markers too (up to 10s; the decision stands either way), so a
// producer whose commit returned can read its records with read_committed
// at once.
//
// v5 is KIP-890 transaction version 2: every end bumps the producer epoch
// (the markers carry the new epoch, fencing any late write or end from the
// ended transaction) and the answer carries the producer id and epoch to
// continue with — a new producer id when the epoch is exhausted. An abort
// with nothing added is allowed (and bumps); a retry of an end whose answer
// was lost is recognised by the previous epoch.
//
// Errors: INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED (v2+;
// INVALID_PRODUCER_EPOCH before; also INVALID_PRODUCER_EPOCH for a
// pre-v5 producer whose transaction timed out, which KIP-588 clients
// recover from), INVALID_TXN_STATE (commit after abort, nothing to commit),
// CONCURRENT_TRANSACTIONS (still ending), TRANSACTION_ABORTABLE (v5: the
// coordinator aborted the transaction on timeout; abort and continue),
// COORDINATOR_NOT_AVAILABLE.

import (
	"context"
	"time"

	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/txn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(26, 0, 5, (*Broker).handleEndTxn) }

func (b *Broker) handleEndTxn(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.EndTxnRequest)
	resp := req.ResponseKind().(*kmsg.EndTxnResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	start := time.Now()
	res, wait := b.coords().txn.d.EndTxn(txn.EndRequest{TxnID: req.TransactionalID, ProducerID: req.ProducerID,
		ProducerEpoch: req.ProducerEpoch, Commit: req.Commit, TV2: req.Version >= 5})
	return server.Reply{Wait: func() kmsg.Response {
		if err := wait(); err != nil {
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			return resp
		}
		resp.ErrorCode = txnError(res.Err, req.Version, 2)
		if res.Err == nil && req.Version >= 5 {
			resp.ProducerID, resp.ProducerEpoch = res.ProducerID, res.ProducerEpoch
		}
		if res.Err == nil {
			b.txnMetrics.endTime.WithLabelValues(resultLabel(req.Commit)).Observe(time.Since(start).Seconds())
		}
		return resp
	}}
}
