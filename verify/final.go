package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// FinalRead is what a fresh reader found in one topic.
type FinalRead struct {
	// Topic is the topic read.
	Topic string
	// Records holds each partition's records in offset order.
	Records map[int32][]Record
	// End is each partition's end offset the read went to (the last
	// stable offset when reading committed).
	End map[int32]int64
	// HighWatermark is each partition's high watermark; above End when a
	// transaction was still open.
	HighWatermark map[int32]int64
}

// Record is one record of a final read.
type Record struct {
	// Offset is where the record is.
	Offset int64
	// Value is the record's value.
	Value string
}

// Events turns the read into EvFinal events for proc, in chunks of at most
// 5000 records.
func (f FinalRead) Events(proc string) []Event {
	var out []Event
	now := time.Now().UnixNano()
	for _, p := range sortedParts(f.Records) {
		rs := f.Records[p]
		for i := 0; i < len(rs); i += 5000 {
			e := Event{Time: now, Proc: proc, Type: EvFinal, Topic: f.Topic, Partition: p}
			for _, r := range rs[i:min(i+5000, len(rs))] {
				e.Offsets = append(e.Offsets, r.Offset)
				e.Values = append(e.Values, r.Value)
			}
			out = append(out, e)
		}
	}
	return out
}

// ReadTopic reads every record of topic from the log start to the end as
// it is now, with raw fetches so that the end is reached exactly even when
// it is a transaction marker. readCommitted reads up to the last stable
// offset and drops aborted records, as a read_committed consumer would.
//
// The read starts over, every 250 ms until ctx ends, while it fails with
// an error a cluster gives for a while as it recovers from a fault: a
// partition whose leader is being elected, a node that is restarting and
// refuses connections, a topic the answering node does not know yet. A
// verifier's final read comes right after its last fault heals, and such
// an error then says nothing about the guarantees. The last error is
// returned when ctx ends.
func ReadTopic(ctx context.Context, cl *kgo.Client, topic string, readCommitted bool) (FinalRead, error) {
	var out FinalRead
	err := untilSettled(ctx, func() (err error) {
		out, err = readTopicOnce(ctx, cl, topic, readCommitted)
		return err
	})
	return out, err
}

// untilSettled calls try until it succeeds or fails with an error that is
// not transient, pausing 250 ms between tries; when ctx ends it returns
// try's last error. The checks after a fault heals use it, so that a
// cluster still recovering makes them wait rather than fail.
func untilSettled(ctx context.Context, try func() error) error {
	for {
		err := try()
		if err == nil || !transient(err) || !sleepCtx(ctx, 250*time.Millisecond) {
			return err
		}
	}
}

// transient reports whether err is one a recovering cluster gives for a
// while: a retriable Kafka error, a refused connection, or a kadm request
// whose every failed piece failed with one of those.
func transient(err error) bool {
	// First: ShardErrors unwraps to all its pieces, and errors.As would
	// judge it by whichever piece came first.
	if se, ok := errors.AsType[*kadm.ShardErrors](err); ok {
		for _, e := range se.Errs {
			if !transient(e.Err) {
				return false
			}
		}
		return len(se.Errs) > 0
	}
	return kerr.IsRetriable(err) || errors.Is(err, syscall.ECONNREFUSED)
}

func readTopicOnce(ctx context.Context, cl *kgo.Client, topic string, readCommitted bool) (FinalRead, error) {
	adm := kadm.NewClient(cl)
	out := FinalRead{Topic: topic, Records: map[int32][]Record{}, End: map[int32]int64{}, HighWatermark: map[int32]int64{}}
	meta, err := adm.Metadata(ctx, topic)
	if err != nil {
		return out, err
	}
	td, ok := meta.Topics[topic]
	if !ok {
		return out, fmt.Errorf("topic %s: missing from the metadata answer", topic)
	}
	if td.Err != nil {
		return out, fmt.Errorf("topic %s: %w", topic, td.Err)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return out, err
	}
	hws, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return out, err
	}
	ends := hws
	if readCommitted {
		if ends, err = adm.ListCommittedOffsets(ctx, topic); err != nil {
			return out, err
		}
	}
	level := kgo.ReadUncommitted()
	var isolation int8
	if readCommitted {
		level, isolation = kgo.ReadCommitted(), 1
	}
	parts := make([]int32, 0, len(td.Partitions))
	for p := range td.Partitions {
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	for _, p := range parts {
		pd := td.Partitions[p]
		if pd.Leader < 0 {
			// A partition error alone (REPLICA_NOT_AVAILABLE beside a
			// leader) does not stop the read; no leader does.
			err := pd.Err
			if err == nil {
				err = kerr.LeaderNotAvailable
			}
			return out, fmt.Errorf("partition %s/%d has no leader: %w", topic, p, err)
		}
		start, ok := starts.Lookup(topic, p)
		if ok && start.Err != nil {
			return out, fmt.Errorf("start offset of %s/%d: %w", topic, p, start.Err)
		}
		end, ok := ends.Lookup(topic, p)
		if !ok {
			return out, fmt.Errorf("end offset of %s/%d: missing from the answer", topic, p)
		}
		if end.Err != nil {
			return out, fmt.Errorf("end offset of %s/%d: %w", topic, p, end.Err)
		}
		hw, _ := hws.Lookup(topic, p)
		out.End[p], out.HighWatermark[p] = end.Offset, hw.Offset
		out.Records[p] = nil
		offset := max(start.Offset, 0)
		stalls := 0
		for offset < end.Offset {
			req := kmsg.NewPtrFetchRequest()
			req.ReplicaID = -1
			req.MaxWaitMillis = 100
			req.MinBytes = 1
			req.MaxBytes = 16 << 20
			req.IsolationLevel = isolation
			req.SessionEpoch = -1
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic, rt.TopicID = topic, td.ID
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, offset, 8<<20
			rp.CurrentLeaderEpoch, rp.LogStartOffset = -1, -1
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)
			resp, err := req.RequestWith(ctx, cl.Broker(int(pd.Leader)))
			if err != nil {
				return out, fmt.Errorf("fetching %s/%d@%d: %w", topic, p, offset, err)
			}
			var fp *kmsg.FetchResponseTopicPartition
			for i := range resp.Topics {
				for j := range resp.Topics[i].Partitions {
					if resp.Topics[i].Partitions[j].Partition == p {
						fp = &resp.Topics[i].Partitions[j]
					}
				}
			}
			if fp == nil {
				return out, fmt.Errorf("fetching %s/%d@%d: partition missing from the response (error %d)", topic, p, offset, resp.ErrorCode)
			}
			got, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
				Offset: offset, IsolationLevel: level, Topic: topic, Partition: p,
			}, fp, kgo.DefaultDecompressor(), nil)
			if got.Err != nil {
				return out, fmt.Errorf("fetching %s/%d@%d: %w", topic, p, offset, got.Err)
			}
			for _, r := range got.Records {
				out.Records[p] = append(out.Records[p], Record{Offset: r.Offset, Value: string(r.Value)})
			}
			if next <= offset {
				stalls++
				if stalls > 50 {
					return out, fmt.Errorf("fetching %s/%d: stuck at %d below end %d", topic, p, offset, end.Offset)
				}
				select {
				case <-time.After(100 * time.Millisecond):
				case <-ctx.Done():
					return out, ctx.Err()
				}
				continue
			}
			stalls = 0
			offset = next
		}
	}
	return out, nil
}
