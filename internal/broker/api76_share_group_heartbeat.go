package broker

// ShareGroupHeartbeat (key 76), version 1 (KIP-932; v0 was the early
// access version and is not served).
//
// Joining (epoch 0, client-generated member id), leaving (-1) and
// heartbeats of share-group members (package share, groups.go). The
// broker assigns with its "simple" assignor: each subscribed topic's
// partitions spread over the members subscribed to it, shared when there
// are more members than partitions. Session timeout and heartbeat interval
// are group.share.session.timeout.ms / group.share.heartbeat.interval.ms;
// group.share.max.size and group.share.max.groups bound members and groups
// (GROUP_MAX_SIZE_REACHED). Errors: FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID,
// GROUP_ID_NOT_FOUND, INCONSISTENT_GROUP_PROTOCOL (the name is a classic
// or consumer group), INVALID_REQUEST, GROUP_AUTHORIZATION_FAILED (READ
// on the group). Gaps: membership is not durable (a restarted broker
// answers UNKNOWN_MEMBER_ID and members rejoin); rack-aware assignment.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/share"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(76, 1, 1, (*Broker).handleShareGroupHeartbeat) }

func (b *Broker) handleShareGroupHeartbeat(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.ShareGroupHeartbeatRequest)
	if b.groupDenied(r, acl.OpRead, req.GroupID) {
		resp := req.ResponseKind().(*kmsg.ShareGroupHeartbeatResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return immediate(resp)
	}
	if deny := b.topicDenied(r, acl.OpDescribe); deny != nil {
		for _, t := range req.SubscribedTopicNames {
			if deny(t) {
				resp := req.ResponseKind().(*kmsg.ShareGroupHeartbeatResponse)
				resp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				return immediate(resp)
			}
		}
	}
	client := share.Client{ID: r.Header.ClientID, Host: clientHost(r)}
	return shareReply(func() kmsg.Response { c := b.coords(); return c.share.Heartbeat(req, client, c.groups.HasGroup) })
}
