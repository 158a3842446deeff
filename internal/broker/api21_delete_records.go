package broker

// DeleteRecords (key 21), versions 0-2.
//
// Raises a partition's log start offset (durably) and deletes the segments
// that fall entirely below it. Offset -1 means the high watermark. An offset
// beyond the high watermark is OFFSET_OUT_OF_RANGE. A topic whose
// cleanup.policy lacks delete (compact alone) answers POLICY_VIOLATION, as
// Kafka does: its records go only by compaction.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(21, 0, 2, (*Broker).handleDeleteRecords) }

func (b *Broker) handleDeleteRecords(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DeleteRecordsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewDeleteRecordsResponseTopic()
		st.Topic = rt.Topic
		allowed := b.authorized(r, acl.OpDelete, acl.ResourceTopic, rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewDeleteRecordsResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.LowWatermark = -1
			p := b.partition(rt.Topic, rp.Partition)
			if !allowed {
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			} else if t, ok := b.catalog.Topic(rt.Topic); p == nil || !ok {
				sp.ErrorCode = b.absentCode(rt.Topic, rp.Partition)
			} else if err := refuseInternal(t); err != nil {
				sp.ErrorCode = errorCode(err)
			} else if policy, _ := b.catalog.TopicConfig(t, "cleanup.policy"); !cluster.PolicyDeletes(policy) {
				sp.ErrorCode = kerr.PolicyViolation.Code
			} else if lw, err := b.deleteRecords(p, rp.Offset); err != nil {
				sp.ErrorCode = errorCode(err)
			} else {
				sp.LowWatermark = lw
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return immediate(resp)
}
