package broker

// DeleteShareGroupOffsets (key 92), version 0 (KIP-932).
//
// Drops a group's share-partition state for whole topics (the next fetch
// starts again from share.auto.offset.reset); the group must have no
// members (NON_EMPTY_GROUP). GROUP_ID_NOT_FOUND for names that are no
// share group. DELETE on the group, READ on each topic.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(92, 0, 0, (*Broker).handleDeleteShareGroupOffsets) }

func (b *Broker) handleDeleteShareGroupOffsets(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DeleteShareGroupOffsetsRequest)
	if b.groupDenied(r, acl.OpDelete, req.GroupID) {
		resp := req.ResponseKind().(*kmsg.DeleteShareGroupOffsetsResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return immediate(resp)
	}
	deny := b.topicDenied(r, acl.OpRead)
	return shareReply(func() kmsg.Response { return b.coords().share.DeleteOffsets(req, deny) })
}
