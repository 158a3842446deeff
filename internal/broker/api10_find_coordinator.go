package broker

// FindCoordinator (key 10), versions 0-6.
//
// This node coordinates every group (key type 0) and every transactional id
// (key type 1). v4+ batches keys (CoordinatorKeys) and answers one entry per
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
			if b.groups.Failed() {
				return kerr.CoordinatorNotAvailable.Code, kmsg.StringPtr("the group coordinator's offsets log is offline")
			}
		case 1:
			if !b.authorized(r, acl.OpDescribe, acl.ResourceTransactionalID, key) {
				return kerr.TransactionalIDAuthorizationFailed.Code, nil
			}
		default:
			return kerr.InvalidRequest.Code, kmsg.StringPtr("unsupported coordinator type")
		}
		return 0, nil
	}
	if req.Version >= 4 {
		for _, key := range req.CoordinatorKeys {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key = key
			c.NodeID, c.Host, c.Port = -1, "", -1
			if c.ErrorCode, c.ErrorMessage = answer(key); c.ErrorCode == 0 {
				c.NodeID = b.cfg.NodeID
				c.Host, c.Port = b.advertised(r)
			}
			resp.Coordinators = append(resp.Coordinators, c)
		}
		return immediate(resp)
	}
	resp.NodeID, resp.Host, resp.Port = -1, "", -1
	if resp.ErrorCode, resp.ErrorMessage = answer(req.CoordinatorKey); resp.ErrorCode == 0 {
		resp.NodeID = b.cfg.NodeID
		resp.Host, resp.Port = b.advertised(r)
	}
	return immediate(resp)
}
