package broker

// Produce (key 0), versions 3-12 (v12: KIP-890 transaction version 2, where
// the first write to a partition adds it to the transaction implicitly).
//
// Idempotent producers: a batch carrying a producer id is checked against
// that producer's state on the partition — a retry of one of its last five
// batches is answered with the original offsets and not appended again; a
// sequence gap is OUT_OF_ORDER_SEQUENCE_NUMBER, a stale epoch
// INVALID_PRODUCER_EPOCH, an unknown producer not starting at sequence 0
// UNKNOWN_PRODUCER_ID. Transactional batches must belong to the producer's
// ongoing transaction on this partition (server-side verification, so a
// late write from an earlier transaction cannot land in the next one).
//
// Each partition's data must be exactly one RecordBatch v2; it is validated
// (CRC-32C, record count and framing, decompressing if needed), stamped with
// its base offset (and LogAppendTime when the topic asks for it) and
// appended as received — compressed batches stay compressed — unless the
// topic's compression.type names a codec other than the batch's: then its
// records are re-encoded to that codec in the validation pass (header
// fields kept, CRC recomputed; see record.ValidateRecode). acks=1 and
// acks=all are answered only after the batch is fsynced (group commit shares
// one fsync among concurrent producers; on a single node "all in-sync
// replicas" is this node's disk). acks=0 gets no response; its records
// become visible after a background fsync.
//
// Errors: INVALID_REQUIRED_ACKS, UNKNOWN_TOPIC_OR_PARTITION, CORRUPT_MESSAGE
// (bad CRC, truncated), UNSUPPORTED_FOR_MESSAGE_FORMAT (magic ≠ 2),
// INVALID_RECORD (more than one batch, bad framing, control batch from a
// client, a record without a key on a compacted topic: KIP-467 record
// errors name each), MESSAGE_TOO_LARGE (the batch, or its records
// decompressed, over the topic's max.message.bytes, or the batch
// re-encoded to the topic's compression.type over max.message.bytes),
// INVALID_TIMESTAMP,
// KAFKA_STORAGE_ERROR (log offline after an I/O error). Versions 0-2 (message
// format v0/v1) are not served, as in Kafka 4.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/acl"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/quorum"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/replica"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func init() { register(0, 3, 12, (*Broker).handleProduce) }

type pendingAppend struct {
	p    *partition.Partition
	resp *kmsg.ProduceResponseTopicPartition
	upto int64
	// replicated, for a replicated partition, waits for the batch to be
	// committed and applied (instead of fsynced).
	replicated func(context.Context) (partition.AppendResult, error)
}

// preparedBatch is one partition's batch, validated and (if
// transactional) checked with the transaction coordinator, waiting to be
// appended.
type preparedBatch struct {
	t             *cluster.Topic
	p             *partition.Partition
	batch         []byte
	h             record.Header
	guard         uint64
	txnWait       func() error // non-nil: must succeed before the append
	logAppendTime int64
	resp          *kmsg.ProduceResponseTopicPartition
	// recoded holds batch when the topic's compression.type re-encoded
	// it; released when the handler returns (every append is done by
	// then: the log has copied the bytes).
	recoded  *record.Recoded
	received int // the batch's size as produced, for bytes-in
	// replicated is set by appendPrepared for a replicated partition:
	// the batch was proposed, and this waits for where it landed.
	replicated func(context.Context) (partition.AppendResult, error)
}

// handleProduce works in three passes so that a request spanning several
// partitions costs at most one transaction-log fsync: validate and check
// every partition, wait for the transaction log once, then append.
func (b *Broker) handleProduce(ctx context.Context, r *server.Request) server.Reply {
	req := r.Msg.(*kmsg.ProduceRequest)
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	acksOK := req.Acks == -1 || req.Acks == 0 || req.Acks == 1
	resp.Topics = make([]kmsg.ProduceResponseTopic, len(req.Topics))
	var prepared []preparedBatch
	defer func() {
		for i := range prepared {
			prepared[i].recoded.Release()
		}
	}()
	// Authorization, as Kafka: a transactional produce needs WRITE on its
	// transactional id (else every partition is refused), each topic WRITE.
	txnDenied := req.TransactionID != nil && !b.authorized(r, acl.OpWrite, acl.ResourceTransactionalID, *req.TransactionID)
	for ti := range req.Topics {
		rt := &req.Topics[ti]
		st := &resp.Topics[ti]
		*st = kmsg.NewProduceResponseTopic()
		st.Topic = rt.Topic
		st.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		t, known := b.catalog.Topic(rt.Topic)
		topicDenied := !txnDenied && !b.authorized(r, acl.OpWrite, acl.ResourceTopic, rt.Topic)
		for pi := range rt.Partitions {
			rp := &rt.Partitions[pi]
			sp := &st.Partitions[pi]
			*sp = kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.BaseOffset = -1
			sp.LogAppendTime = -1
			sp.LogStartOffset = -1
			var p *partition.Partition
			if known {
				p = b.partition(rt.Topic, rp.Partition)
			}
			switch {
			case !acksOK:
				sp.ErrorCode = kerr.InvalidRequiredAcks.Code
			case txnDenied:
				sp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
			case topicDenied:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case p == nil:
				sp.ErrorCode = b.absentCode(rt.Topic, rp.Partition)
				if h, ok := b.leaderHint(r, rt.Topic, rp.Partition); ok {
					sp.CurrentLeader.LeaderID, sp.CurrentLeader.LeaderEpoch = h.NodeID, b.hintEpoch(t, rp.Partition)
					if !slices.ContainsFunc(resp.Brokers, func(e kmsg.ProduceResponseBroker) bool { return e.NodeID == h.NodeID }) {
						resp.Brokers = append(resp.Brokers, kmsg.ProduceResponseBroker{NodeID: h.NodeID, Host: h.Host, Port: h.Port})
					}
				}
			default:
				pb, err := b.prepareProduced(ctx, t, p, rp.Records, req.TransactionID, req.Version)
				if err != nil {
					pb.recoded.Release()
					b.produceFailed(rt.Topic, sp, err)
					break
				}
				pb.resp = sp
				prepared = append(prepared, pb)
			}
		}
	}
	for i := range prepared {
		pb := &prepared[i]
		if pb.txnWait != nil {
			if err := pb.txnWait(); err != nil {
				b.produceFailed(pb.t.Name, pb.resp, err)
				pb.p = nil
			}
		}
	}
	var waits []pendingAppend
	for i := range prepared {
		pb := &prepared[i]
		if pb.p == nil {
			continue
		}
		res, err := b.appendPrepared(ctx, pb, req.Acks)
		if err != nil {
			b.produceFailed(pb.t.Name, pb.resp, err)
			continue
		}
		if pb.replicated != nil {
			pb.resp.LogAppendTime = pb.logAppendTime
			waits = append(waits, pendingAppend{p: pb.p, resp: pb.resp, replicated: pb.replicated})
			continue
		}
		pb.resp.BaseOffset = res.BaseOffset
		pb.resp.LogAppendTime = pb.logAppendTime
		pb.resp.LogStartOffset = pb.p.LogStartOffset()
		waits = append(waits, pendingAppend{p: pb.p, resp: pb.resp, upto: pb.p.LogEndOffset()})
	}
	if req.Acks == 0 {
		b.metrics.countErrors(0, resp) // no answer goes out to count them on
		for _, w := range waits {
			if w.replicated == nil {
				w.p.SyncSoon()
			}
		}
		return server.Reply{}
	}
	if len(waits) == 0 {
		return immediate(resp)
	}
	timeout := time.Duration(max(req.TimeoutMillis, 1)) * time.Millisecond
	return server.Reply{Wait: func() kmsg.Response {
		wait := func(w pendingAppend) {
			if w.replicated != nil {
				wctx, cancel := context.WithTimeout(ctx, timeout)
				res, err := w.replicated(wctx)
				cancel()
				if err != nil {
					b.produceFailed(w.p.Topic, w.resp, notLeader(err))
					return
				}
				w.resp.BaseOffset = res.BaseOffset
				w.resp.LogStartOffset = w.p.LogStartOffset()
				return
			}
			if err := w.p.WaitDurable(w.upto); err != nil {
				b.log.Error("fsync failed; partition offline", "topic", w.p.Topic, "partition", w.p.Index, "err", err)
				w.resp.ErrorCode = kerr.KafkaStorageError.Code
				w.resp.ErrorMessage = errMsg(err)
				w.resp.BaseOffset = -1
			}
		}
		// Each partition is its own file with its own fsync; waiting
		// for them one after another made a request spanning six
		// partitions pay six journal commits in a row. Concurrently
		// (bounded, for requests naming hundreds of partitions), the
		// filesystem overlaps them: +20% acks=all throughput in the
		// interleaved `exactly bench` rounds.
		var wg sync.WaitGroup
		sem := make(chan struct{}, parallelSyncs)
		for _, w := range waits[1:] {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				wait(w)
			})
		}
		wait(waits[0])
		wg.Wait()
		return resp
	}}
}

// parallelSyncs bounds the partitions one produce request waits on at once.
const parallelSyncs = 16

func (b *Broker) produceFailed(topic string, sp *kmsg.ProduceResponseTopicPartition, err error) {
	sp.ErrorCode = errorCode(err)
	sp.ErrorMessage = errMsg(err)
	sp.BaseOffset = -1
	var re *recordErrors
	if errors.As(err, &re) {
		re.fill(sp)
	}
	if sp.ErrorCode == kerr.UnknownServerError.Code || sp.ErrorCode == kerr.KafkaStorageError.Code {
		b.log.Error("produce failed", "topic", topic, "partition", sp.Partition, "err", err)
	}
}

// prepareProduced validates one partition's batch and, for a transactional
// batch, checks it with the transaction coordinator (whose wait the caller
// must pass before appending).
func (b *Broker) prepareProduced(ctx context.Context, t *cluster.Topic, p *partition.Partition, batch []byte, txnID *string, produceVersion int16) (preparedBatch, error) {
	out := preparedBatch{t: t, p: p, batch: batch, guard: ^uint64(0), logAppendTime: -1, received: len(batch)}
	if len(batch) == 0 {
		return out, fmt.Errorf("%w: no record batch for the partition", record.ErrInvalid)
	}
	if err := refuseInternal(t); err != nil {
		return out, err
	}
	max := b.topicInt(t, "max.message.bytes")
	if int64(len(batch)) > max {
		return out, &kerrError{kerr.MessageTooLarge, fmt.Sprintf("batch of %d bytes exceeds max.message.bytes=%d", len(batch), max)}
	}
	// Kafka bounds only the compressed size; a bound on the decompressed
	// records is ours, so a bomb of a few KiB stops there (and a client
	// that splits batches on MESSAGE_TOO_LARGE does so).
	limit := max * decompressedRatio
	var (
		h   record.Header
		err error
	)
	if target, ok := b.topicCompression(t); ok {
		// The re-encoded batch is bounded like a produced one: Kafka
		// refuses a recompressed batch over max.message.bytes.
		h, out.recoded, err = record.ValidateRecode(ctx, batch, limit, target, int(max))
		if out.recoded != nil {
			out.batch = out.recoded.Bytes
		}
	} else {
		h, err = record.ValidateLimit(ctx, batch, limit)
	}
	if errors.Is(err, record.ErrRecodedTooLarge) {
		return out, &kerrError{kerr.MessageTooLarge, fmt.Sprintf("%v (max.message.bytes=%d)", err, max)}
	}
	if errors.Is(err, record.ErrTooLarge) {
		return out, &kerrError{kerr.MessageTooLarge, fmt.Sprintf("%v (%d x max.message.bytes=%d)", err, decompressedRatio, max)}
	}
	if err != nil {
		return out, err
	}
	out.h = h
	if h.IsControl() {
		return out, fmt.Errorf("%w: clients may not write control batches", record.ErrInvalid)
	}
	if err := b.refuseKeyless(ctx, t, p.Index, h, batch, limit); err != nil {
		return out, err
	}
	if h.IsTransactional() {
		out.guard = p.TxnGuard(h.ProducerID)
		if !h.HasProducerID() {
			return out, fmt.Errorf("%w: transactional batch without a producer id", record.ErrInvalid)
		}
		if txnID == nil {
			return out, &kerrError{kerr.InvalidTxnState, "transactional batch in a produce request without a transactional id"}
		}
		wait, err := b.checkTransactionalProduce(*txnID, h.ProducerID, h.ProducerEpoch, t.Name, p.Index, produceVersion >= 12)
		if err != nil {
			return out, err
		}
		out.txnWait = wait
	}
	return out, nil
}

// decompressedRatio bounds what a compressed batch may expand to, as a
// multiple of max.message.bytes. Kafka bounds only the compressed size,
// and its clients fill a batch up to the limit before compressing, so
// ratios of a few are ordinary (franz-go's own conformance tests send 3 MiB
// of records in one gzip batch under the default 1 MiB limit, which a 1x
// bound refused); 8x admits those and still refuses a bomb of a few KiB
// that expands to hundreds of MiB. Validation streams, one record in
// memory at a time, so memory is bounded either way; this bounds the CPU.
const decompressedRatio = 8

// appendPrepared stamps and appends a prepared batch; a replicated
// partition's is proposed to its group instead (pb.replicated waits).
func (b *Broker) appendPrepared(ctx context.Context, pb *preparedBatch, acks int16) (partition.AppendResult, error) {
	t, h, batch := pb.t, pb.h, pb.batch
	nowMs := time.Now().UnixMilli()
	if tsType, _ := b.catalog.TopicConfig(t, "message.timestamp.type"); tsType == "LogAppendTime" {
		record.SetLogAppendTime(batch, nowMs)
		pb.logAppendTime = nowMs
	} else {
		before := b.topicInt(t, "message.timestamp.before.max.ms")
		after := b.topicInt(t, "message.timestamp.after.max.ms")
		if h.FirstTimestamp < nowMs-before || h.MaxTimestamp < nowMs-before {
			return partition.AppendResult{}, &kerrError{kerr.InvalidTimestamp, fmt.Sprintf("timestamp %d is more than message.timestamp.before.max.ms=%d in the past", h.FirstTimestamp, before)}
		}
		if after < nowMs && h.MaxTimestamp > nowMs+after {
			return partition.AppendResult{}, &kerrError{kerr.InvalidTimestamp, fmt.Sprintf("timestamp %d is more than message.timestamp.after.max.ms=%d in the future", h.MaxTimestamp, after)}
		}
	}
	if r := b.replicaOf(pb.p); r != nil {
		return partition.AppendResult{}, b.proposeProduced(ctx, r, pb, acks, nowMs)
	}
	record.SetLeaderEpoch(batch, 0)
	res, err := pb.p.AppendGuarded(batch, h, pb.guard)
	if err != nil {
		return res, err
	}
	if res.Duplicate {
		return res, nil // a retry: answered with the original offsets, nothing appended
	}
	b.metrics.messagesIn.WithLabelValues(t.Name).Add(float64(h.NumRecords))
	b.metrics.bytesIn.WithLabelValues(t.Name).Add(float64(pb.received))
	return res, nil
}

// proposeProduced proposes a prepared batch to its partition's group:
// acks=all first needs min.insync.replicas replicas in sync
// (NOT_ENOUGH_REPLICAS otherwise, before anything is written).
func (b *Broker) proposeProduced(ctx context.Context, r *replica.Replica, pb *preparedBatch, acks int16, nowMs int64) error {
	if len(pb.batch) > quorum.MaxGroupEntryBytes-1024 {
		return &kerrError{kerr.MessageTooLarge, fmt.Sprintf("batch of %d bytes exceeds what a replicated partition's entry holds (%d)", len(pb.batch), quorum.MaxGroupEntryBytes-1024)}
	}
	if acks == -1 {
		minISR := b.topicInt(pb.t, "min.insync.replicas")
		if isr := len(r.Status().InSync); int64(isr) < minISR {
			return &kerrError{kerr.NotEnoughReplicas, fmt.Sprintf("%d replicas in sync, min.insync.replicas=%d", isr, minISR)}
		}
	}
	wait, err := r.ProposeBatch(ctx, pb.batch, r.LeaderEpoch(), nowMs)
	if err != nil {
		return notLeader(err)
	}
	b.metrics.messagesIn.WithLabelValues(pb.t.Name).Add(float64(pb.h.NumRecords))
	b.metrics.bytesIn.WithLabelValues(pb.t.Name).Add(float64(pb.received))
	pb.replicated = wait
	return nil
}

// compressionCodecs maps compression.type values to the codec batches are
// stored in; "producer" is absent (stored as sent).
var compressionCodecs = map[string]int{
	"uncompressed": record.CompressionNone,
	"gzip":         record.CompressionGzip,
	"snappy":       record.CompressionSnappy,
	"lz4":          record.CompressionLZ4,
	"zstd":         record.CompressionZstd,
}

// topicCompression returns the codec and level the topic stores batches
// in, or false for compression.type=producer: the store-as-sent path,
// which never re-encodes.
func (b *Broker) topicCompression(t *cluster.Topic) (record.Target, bool) {
	v, _ := b.catalog.TopicConfig(t, "compression.type")
	codec, ok := compressionCodecs[v]
	if !ok {
		return record.Target{}, false
	}
	target := record.Target{Codec: codec}
	switch codec {
	case record.CompressionGzip:
		target.Level = int(b.topicInt(t, "compression.gzip.level"))
	case record.CompressionLZ4:
		target.Level = int(b.topicInt(t, "compression.lz4.level"))
	case record.CompressionZstd:
		target.Level = int(b.topicInt(t, "compression.zstd.level"))
	}
	return target, true
}
