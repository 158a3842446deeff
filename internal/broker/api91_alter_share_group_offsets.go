package broker

// AlterShareGroupOffsets (key 91), version 0 (KIP-932).
//
// Sets the SPSO of share partitions of a group without members (else
// NON_EMPTY_GROUP), dropping their in-flight records; -1 is the high
// watermark, -2 the log start, anything outside [log start, high
// watermark] OFFSET_OUT_OF_RANGE. Works for a group that does not exist
// yet (its state is created, as kafka-share-groups.sh --reset-offsets
// expects). Durable before the answer. READ on the group and topics.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(91, 0, 0, (*Broker).handleAlterShareGroupOffsets) }

func (b *Broker) handleAlterShareGroupOffsets(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.AlterShareGroupOffsetsRequest)
	if b.groupDenied(r, acl.OpRead, req.GroupID) {
		resp := req.ResponseKind().(*kmsg.AlterShareGroupOffsetsResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return immediate(resp)
	}
	if b.coords().groups.HasGroup(req.GroupID) {
		resp := req.ResponseKind().(*kmsg.AlterShareGroupOffsetsResponse)
		resp.ErrorCode = kerr.GroupIDNotFound.Code
		return immediate(resp)
	}
	deny := b.topicDenied(r, acl.OpRead)
	return shareReply(func() kmsg.Response { return b.coords().share.AlterOffsets(req, deny) })
}
