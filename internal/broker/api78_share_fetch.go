package broker

// ShareFetch (key 78), versions 1-2 (KIP-932).
//
// Share sessions (ShareSessionEpoch 0 opens one, replacing the member's
// previous; -1 closes it after its acknowledgements; otherwise the epoch
// must be the next, wrapping from MaxInt32 to 1): SHARE_SESSION_NOT_FOUND,
// INVALID_SHARE_SESSION_EPOCH, SHARE_SESSION_LIMIT_REACHED
// (group.share.max.share.sessions), INVALID_REQUEST for acknowledgements
// on epoch 0. Piggybacked acknowledgements (ACCEPT, RELEASE, REJECT, gap,
// v2 RENEW) are applied first, per partition (AcknowledgeErrorCode:
// INVALID_RECORD_STATE when a record is not acquired by the member), then
// records are acquired from every partition of the session up to
// MaxRecords (strict in both acquire modes) and MaxBytes: Available records
// first (redeliveries), then new ones up to the high watermark (the LSO
// under share.isolation.level=read_committed; aborted transactions'
// records and control records are archived, never delivered). The answer
// carries whole stored batches and the acquired offset ranges with their
// delivery counts, and is sent only once the acquisitions and
// acknowledgements are fsynced in __share_group_state. With nothing to
// acquire it long-polls up to MaxWaitMillis (at most 30 s). IsRenewAck
// requests acquire nothing. READ on the group (else
// GROUP_AUTHORIZATION_FAILED) and on each topic
// (TOPIC_AUTHORIZATION_FAILED per partition).
// Gaps: v0 (early access) is not served; MinBytes and BatchSize are
// ignored (any acquisition answers at once).

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(78, 1, 2, (*Broker).handleShareFetch) }

func (b *Broker) handleShareFetch(ctx context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.ShareFetchRequest)
	if req.GroupID != nil && b.groupDenied(r, acl.OpRead, *req.GroupID) {
		resp := req.ResponseKind().(*kmsg.ShareFetchResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return immediate(resp)
	}
	lim := b.shareLimits(r)
	return shareReply(func() kmsg.Response { return b.coords().share.Fetch(ctx, req, lim) })
}
