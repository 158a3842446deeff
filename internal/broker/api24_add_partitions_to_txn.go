package broker

// AddPartitionsToTxn (key 24), versions 0-5.
//
// Adds partitions to the producer's transaction, starting one if none runs
// (the transaction timeout starts then). Adding partitions already in the
// transaction persists nothing. v4+ batches several transactions and can
// verify only (VerifyOnly: report which partitions are not in the running
// transaction, add nothing) — what brokers use for server-side
// verification; here the produce path verifies in-process. v5 marks a
// KIP-890 v2 client, which may get TRANSACTION_ABORTABLE.
//
// Errors: UNKNOWN_TOPIC_OR_PARTITION for partitions that do not exist, or
// INVALID_TOPIC_EXCEPTION for internal topics (the coordinator would write
// the transaction's markers there), and then OPERATION_NOT_ATTEMPTED for the
// rest of that transaction;
// INVALID_PRODUCER_ID_MAPPING, PRODUCER_FENCED (v2+; INVALID_PRODUCER_EPOCH
// before), CONCURRENT_TRANSACTIONS (the previous transaction is still
// ending), COORDINATOR_NOT_AVAILABLE. Verify-only: INVALID_TXN_STATE (v4) or
// TRANSACTION_ABORTABLE (v5) for partitions not in the transaction.
//
// Authorization, as Kafka: v0-3 (clients) need WRITE on the transactional
// id (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and on each topic (else
// TOPIC_AUTHORIZATION_FAILED for its partitions, OPERATION_NOT_ATTEMPTED
// for the rest); v4+ (broker to broker) needs CLUSTER_ACTION alone.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/txn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(24, 0, 5, (*Broker).handleAddPartitionsToTxn) }

// addTxnTopic is one topic of one transaction in either request shape.
type addTxnTopic struct {
	topic string
	parts []int32
}

func (b *Broker) handleAddPartitionsToTxn(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.AddPartitionsToTxnRequest)
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	type pending struct {
		topics []addTxnTopic
		res    txn.AddResult
		code   int16 // set when the coordinator was not asked
		verify bool
		denied map[string]bool // topics the principal may not WRITE
	}
	var items []pending
	var waits []txn.Waiter
	run := func(id string, pid int64, epoch int16, verify bool, topics []addTxnTopic) {
		it := pending{topics: topics, verify: verify}
		switch {
		case req.Version >= 4 && !b.authorizedCluster(r, acl.OpClusterAction): // broker-to-broker only
			it.code = kerr.ClusterAuthorizationFailed.Code
		case req.Version >= 4:
			// A broker acting for its clients: Kafka checks nothing more.
		case !b.authorized(r, acl.OpWrite, acl.ResourceTransactionalID, id):
			it.code = kerr.TransactionalIDAuthorizationFailed.Code
		default:
			for _, t := range topics {
				if !b.authorized(r, acl.OpWrite, acl.ResourceTopic, t.topic) {
					if it.denied == nil {
						it.denied = map[string]bool{}
					}
					it.denied[t.topic] = true
					it.code = kerr.TopicAuthorizationFailed.Code
				}
			}
		}
		var tps []txn.TopicPartition
		for _, t := range topics {
			for _, p := range t.parts {
				if it.code != 0 && it.code != kerr.UnknownTopicOrPartition.Code && it.code != kerr.InvalidTopicException.Code {
					// refused before looking at partitions
				} else if !b.partitionKnown(t.topic, p) {
					it.code = kerr.UnknownTopicOrPartition.Code
				} else if it.code == 0 && b.internalTopic(t.topic) {
					it.code = kerr.InvalidTopicException.Code
				}
				tps = append(tps, txn.TopicPartition{Topic: t.topic, Partition: p})
			}
		}
		switch {
		case it.code != 0:
		default:
			var w txn.Waiter
			it.res, w = b.coords().txn.d.Add(txn.AddRequest{TxnID: id, ProducerID: pid, ProducerEpoch: epoch,
				Partitions: tps, VerifyOnly: verify, TV2: req.Version >= 5})
			waits = append(waits, w)
		}
		items = append(items, it)
	}
	if req.Version < 4 {
		topics := make([]addTxnTopic, len(req.Topics))
		for i, t := range req.Topics {
			topics[i] = addTxnTopic{t.Topic, t.Partitions}
		}
		run(req.TransactionalID, req.ProducerID, req.ProducerEpoch, false, topics)
	} else {
		for _, tx := range req.Transactions {
			topics := make([]addTxnTopic, len(tx.Topics))
			for i, t := range tx.Topics {
				topics[i] = addTxnTopic{t.Topic, t.Partitions}
			}
			run(tx.TransactionalID, tx.ProducerID, tx.ProducerEpoch, tx.VerifyOnly, topics)
		}
	}
	return server.Reply{Wait: func() kmsg.Response {
		failed := false
		for _, w := range waits {
			if w() != nil {
				failed = true
			}
		}
		codeFor := func(it *pending, t string, p int32) int16 {
			switch {
			case failed:
				return kerr.CoordinatorNotAvailable.Code
			case it.code == kerr.TopicAuthorizationFailed.Code:
				if it.denied[t] {
					return it.code
				}
				return kerr.OperationNotAttempted.Code
			case it.code == kerr.UnknownTopicOrPartition.Code:
				if !b.partitionKnown(t, p) {
					return it.code
				}
				return kerr.OperationNotAttempted.Code
			case it.code == kerr.InvalidTopicException.Code:
				if b.internalTopic(t) {
					return it.code
				}
				return kerr.OperationNotAttempted.Code
			case it.code != 0:
				return it.code
			case it.res.Err != nil:
				return txnError(it.res.Err, req.Version, 2)
			}
			for _, m := range it.res.Missing {
				if m.Topic == t && m.Partition == p {
					if req.Version >= 5 {
						return kerr.TransactionAbortable.Code
					}
					return kerr.InvalidTxnState.Code
				}
			}
			return 0
		}
		if req.Version < 4 {
			it := &items[0]
			for _, t := range it.topics {
				rt := kmsg.NewAddPartitionsToTxnResponseTopic()
				rt.Topic = t.topic
				for _, p := range t.parts {
					rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
					rp.Partition, rp.ErrorCode = p, codeFor(it, t.topic, p)
					rt.Partitions = append(rt.Partitions, rp)
				}
				resp.Topics = append(resp.Topics, rt)
			}
			return resp
		}
		for i, tx := range req.Transactions {
			it := &items[i]
			rtx := kmsg.NewAddPartitionsToTxnResponseTransaction()
			rtx.TransactionalID = tx.TransactionalID
			for _, t := range it.topics {
				rt := kmsg.NewAddPartitionsToTxnResponseTransactionTopic()
				rt.Topic = t.topic
				for _, p := range t.parts {
					rp := kmsg.NewAddPartitionsToTxnResponseTransactionTopicPartition()
					rp.Partition, rp.ErrorCode = p, codeFor(it, t.topic, p)
					rt.Partitions = append(rt.Partitions, rp)
				}
				rtx.Topics = append(rtx.Topics, rt)
			}
			resp.Transactions = append(resp.Transactions, rtx)
		}
		return resp
	}}
}
