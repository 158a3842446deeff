package broker

// DeleteGroups (key 42), versions 0-2.
//
// Deletes groups without members together with their committed (and
// staged transactional) offsets; the answer is sent once the tombstones are
// fsynced. NON_EMPTY_GROUP while members remain, GROUP_ID_NOT_FOUND for
// unknown groups. Share groups are deleted by the share coordinator: their
// share-partition state and group configs (tombstones in
// __share_group_state, fsynced before the answer). Gaps: v3 (streams
// group semantics) is not served.

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(42, 0, 2, (*Broker).handleDeleteGroups) }

func (b *Broker) handleDeleteGroups(ctx context.Context, r *server.Request) server.Reply {
	reply := b.handleGroupRequest(ctx, r)
	if reply.Wait == nil {
		return reply
	}
	wait := reply.Wait
	reply.Wait = func() kmsg.Response {
		resp := wait()
		if dg, ok := resp.(*kmsg.DeleteGroupsResponse); ok {
			b.deleteShareGroups(dg)
		}
		return resp
	}
	return reply
}
