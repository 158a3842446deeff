package broker

// DescribeProducers (key 61), version 0.
//
// Lists each partition's active producers from its producer state: id,
// epoch, last sequence and timestamp, the coordinator epoch of its last
// marker and the first offset of its open transaction (-1 if none) — what
// `kafka-transactions.sh find-hanging` and `exactly txn find-hanging`
// compare against the coordinator to find transactions nobody will end.
//
// Errors per partition: UNKNOWN_TOPIC_OR_PARTITION.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(61, 0, 0, (*Broker).handleDescribeProducers) }

func (b *Broker) handleDescribeProducers(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.DescribeProducersRequest)
	resp := req.ResponseKind().(*kmsg.DescribeProducersResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewDescribeProducersResponseTopic()
		rt.Topic = t.Topic
		allowed := b.authorized(r, acl.OpRead, acl.ResourceTopic, t.Topic)
		for _, idx := range t.Partitions {
			rp := kmsg.NewDescribeProducersResponseTopicPartition()
			rp.Partition = idx
			p := b.partition(t.Topic, idx)
			if !allowed {
				rp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				rt.Partitions = append(rt.Partitions, rp)
				continue
			}
			if p == nil {
				rp.ErrorCode = b.absentCode(t.Topic, idx)
				rt.Partitions = append(rt.Partitions, rp)
				continue
			}
			for _, pr := range p.Producers() {
				ap := kmsg.NewDescribeProducersResponseTopicPartitionActiveProducer()
				ap.ProducerID = pr.ID
				ap.ProducerEpoch = int32(pr.Epoch)
				ap.LastSequence = -1
				if n := len(pr.Batches); n > 0 {
					ap.LastSequence = pr.Batches[n-1].LastSeq
				}
				ap.LastTimestamp = pr.LastTimestamp
				ap.CoordinatorEpoch = pr.CoordinatorEpoch
				ap.CurrentTxnStartOffset = pr.TxnFirstOffset
				rp.ActiveProducers = append(rp.ActiveProducers, ap)
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return immediate(resp)
}
