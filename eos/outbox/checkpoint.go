package outbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// txnPublisher is the Kafka half that the polling Relay and the CDCRelay
// share: a transactional producer that fences older instances with the same
// transactional id, finds the last committed checkpoint, and publishes
// events together with a new checkpoint in one Kafka transaction. The
// relays differ only in what a checkpoint means (a seq, an LSN) and where
// events come from.
//
// Checkpoint records live in partition 0 of the checkpoint topic, keyed by
// the relay's checkpoint key; the value is the relay's position, opaque
// here. The topic is compacted, so only each relay's newest checkpoint is
// kept. Start markers are one-off records with a key of their own
// ("marker:<key>:<nonce>", so a marker never supersedes a checkpoint) and
// a "marker:" value; each start deletes its marker again with a tombstone,
// so markers do not accumulate.
type txnPublisher struct {
	kafka []kgo.Opt
	txnID string
	topic string // checkpoint topic
	key   string // checkpoint record key

	cl *kgo.Client

	// firstChunk is how many offsets the backward checkpoint search reads
	// first; each further step doubles it up to maxChunk. Tests lower it.
	firstChunk int64
	// rewriteAfter: a checkpoint found further back than this many offsets
	// is written again at start, so the next start finds it in one chunk
	// even when other relays sharing the topic are busy and this one idle.
	rewriteAfter int64
	// scanned is how many offsets the last start read (tests check the
	// search stays bounded).
	scanned int64

	// crashBeforeCommit, set by tests, makes publish produce everything
	// and return without ending the transaction, as a crash would.
	crashBeforeCommit bool

	// txn holds the first produce error of the open transaction. Each
	// transaction gets its own, so a late callback of an aborted one cannot
	// fail the next.
	txn *txnErr
}

// txnErr is the first produce error of one Kafka transaction.
type txnErr struct{ first atomic.Pointer[error] }

const (
	defaultFirstChunk = 256
	maxChunk          = 1 << 16
	markerPrefix      = "marker:"
)

func newTxnPublisher(kafka []kgo.Opt, txnID, topic, key string) *txnPublisher {
	return &txnPublisher{kafka: kafka, txnID: txnID, topic: topic, key: key,
		firstChunk: defaultFirstChunk, rewriteAfter: 4 * defaultFirstChunk}
}

// open connects, fences every older producer with the same transactional
// id and returns the last committed checkpoint value (nil: none yet).
//
//  1. It commits a transaction holding a marker record. Initialising the
//     transactional producer bumps its epoch, which aborts an open
//     transaction of an older instance and makes that instance's later
//     commits fail; the commit gives an offset below which every
//     checkpoint of this key is decided.
//  2. It reads the checkpoint topic read_committed backwards from the
//     marker (see lastCheckpoint) and takes the newest checkpoint of key.
//
// A checkpoint found far back is committed again (step 3), which keeps the
// next start's search short.
func (p *txnPublisher) open(ctx context.Context) ([]byte, error) {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, p.kafka...),
		kgo.TransactionalID(p.txnID),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.TransactionTimeout(time.Minute),
		// Keys must pick partitions the same way every time so one
		// aggregate stays on one partition.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		// Event topics are per aggregate type and may be new; whether
		// they are created is the broker's auto.create.topics.enable.
		kgo.AllowAutoTopicCreation(),
	)...)
	if err != nil {
		return nil, err
	}
	p.cl = cl
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, map[string]*string{"retention.ms": ptr("-1"), "cleanup.policy": ptr("compact")}, p.topic)
	if err == nil {
		err = resp.Err
	}
	if errors.Is(err, kerr.InvalidConfig) {
		// A cluster without compaction: keep everything instead.
		resp, err = kadm.NewClient(cl).CreateTopic(ctx, 1, -1, map[string]*string{"retention.ms": ptr("-1")}, p.topic)
		if err == nil {
			err = resp.Err
		}
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		cl.Close()
		return nil, fmt.Errorf("outbox: creating checkpoint topic %s: %w", p.topic, err)
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	marker := markerPrefix + hex.EncodeToString(nonce[:])
	markerKey := []byte(markerPrefix + p.key + ":" + hex.EncodeToString(nonce[:]))
	if err := cl.BeginTransaction(); err != nil {
		cl.Close()
		return nil, err
	}
	res := cl.ProduceSync(ctx, &kgo.Record{Topic: p.topic, Partition: 0, Key: markerKey, Value: []byte(marker)})
	if err := res.FirstErr(); err != nil {
		_ = cl.EndTransaction(ctx, kgo.TryAbort)
		cl.Close()
		return nil, fmt.Errorf("outbox: writing start marker: %w", err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		cl.Close()
		return nil, fmt.Errorf("outbox: committing start marker: %w", err)
	}
	value, dist, err := p.lastCheckpoint(ctx, res[0].Record.Offset)
	if err != nil {
		cl.Close()
		return nil, err
	}
	p.scanned = dist
	// The marker has served: delete it (a tombstone; compaction removes
	// both). A checkpoint found far back is committed again in the same
	// transaction: writing the position we just read is idempotent, and
	// only we (the newest instance) can commit.
	var rewrite []byte
	if value != nil && dist > p.rewriteAfter {
		rewrite = value
	}
	tombstone := &kgo.Record{Topic: p.topic, Partition: 0, Key: markerKey}
	if err := p.publish(ctx, []*kgo.Record{tombstone}, rewrite); err != nil {
		cl.Close()
		return nil, fmt.Errorf("outbox: deleting the start marker: %w", err)
	}
	return value, nil
}

// lastCheckpoint searches the checkpoint topic backwards from markerOffset
// for key's newest checkpoint: it reads [hi-chunk, hi) read_committed,
// takes the newest checkpoint of key in that range if any, and otherwise
// moves hi down and doubles the chunk, until the log start. It returns the
// value (nil if key never committed a checkpoint) and how many offsets
// below the marker the search reached.
//
// The cost is bounded by the distance to the relay's own last checkpoint
// (which open keeps short), not by the topic's size. It cannot start
// earlier than the marker: only below the marker is every transaction of
// key decided. read_committed also waits for other relays' transactions
// open below the marker (the LSO), at most their transaction timeout.
func (p *txnPublisher) lastCheckpoint(ctx context.Context, markerOffset int64) ([]byte, int64, error) {
	starts, err := kadm.NewClient(p.cl).ListStartOffsets(ctx, p.topic)
	if err != nil {
		return nil, 0, fmt.Errorf("outbox: checkpoint topic start: %w", err)
	}
	start := int64(0)
	if o, ok := starts.Lookup(p.topic, 0); ok {
		if o.Err != nil {
			return nil, 0, fmt.Errorf("outbox: checkpoint topic start: %w", o.Err)
		}
		start = o.Offset
	}
	hi, chunk := markerOffset, p.firstChunk
	for hi > start {
		lo := max(start, hi-chunk)
		v, err := p.scan(ctx, lo, hi)
		if err != nil || v != nil {
			return v, markerOffset - lo, err
		}
		hi = lo
		chunk = min(2*chunk, maxChunk)
	}
	return nil, markerOffset - start, nil
}

// scan returns the newest checkpoint of key in [lo, hi), or nil.
//
// It reads until it sees any record at or past hi. Control records are
// kept for that purpose: the last data records below hi may belong to an
// aborted transaction (filtered out), but its ABORT marker, or at the
// latest our own start marker, is a visible record at or past hi.
func (p *txnPublisher) scan(ctx context.Context, lo, hi int64) ([]byte, error) {
	rd, err := kgo.NewClient(append(append([]kgo.Opt{}, p.kafka...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.topic: {0: kgo.NewOffset().At(lo)}}),
	)...)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	var last []byte
	for {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, fmt.Errorf("outbox: reading checkpoints: %w", ferr)
		}
		for _, rec := range fs.Records() {
			if rec.Offset >= hi {
				return last, nil
			}
			if rec.Attrs.IsControl() || string(rec.Key) != p.key || bytes.HasPrefix(rec.Value, []byte(markerPrefix)) {
				continue
			}
			last = rec.Value
		}
	}
}

// publish produces recs and a checkpoint record holding checkpoint (none
// if checkpoint is nil) in one Kafka transaction and commits it: either
// all of them become visible to read_committed readers, or none. After an error the transaction state
// is unknown; the caller closes and reopens, which fences and rereads.
func (p *txnPublisher) publish(ctx context.Context, recs []*kgo.Record, checkpoint []byte) error {
	if err := p.begin(); err != nil {
		return err
	}
	for _, rec := range recs {
		p.produce(ctx, rec)
	}
	return p.commit(ctx, checkpoint)
}

// begin opens a Kafka transaction for produce and commit.
func (p *txnPublisher) begin() error {
	p.txn = &txnErr{}
	return p.cl.BeginTransaction()
}

// produce adds rec to the open transaction. It may block while the
// client's buffer is full (kgo's MaxBufferedRecords), which is what bounds
// the memory of a transaction streamed record by record; a failure shows
// at commit.
func (p *txnPublisher) produce(ctx context.Context, rec *kgo.Record) {
	txn := p.txn
	p.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
		if err != nil {
			txn.first.CompareAndSwap(nil, &err)
		}
	})
}

// commit adds the checkpoint record (none if checkpoint is nil), flushes
// and commits the open transaction, or aborts it on any failure.
func (p *txnPublisher) commit(ctx context.Context, checkpoint []byte) error {
	if checkpoint != nil {
		p.produce(ctx, &kgo.Record{Topic: p.topic, Partition: 0, Key: []byte(p.key), Value: checkpoint})
	}
	if err := p.cl.Flush(ctx); err != nil {
		p.abort()
		return err
	}
	if p.crashBeforeCommit {
		return errors.New("outbox: simulated crash before commit")
	}
	if perr := p.txn.first.Load(); perr != nil {
		p.abort()
		return fmt.Errorf("outbox: producing: %w", *perr)
	}
	if err := p.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		p.abort()
		return fmt.Errorf("outbox: committing: %w", err)
	}
	return nil
}

// abort ends a failed transaction at once, even when the caller's context
// is done (a relay told to stop in the middle of a batch), so read_committed
// readers of its partitions are not held back until the transaction
// timeout. Best effort: if it fails, the next instance's fencing or the
// timeout aborts the transaction, and the caller restarts either way.
func (p *txnPublisher) abort() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.cl.AbortBufferedRecords(ctx)
	_ = p.cl.EndTransaction(ctx, kgo.TryAbort)
}

// close closes the client. An open transaction is left to be aborted by
// the next instance's fencing, exactly as after a crash.
func (p *txnPublisher) close() {
	if p.cl != nil {
		p.cl.Close()
	}
}

func ptr[T any](v T) *T { return &v }

// eventRecord is the Kafka record for event e whose row id is id: routed
// by topic, keyed by aggregate id (one aggregate, one partition, its order
// kept), headers "id" (for consumer-side dedup), "type", "aggregateversion"
// (when known) and the row's own.
func eventRecord(topic func(*Event) string, e *Event, id string) *kgo.Record {
	rec := &kgo.Record{Topic: topic(e), Key: []byte(e.AggregateID), Value: e.Payload,
		Headers: []kgo.RecordHeader{{Key: "id", Value: []byte(id)}, {Key: "type", Value: []byte(e.Type)}}}
	if e.Version > 0 {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "aggregateversion", Value: strconv.AppendInt(nil, e.Version, 10)})
	}
	for _, k := range slices.Sorted(maps.Keys(e.Headers)) {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(e.Headers[k])})
	}
	return rec
}
