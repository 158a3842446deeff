package broker

// ListTransactions (key 66), versions 0-2.
//
// Lists the coordinator's transactional ids with their producer id and
// state, filtered by state names (unknown names are echoed back in
// UnknownStateFilters and match nothing), producer ids, v1's minimum
// running time (only transactions running at least that long; -1 for
// all) and v2's transactional id pattern (RE2 syntax, which covers the
// Java patterns tools send in practice).
//
// Errors: COORDINATOR_NOT_AVAILABLE, INVALID_REGULAR_EXPRESSION.

import (
	"context"
	"regexp"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/txn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(66, 0, 2, (*Broker).handleListTransactions) }

func (b *Broker) handleListTransactions(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.ListTransactionsRequest)
	resp := req.ResponseKind().(*kmsg.ListTransactionsResponse)
	f := txn.Filter{ProducerIDs: req.ProducerIDFilters, MinDurationMs: req.DurationFilterMillis}
	unknownOnly := false
	for _, name := range req.StateFilters {
		st, ok := txn.ParseState(name)
		if !ok {
			resp.UnknownStateFilters = append(resp.UnknownStateFilters, name)
			continue
		}
		f.States = append(f.States, st)
	}
	if len(req.StateFilters) > 0 && len(f.States) == 0 {
		unknownOnly = true // only unknown states asked for: nothing matches
	}
	if req.TransactionalIDPattern != nil && *req.TransactionalIDPattern != "" {
		re, err := regexp.Compile(*req.TransactionalIDPattern)
		if err != nil {
			resp.ErrorCode = kerr.InvalidRegularExpression.Code
			return immediate(resp)
		}
		f.Pattern = re
	}
	metas, wait := b.coords().txn.d.List(f)
	return server.Reply{Wait: func() kmsg.Response {
		if err := wait(); err != nil {
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			return resp
		}
		if unknownOnly {
			return resp
		}
		for _, m := range metas {
			if !b.visible(r, acl.OpDescribe, acl.ResourceTransactionalID, m.ID) {
				continue // as Kafka: listed only if describable
			}
			st := kmsg.NewListTransactionsResponseTransactionState()
			st.TransactionalID, st.ProducerID, st.TransactionState = m.ID, m.ProducerID, m.State.String()
			resp.TransactionStates = append(resp.TransactionStates, st)
		}
		return resp
	}}
}
