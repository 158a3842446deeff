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
// Any client can send this, so a marker is written only for a transaction
// nobody else ends: the producer must have a transaction open on the
// partition (else the marker would only bump its epoch, fencing a live
// producer), the transaction coordinator must not be running it (it ends
// it itself; a forged marker would commit or abort it behind its back),
// and the topic must not be internal (the coordinators' logs hold no
// markers; forged ones stopped the broker from starting).
//
// Errors per partition: UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION
// (internal topic), INVALID_TXN_STATE (nothing open, or the coordinator
// runs it), INVALID_PRODUCER_EPOCH, COORDINATOR_NOT_AVAILABLE (the
// coordinator's state cannot be read), KAFKA_STORAGE_ERROR.

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/txn"
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
					write := b.writeRequestedMarker
					if b.fromPeer(r) {
						write = b.writePeerMarker
					}
					if err := write(t.Topic, idx, &m); err != nil {
						rp.ErrorCode = errorCode(err)
						b.log.Warn("WriteTxnMarkers failed", "topic", t.Topic, "partition", idx, "producer_id", m.ProducerID, "err", err)
					} else {
						b.log.Info("transaction marker written by request", "topic", t.Topic, "partition", idx,
							"producer_id", m.ProducerID, "epoch", m.ProducerEpoch, "commit", m.Committed)
					}
					rt.Partitions = append(rt.Partitions, rp)
				}
				rm.Topics = append(rm.Topics, rt)
			}
			resp.Markers = append(resp.Markers, rm)
		}
		return resp
	}}
}

// writePeerMarker writes the marker of a transaction coordinator on
// another node of the cluster to a partition this node holds, as the
// coordinator writes its own (txn.go).
func (b *Broker) writePeerMarker(topic string, idx int32, m *kmsg.WriteTxnMarkersRequestMarker) error {
	p := b.partition(topic, idx)
	err := b.writeLocalMarker(p, txn.TopicPartition{Topic: topic, Partition: idx}, m.ProducerID, m.ProducerEpoch, m.Committed, m.CoordinatorEpoch)
	if errors.Is(err, txn.ErrPartitionGone) {
		return &kerrError{kerr.NotLeaderForPartition, fmt.Sprintf("%s-%d is not held here", topic, idx)}
	}
	return err
}

// writeRequestedMarker writes one marker a client asked for, if it ends a
// transaction nobody else ends (see the file comment).
func (b *Broker) writeRequestedMarker(topic string, idx int32, m *kmsg.WriteTxnMarkersRequestMarker) error {
	t, ok := b.catalog.Topic(topic)
	p := b.partition(topic, idx)
	if !ok || p == nil {
		return fmt.Errorf("%w: %s-%d", cluster.ErrUnknownTopic, topic, idx)
	}
	if err := refuseInternal(t); err != nil {
		return err
	}
	first := p.OpenTxn(m.ProducerID)
	if first < 0 {
		return &kerrError{kerr.InvalidTxnState, fmt.Sprintf("producer %d has no open transaction on %s-%d", m.ProducerID, topic, idx)}
	}
	running, err := b.txnRunsOn(m.ProducerID, txn.TopicPartition{Topic: topic, Partition: idx})
	if err != nil {
		return &kerrError{kerr.CoordinatorNotAvailable, fmt.Sprintf("reading the transaction coordinator's state: %v", err)}
	}
	if running {
		return &kerrError{kerr.InvalidTxnState, fmt.Sprintf("producer %d's transaction on %s-%d is run by the transaction coordinator, which ends it", m.ProducerID, topic, idx)}
	}
	// Only the transaction just checked: one the coordinator starts on
	// the partition from now on has a different first offset. (Its
	// membership is durable before its first batch is appended, so a
	// transaction open at first was either listed above or is not the
	// coordinator's.)
	return b.writeMarker(p, m.ProducerID, m.ProducerEpoch, m.Committed, m.CoordinatorEpoch, first)
}

// txnRunsOn reports whether the transaction coordinator runs a
// transaction of producer pid (as its current or previous producer id)
// that includes tp.
func (b *Broker) txnRunsOn(pid int64, tp txn.TopicPartition) (bool, error) {
	if !b.hosting() {
		return false, nil // the coordinator runs on another node of the cluster
	}
	running, wait := b.coords().txn.d.List(txn.Filter{States: []txn.State{txn.Ongoing, txn.PrepareCommit, txn.PrepareAbort}})
	if err := wait(); err != nil {
		return false, err
	}
	for _, m := range running {
		if (m.ProducerID == pid || m.LastProducerID == pid) && slices.Contains(m.Partitions, tp) {
			return true, nil
		}
	}
	return false, nil
}
