package broker

// WriteTxnMarkers (key 27), versions 0-2.
//
// Writes COMMIT or ABORT markers for a producer straight to partitions. In
// Kafka the transaction coordinator sends it to partition leaders; on one
// node the coordinator writes its markers in-process, so this serves
// administrators: `kafka-transactions.sh abort` / `exactly txn abort` end a
// hanging transaction (one the coordinator does not know, e.g. left by a
// client bug) this way, with the producer id, epoch and coordinator epoch
// from DescribeProducers. Each marker is durable before the answer. A
// marker older than the producer's current epoch on the partition is
// rejected (a zombie's). v2's transaction version field is accepted; the
// marker's epoch says all the partition needs.
//
// Errors per partition: UNKNOWN_TOPIC_OR_PARTITION, INVALID_PRODUCER_EPOCH,
// KAFKA_STORAGE_ERROR.

import (
	"context"

	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(27, 0, 2, (*Broker).handleWriteTxnMarkers) }

func (b *Broker) handleWriteTxnMarkers(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.WriteTxnMarkersRequest)
	resp := req.ResponseKind().(*kmsg.WriteTxnMarkersResponse)
	// Markers wait for fsync: write them in request order on the
	// connection's writer, never on the reader.
	return server.Reply{Wait: func() kmsg.Response {
		for _, m := range req.Markers {
			rm := kmsg.NewWriteTxnMarkersResponseMarker()
			rm.ProducerID = m.ProducerID
			for _, t := range m.Topics {
				rt := kmsg.NewWriteTxnMarkersResponseMarkerTopic()
				rt.Topic = t.Topic
				for _, idx := range t.Partitions {
					rp := kmsg.NewWriteTxnMarkersResponseMarkerTopicPartition()
					rp.Partition = idx
					if p := b.partition(t.Topic, idx); p == nil {
						rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
					} else if err := p.WriteTxnMarker(m.ProducerID, m.ProducerEpoch, m.Committed, m.CoordinatorEpoch); err != nil {
						rp.ErrorCode = errorCode(err)
						b.log.Warn("WriteTxnMarkers failed", "topic", t.Topic, "partition", idx, "producer_id", m.ProducerID, "err", err)
					} else {
						b.log.Info("transaction marker written by request", "topic", t.Topic, "partition", idx,
							"producer_id", m.ProducerID, "epoch", m.ProducerEpoch, "commit", m.Committed)
					}
					b.metrics.countError(27, rp.ErrorCode)
					rt.Partitions = append(rt.Partitions, rp)
				}
				rm.Topics = append(rm.Topics, rt)
			}
			resp.Markers = append(resp.Markers, rm)
		}
		return resp
	}}
}
