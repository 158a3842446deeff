package broker

// ListGroups (key 16), versions 0-5.
//
// Every group this node coordinates (all of them), with protocol type,
// state (v4+, filterable with StatesFilter) and type (v5+, "classic" or
// "consumer", filterable with TypesFilter), share groups (type and protocol
// type "share", Empty or Stable) among them. Groups that only hold committed
// offsets are listed as Empty classic groups, as in Kafka. With an
// authorizer, only groups the principal may DESCRIBE are listed, unless
// it may DESCRIBE the cluster.

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(16, 0, 5, (*Broker).handleListGroups) }

func (b *Broker) handleListGroups(ctx context.Context, r *server.Request) server.Reply {
	reply := b.handleGroupRequest(ctx, r)
	wait := reply.Wait
	if wait == nil {
		return b.filterListedGroups(r, reply)
	}
	reply.Wait = func() kmsg.Response {
		resp := wait()
		if lg, ok := resp.(*kmsg.ListGroupsResponse); ok {
			b.listShareGroups(r.Msg.(*kmsg.ListGroupsRequest), lg)
		}
		return resp
	}
	return b.filterListedGroups(r, reply)
}
