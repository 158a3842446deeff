package broker

// Fetch (key 1), versions 4-16.
//
// Returns stored record batches byte-for-byte (no re-encoding), bounded by
// the high watermark (read_uncommitted) or the last stable offset
// (read_committed), which on this node only ever cover fsynced data. Size
// limits follow KIP-74: the first batch of the first non-empty partition is
// returned even if it exceeds MaxBytes or the partition's MaxBytes, later
// partitions only while the response stays within MaxBytes. The broker caps
// MaxBytes at fetch.max.bytes and each PartitionMaxBytes at
// fetch.partition.max.bytes (the first-batch rule still applies, so a
// consumer always progresses). Long-poll: if fewer than MinBytes are
// available the response waits up to MaxWaitMillis (at most 30 s), woken as
// soon as any requested partition's high watermark moves, and gives up at
// once when the client disconnects. Records are read only when the
// connection's writer reaches the response, and not into the process: the
// response names CRC-checked ranges of the segment files (fetch_response.go)
// that the writer sends with sendfile on plaintext listeners and through a
// 64 KiB buffer on TLS ones.
// v13+ identifies topics by topic ID (UNKNOWN_TOPIC_ID when unknown).
// read_committed responses stop at the LSO and list the aborted
// transactions overlapping the returned batches, sorted by first offset.
//
// Gaps: incremental fetch sessions (KIP-227) are not kept — every response
// has session ID 0, which tells clients to keep sending full requests;
// a request naming an existing session gets FETCH_SESSION_ID_NOT_FOUND.
// Rack-aware preferred read replicas do not apply to a single node.
//
// Quotas (quotas.go): MaxBytes is capped at what consumer_byte_rate allows
// in one window; a throttled fetch is answered with no data.

import (
	"context"
	"slices"
	"time"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(1, 4, 16, (*Broker).handleFetch) }

// maxFetchWait bounds a long poll whatever MaxWaitMillis asks (Kafka
// leaves it to the client): no request holds a connection's answers, its
// watchers and its goroutine's state longer than this. Clients ask for 0.5 s
// (Java, librdkafka) or 5 s (franz-go).
const maxFetchWait = 30 * time.Second

// fetchLimits are the broker's caps on one fetch response.
type fetchLimits struct {
	total        int // fetch.max.bytes
	perPartition int // fetch.partition.max.bytes
	// denied are the request's topics (by index) the principal may not
	// READ, decided once before the long poll.
	denied map[int]bool
	// req is the request, for the leader hints of partitions held
	// elsewhere (the listener it came in on).
	req *server.Request
}

func (b *Broker) fetchLimits() fetchLimits {
	return fetchLimits{total: int(b.brokerInt("fetch.max.bytes")), perPartition: int(b.brokerInt("fetch.partition.max.bytes"))}
}

// handleFetch answers from the connection's writer, always: the records
// are read when the response's turn to be written comes, so a client that
// pipelines fetches and does not read the answers makes the broker hold
// one response, not one per queued request.
func (b *Broker) handleFetch(ctx context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.FetchRequest)
	if req.SessionID != 0 {
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		resp.ErrorCode = kerr.FetchSessionIDNotFound.Code
		return immediate(resp)
	}
	b.fetchQuotaCap(r, req)
	limits := b.fetchLimits()
	limits.req = r
	for ti, rt := range req.Topics {
		name := rt.Topic
		if req.Version >= 13 {
			t, ok := b.catalog.TopicByID(rt.TopicID)
			if !ok {
				continue
			}
			name = t.Name
		}
		if !b.authorized(r, acl.OpRead, acl.ResourceTopic, name) {
			if limits.denied == nil {
				limits.denied = map[int]bool{}
			}
			limits.denied[ti] = true
		}
	}
	wait := min(time.Duration(max(req.MaxWaitMillis, 0))*time.Millisecond, maxFetchWait)
	deadline := time.Now().Add(wait)
	return server.Reply{Wait: func() kmsg.Response { return b.longPoll(ctx, req, limits, deadline) }}
}

// longPoll returns as soon as MinBytes are readable or a partition errors,
// else when deadline passes or ctx ends (the client went away or the
// server is closing), with what is readable then.
func (b *Broker) longPoll(ctx context.Context, req *kmsg.FetchRequest, limits fetchLimits, deadline time.Time) kmsg.Response {
	if ctx.Err() != nil {
		// The connection is gone (or the server closing): the fetches
		// still queued behind an unread answer must not each read their
		// records on the way out. An empty answer changes nothing.
		return req.ResponseKind()
	}
	resp, ready, watched := b.fetchOnce(req, limits)
	if ready || len(watched) == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
		return resp
	}
	wake := make(chan struct{}, 1)
	for _, p := range watched {
		defer p.Watch(wake)()
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		// Re-check after registering so an advance between the first
		// read and the registration is not missed. Each answer given up
		// for a newer one releases the files it pinned.
		resp.Release()
		if resp, ready, _ = b.fetchOnce(req, limits); ready {
			return resp
		}
		select {
		case <-wake:
		case <-timer.C:
			resp.Release()
			resp, _, _ = b.fetchOnce(req, limits)
			return resp
		case <-ctx.Done():
			return resp
		}
	}
}

// fetchOnce builds a response from what is readable now, its record
// batches left in the segment files (fetchResponse). It reports whether
// the response should be sent now (MinBytes reached or a partition
// errored) and the partitions worth waiting on.
func (b *Broker) fetchOnce(req *kmsg.FetchRequest, limits fetchLimits) (*fetchResponse, bool, []*partition.Partition) {
	resp := &fetchResponse{FetchResponse: req.ResponseKind().(*kmsg.FetchResponse)}
	readCommitted := req.IsolationLevel == 1
	replicaFetch := b.replicaFetch(limits, req)
	budget := min(max(int(req.MaxBytes), 0), limits.total)
	total := 0
	errored := false
	var watched []*partition.Partition
	for ti := range req.Topics {
		rt := &req.Topics[ti]
		st := kmsg.NewFetchResponseTopic()
		st.Topic = rt.Topic
		st.TopicID = rt.TopicID
		var t *cluster.Topic
		var known bool
		if req.Version >= 13 {
			t, known = b.catalog.TopicByID(rt.TopicID)
		} else {
			t, known = b.catalog.Topic(rt.Topic)
		}
		spans := make([]log.Spans, len(rt.Partitions))
		for pi := range rt.Partitions {
			rp := &rt.Partitions[pi]
			sp := kmsg.NewFetchResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = -1, -1, -1
			// Never null: librdkafka rejects a -1 record set size.
			sp.RecordBatches = []byte{}
			var p *partition.Partition
			if known && replicaFetch {
				p = b.localPartition(t.Name, rp.Partition)
			} else if known {
				p = b.partition(t.Name, rp.Partition)
			}
			switch {
			case limits.denied[ti]:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case p == nil && req.Version >= 13 && !known:
				sp.ErrorCode = kerr.UnknownTopicID.Code
			case p == nil && known:
				sp.ErrorCode = b.absentCode(t.Name, rp.Partition)
				if h, ok := b.leaderHint(limits.req, t.Name, rp.Partition); ok && req.Version >= 12 {
					sp.CurrentLeader.LeaderID, sp.CurrentLeader.LeaderEpoch = h.NodeID, b.hintEpoch(t, rp.Partition)
					if req.Version >= 16 && !slices.ContainsFunc(resp.Brokers, func(e kmsg.FetchResponseBroker) bool { return e.NodeID == h.NodeID }) {
						resp.Brokers = append(resp.Brokers, kmsg.FetchResponseBroker{NodeID: h.NodeID, Host: h.Host, Port: h.Port})
					}
				}
			case p == nil:
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case !replicaFetch && b.epochError(p, rp.CurrentLeaderEpoch) != 0:
				sp.ErrorCode = b.epochError(p, rp.CurrentLeaderEpoch)
			default:
				sp.HighWatermark = p.HighWatermark()
				sp.LastStableOffset = p.LastStableOffset()
				sp.LogStartOffset = p.LogStartOffset()
				if readCommitted {
					sp.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{}
				}
				limit := min(int(rp.PartitionMaxBytes), limits.perPartition)
				strict := total > 0 // KIP-74: only the first batch overall may exceed limits
				if strict && budget-total < limit {
					limit = budget - total
				}
				if limit <= 0 && strict {
					watched = append(watched, p)
					break
				}
				ss, err := p.ReadSpans(rp.FetchOffset, max(limit, 1), readCommitted)
				if err != nil {
					sp.ErrorCode = errorCode(err)
					sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = -1, -1, -1
					break
				}
				n := int(ss.Len())
				if strict && n > limit {
					ss.Release()
					ss, n = log.Spans{}, 0
				}
				spans[pi] = ss
				if readCommitted && n > 0 {
					for _, a := range p.AbortedTxns(rp.FetchOffset, ss.Next) {
						at := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
						at.ProducerID, at.FirstOffset = a.ProducerID, a.FirstOffset
						sp.AbortedTransactions = append(sp.AbortedTransactions, at)
					}
				}
				total += n
				watched = append(watched, p)
			}
			if sp.ErrorCode != 0 {
				errored = true
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
		resp.spans = append(resp.spans, spans)
	}
	return resp, errored || total >= int(req.MinBytes), watched
}

// countBytesOut counts the record bytes of a fetch response being sent
// (not of the reads a long poll discarded, nor of a throttled fetch's).
func (b *Broker) countBytesOut(resp *fetchResponse) {
	for ti, st := range resp.Topics {
		name := st.Topic
		if resp.Version >= 13 {
			t, ok := b.catalog.TopicByID(st.TopicID)
			if !ok {
				continue
			}
			name = t.Name
		}
		if n := resp.topicBytes(ti); n > 0 {
			b.metrics.bytesOut.WithLabelValues(name).Add(float64(n))
		}
	}
}
