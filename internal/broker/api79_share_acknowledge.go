package broker

// ShareAcknowledge (key 79), versions 1-2 (KIP-932).
//
// Acknowledgements outside a fetch, in the member's share session (epoch
// 0 is INVALID_SHARE_SESSION_EPOCH, -1 closes the session after them):
// ACCEPT, RELEASE, REJECT, gap and (v2) RENEW per offset range; a partition
// whose records are not all acquired by the member answers
// INVALID_RECORD_STATE and changes nothing. Answered only once the new
// state is fsynced in __share_group_state. READ on the group and topics.
// Gaps: v0 (early access) is not served.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(79, 1, 2, (*Broker).handleShareAcknowledge) }

func (b *Broker) handleShareAcknowledge(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.ShareAcknowledgeRequest)
	if req.GroupID != nil && b.groupDenied(r, acl.OpRead, *req.GroupID) {
		resp := req.ResponseKind().(*kmsg.ShareAcknowledgeResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return immediate(resp)
	}
	lim := b.shareLimits(r)
	return shareReply(func() kmsg.Response { return b.coords().share.Acknowledge(req, lim) })
}
