package broker

// DescribeTransactions (key 65), version 0.
//
// Describes transactional ids from the coordinator: state (Kafka's names:
// Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit,
// CompleteAbort), producer id and epoch, timeout, start time and the
// partitions of the running transaction. Consumer groups in the
// transaction are not listed as __consumer_offsets partitions (groups are
// not stored in a partitioned topic here).
//
// Errors per id: TRANSACTIONAL_ID_NOT_FOUND, INVALID_REQUEST (empty id),
// COORDINATOR_NOT_AVAILABLE, TRANSACTIONAL_ID_AUTHORIZATION_FAILED without
// DESCRIBE on the id; partitions of topics the principal may not DESCRIBE
// are left out, as in Kafka.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/txn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(65, 0, 0, (*Broker).handleDescribeTransactions) }

func (b *Broker) handleDescribeTransactions(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DescribeTransactionsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
	allowed := make([]bool, len(req.TransactionalIDs))
	for i, id := range req.TransactionalIDs {
		allowed[i] = b.authorized(r, acl.OpDescribe, acl.ResourceTransactionalID, id)
	}
	metas, found, wait := b.coords().txn.d.Describe(req.TransactionalIDs)
	return server.Reply{Wait: func() kmsg.Response {
		failed := wait() != nil
		for i, id := range req.TransactionalIDs {
			st := kmsg.NewDescribeTransactionsResponseTransactionState()
			st.TransactionalID = id
			st.ProducerID, st.ProducerEpoch, st.StartTimestamp = -1, -1, -1
			switch {
			case !allowed[i]:
				st.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
			case failed:
				st.ErrorCode = kerr.CoordinatorNotAvailable.Code
			case id == "":
				st.ErrorCode = kerr.InvalidRequest.Code
			case !found[i]:
				st.ErrorCode = kerr.TransactionalIDNotFound.Code
			default:
				fillTxnState(&st, &metas[i])
				// Only the partitions of topics the principal may describe, as Kafka.
				kept := st.Topics[:0]
				for _, t := range st.Topics {
					if b.visible(r, acl.OpDescribe, acl.ResourceTopic, t.Topic) {
						kept = append(kept, t)
					}
				}
				st.Topics = kept
			}
			resp.TransactionStates = append(resp.TransactionStates, st)
		}
		return resp
	}}
}

func fillTxnState(st *kmsg.DescribeTransactionsResponseTransactionState, m *txn.Meta) {
	st.State = m.State.String()
	st.TimeoutMillis = m.TimeoutMs
	st.StartTimestamp = m.StartMs
	st.ProducerID, st.ProducerEpoch = m.ProducerID, m.ProducerEpoch
	for _, tp := range m.Partitions {
		n := len(st.Topics)
		if n == 0 || st.Topics[n-1].Topic != tp.Topic {
			t := kmsg.NewDescribeTransactionsResponseTransactionStateTopic()
			t.Topic = tp.Topic
			st.Topics = append(st.Topics, t)
			n++
		}
		st.Topics[n-1].Partitions = append(st.Topics[n-1].Partitions, tp.Partition)
	}
}
