package broker

// FindCoordinator (key 10), versions 0-6.
//
// A single node coordinates every group (key type 0) and every
// transactional id (key type 1); in a cluster the node holding the
// coordinators' internal topics does (cluster.go), and while it is
// fenced lookups answer COORDINATOR_NOT_AVAILABLE. v4+ batches keys (CoordinatorKeys) and answers one entry per
// key. Other key types (share groups) are INVALID_REQUEST. While the group
// coordinator cannot persist (its offsets log failed) group lookups answer
// COORDINATOR_NOT_AVAILABLE.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(10, 0, 6, (*Broker).handleFindCoordinator) }

func (b *Broker) handleFindCoordinator(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.FindCoordinatorRequest)
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	answer := func(key string) (code int16, msg *string) {
		switch req.CoordinatorType {
		case 0:
			if !b.authorized(r, acl.OpDescribe, acl.ResourceGroup, key) {
				return kerr.GroupAuthorizationFailed.Code, nil
			}
			if b.hosting() && b.coords().groups.Failed() {
				return kerr.CoordinatorNotAvailable.Code, kmsg.StringPtr("the group coordinator's offsets log is offline")
			}
		case 1:
			if !b.authorized(r, acl.OpDescribe, acl.ResourceTransactionalID, key) {
				return kerr.TransactionalIDAuthorizationFailed.Code, nil
			}
		default:
			return kerr.InvalidRequest.Code, kmsg.StringPtr("unsupported coordinator type")
		}
		if b.coordinatorNode(req.CoordinatorType) < 0 {
			return kerr.CoordinatorNotAvailable.Code, kmsg.StringPtr("the node holding the coordinator is offline")
		}
		return 0, nil
	}
	// where is the coordinator's node and its address for this client.
	where := func() (int32, string, int32) {
		id := b.coordinatorNode(req.CoordinatorType)
		host, port, ok := b.endpointOf(r, id)
		if !ok {
			return -1, "", -1
		}
		return id, host, port
	}
	if req.Version >= 4 {
		for _, key := range req.CoordinatorKeys {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key = key
			c.NodeID, c.Host, c.Port = -1, "", -1
			if c.ErrorCode, c.ErrorMessage = answer(key); c.ErrorCode == 0 {
				c.NodeID, c.Host, c.Port = where()
			}
			resp.Coordinators = append(resp.Coordinators, c)
		}
		return immediate(resp)
	}
	resp.NodeID, resp.Host, resp.Port = -1, "", -1
	if resp.ErrorCode, resp.ErrorMessage = answer(req.CoordinatorKey); resp.ErrorCode == 0 {
		resp.NodeID, resp.Host, resp.Port = where()
	}
	return immediate(resp)
}
