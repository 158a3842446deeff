package broker

// ShareGroupDescribe (key 77), version 1 (KIP-932).
//
// Group epoch, assignment epoch, assignor ("simple"), state (Empty,
// Stable) and per member: epoch, rack, client id and host, subscription
// and assignment (topic ids and names). GROUP_ID_NOT_FOUND for names that
// are no share group; GROUP_AUTHORIZATION_FAILED per group without
// DESCRIBE. Gaps: authorized operations are not computed.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(77, 1, 1, (*Broker).handleShareGroupDescribe) }

func (b *Broker) handleShareGroupDescribe(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.ShareGroupDescribeRequest)
	var allowed []string
	denied := map[string]bool{}
	for _, g := range req.GroupIDs {
		if b.groupDenied(r, acl.OpDescribe, g) {
			denied[g] = true
			continue
		}
		allowed = append(allowed, g)
	}
	sub := *req
	sub.GroupIDs = allowed
	resp := b.coords().share.Describe(&sub)
	out := req.ResponseKind().(*kmsg.ShareGroupDescribeResponse)
	i := 0
	for _, g := range req.GroupIDs {
		if denied[g] {
			rg := kmsg.NewShareGroupDescribeResponseGroup()
			rg.GroupID = g
			rg.ErrorCode = kerr.GroupAuthorizationFailed.Code
			out.Groups = append(out.Groups, rg)
			continue
		}
		out.Groups = append(out.Groups, resp.Groups[i])
		i++
	}
	return immediate(out)
}
