package broker

// OffsetForLeaderEpoch (key 23), versions 2-4.
//
// An unreplicated partition's only leader epoch is 0; a replicated one's
// is its raft group's term. Every epoch up to the current one ends at the
// log end offset (a replicated log holds only committed entries, never
// truncated by a later leader); a later requested epoch is unknown
// (-1/-1, as Kafka answers for an epoch beyond the leader's). A
// CurrentLeaderEpoch other than the served one is FENCED_LEADER_EPOCH
// (older) or UNKNOWN_LEADER_EPOCH (newer). Clients use this to detect log
// truncation.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(23, 2, 4, (*Broker).handleOffsetForLeaderEpoch) }

func (b *Broker) handleOffsetForLeaderEpoch(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.OffsetForLeaderEpochRequest)
	resp := req.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetForLeaderEpochResponseTopic()
		st.Topic = rt.Topic
		allowed := b.authorized(r, acl.OpDescribe, acl.ResourceTopic, rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.LeaderEpoch, sp.EndOffset = -1, -1
			p := b.partition(rt.Topic, rp.Partition)
			switch {
			case !allowed:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case p == nil:
				sp.ErrorCode = b.absentCode(rt.Topic, rp.Partition)
			case b.epochError(p, rp.CurrentLeaderEpoch) != 0:
				sp.ErrorCode = b.epochError(p, rp.CurrentLeaderEpoch)
			case rp.LeaderEpoch <= b.leaderEpochOf(p):
				// A replicated partition's log holds only committed
				// entries, which no later leader truncates: for any epoch
				// up to the current one, nothing a consumer read below the
				// log end diverged (see DESIGN.md, "Replication").
				sp.LeaderEpoch, sp.EndOffset = max(rp.LeaderEpoch, 0), p.LogEndOffset()
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return immediate(resp)
}
