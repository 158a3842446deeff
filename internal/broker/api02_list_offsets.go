package broker

// ListOffsets (key 2), versions 1-6.
//
// Timestamp -2 (earliest) answers the log start offset; -1 (latest) answers
// the high watermark, or the last stable offset for read_committed (v2+
// isolation level). A real timestamp answers the first record whose
// timestamp is at or after it (time index, then the records of one batch),
// or offset -1 if there is none. CurrentLeaderEpoch (v4+) above 0 is
// UNKNOWN_LEADER_EPOCH: leadership never changes on a single node.
//
// Gap: v7+ (max timestamp, KIP-734; earliest-local, KIP-1005) is not served.

import (
	"context"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(2, 1, 6, (*Broker).handleListOffsets) }

func (b *Broker) handleListOffsets(_ context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.ListOffsetsRequest)
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewListOffsetsResponseTopic()
		st.Topic = rt.Topic
		allowed := b.authorized(r, acl.OpDescribe, acl.ResourceTopic, rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.Timestamp, sp.Offset = -1, -1
			p := b.partition(rt.Topic, rp.Partition)
			switch {
			case !allowed:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case p == nil:
				sp.ErrorCode = b.absentCode(rt.Topic, rp.Partition)
			case p.Err() != nil:
				// Offline (an I/O failure or corruption): its offsets
				// cannot be vouched for.
				sp.ErrorCode = kerr.KafkaStorageError.Code
			case b.epochError(p, rp.CurrentLeaderEpoch) != 0:
				sp.ErrorCode = b.epochError(p, rp.CurrentLeaderEpoch)
			default:
				sp.LeaderEpoch = b.leaderEpochOf(p)
				sp.Offset, sp.Timestamp, sp.ErrorCode = b.listOffset(p, rp.Timestamp, req.IsolationLevel == 1)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return immediate(resp)
}

func (b *Broker) listOffset(p *partition.Partition, ts int64, readCommitted bool) (offset, timestamp int64, code int16) {
	switch ts {
	case -2:
		return p.LogStartOffset(), -1, 0
	case -1:
		if readCommitted {
			return p.LastStableOffset(), -1, 0
		}
		return p.HighWatermark(), -1, 0
	}
	if ts < 0 {
		return -1, -1, kerr.InvalidRequest.Code
	}
	batch, err := p.Log().ReadBatchAtTime(ts)
	if err != nil {
		return -1, -1, errorCode(err)
	}
	if batch == nil {
		return -1, -1, 0
	}
	h, err := record.Parse(batch)
	if err != nil {
		return -1, -1, errorCode(err)
	}
	limit := p.HighWatermark()
	if readCommitted {
		limit = p.LastStableOffset()
	}
	offset, timestamp = -1, -1
	if h.Attributes&record.AttrLogAppendTime != 0 {
		// Every record carries the batch's append time.
		offset, timestamp = h.BaseOffset, h.MaxTimestamp
	} else {
		err = record.ForEach(h, batch, func(rec record.Record) bool {
			if t := h.FirstTimestamp + rec.TimestampDelta; t >= ts {
				offset, timestamp = h.BaseOffset+int64(rec.OffsetDelta), t
				return false
			}
			return true
		})
		if err != nil {
			return -1, -1, errorCode(err)
		}
	}
	if offset >= limit {
		return -1, -1, 0
	}
	return offset, timestamp, 0
}
