// Package partition ties one partition's log to the offsets readers see.
//
// On a single node the high watermark (HW) is the durable offset: a record
// becomes visible to consumers, and is acknowledged to acks=1/all producers,
// only after it is fsynced. Appends are serialized by the partition mutex
// (which is where producer-state checks and transaction markers slot in);
// fsyncs are shared by concurrent producers through the log's group commit.
// Long-poll fetches register a watcher channel that is signalled whenever
// the HW advances.
package partition

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// ErrOffline means the partition's log failed an I/O operation and refuses
// further writes (KAFKA_STORAGE_ERROR).
var ErrOffline = errors.New("partition offline after a storage error")

// Partition is one topic partition hosted on this broker.
type Partition struct {
	Topic string
	Index int32

	log     *log.Log
	logr    *slog.Logger
	fs      vfs.FS
	dir     string
	topicID TopicID

	// replicated: the producer state changes only by applied entries
	// (MarkReplicated), never by a local clock or the log start.
	replicated atomic.Bool

	mu            sync.Mutex // serializes appends (order of offsets = order of Append calls)
	state         *producerstate.State
	limits        ProducerLimits
	sinceSnapshot int64
	// stateErr: a truncation could not rebuild the state; appends are
	// refused.
	stateErr error
	// markers counts the markers written per producer since start, and
	// cuts the truncations: the verification guard (see TxnGuard).
	markers map[int64]uint64
	cuts    uint64
	snapMu  sync.Mutex // one snapshot writer at a time

	// Published copies of state for readers that must not take mu.
	firstUnstable atomic.Int64
	aborted       atomic.Pointer[[]producerstate.AbortedTxn]

	hw          atomic.Int64
	syncPending atomic.Bool

	// bgMu orders starting background work (goBackground) against Close
	// and Delete, so none starts once they wait for bg: checking closed
	// and calling bg.Add must be one step.
	bgMu   sync.Mutex
	bg     sync.WaitGroup
	closed atomic.Bool
	// cleanCancel stops the cleaning in progress, if any (under bgMu).
	cleanCancel context.CancelFunc
	// unlistedPending: aborted-index entries were dropped for the cleaner
	// and not yet snapshotted (see Clean).
	unlistedPending atomic.Bool

	watchMu  sync.Mutex
	watchers map[chan struct{}]struct{}
}

// ProducerLimits bound the partition's producer state.
type ProducerLimits struct {
	producerstate.Limits
	// ExpirationMs forgets producers idle longer (no open transaction):
	// producer.id.expiration.ms. 0: never.
	ExpirationMs int64
	// OnForgotten, if set, is told how many producers were expired or
	// evicted (for the broker's metric).
	OnForgotten func(n int)
}

func (l ProducerLimits) forgotten(n int) {
	if n > 0 && l.OnForgotten != nil {
		l.OnForgotten(n)
	}
}

// Options are what a partition knows from outside its directory.
type Options struct {
	// TopicID is the topic the directory belongs to: Open creates the
	// directory with a marker naming it (MarkerName) and refuses one marked
	// for another topic; Delete removes only a directory so marked. Zero
	// (tests of a lone partition) means no marker.
	TopicID TopicID
	// RecoveryPoint is the offset below which the log was fsynced, as
	// last stored (see log.OpenAt); 0 if unknown.
	RecoveryPoint int64
	// Producers bounds the producer state, from the replay on; the zero
	// value bounds nothing.
	Producers ProducerLimits
}

// Open opens (recovering if needed) the partition's log in dir. Everything
// that survived recovery is fsynced and becomes the initial HW.
func Open(fsys vfs.FS, dir, topic string, index int32, cfg log.Config, logger *slog.Logger, opts Options) (*Partition, error) {
	if opts.TopicID != (TopicID{}) {
		if err := claimDir(fsys, dir, opts.TopicID); err != nil {
			return nil, fmt.Errorf("opening %s-%d: %w", topic, index, err)
		}
	}
	l, err := log.OpenAt(fsys, dir, cfg, logger.With("topic", topic, "partition", index), opts.RecoveryPoint)
	if err != nil {
		return nil, fmt.Errorf("opening %s-%d: %w", topic, index, err)
	}
	p := &Partition{Topic: topic, Index: index, log: l, logr: logger, fs: fsys, dir: dir, topicID: opts.TopicID, limits: opts.Producers, markers: map[int64]uint64{}, watchers: map[chan struct{}]struct{}{}}
	p.state = producerstate.New()
	if l.Err() != nil {
		// Opened corrupt: offline (KAFKA_STORAGE_ERROR), files untouched,
		// the broker serves everything else.
		p.publishLocked()
		return p, nil
	}
	if err := l.Sync(l.NextOffset()); err != nil {
		l.Close()
		return nil, fmt.Errorf("syncing recovered %s-%d: %w", topic, index, err)
	}
	p.hw.Store(l.DurableOffset())
	if err := p.loadState(); err != nil {
		if l.Corruption() != nil {
			// The replay read a damaged batch: offline like above.
			p.hw.Store(0)
			p.state = producerstate.New()
			p.publishLocked()
			return p, nil
		}
		l.Close()
		return nil, fmt.Errorf("rebuilding producer state of %s-%d: %w", topic, index, err)
	}
	return p, nil
}

// Err returns the error that took the partition offline (it wraps
// log.ErrLogOffline, and log.ErrCorrupt for damaged data), nil while it
// serves.
func (p *Partition) Err() error { return p.log.Err() }

// TopicID is the id of the topic the partition belongs to (zero for a
// partition opened without one).
func (p *Partition) TopicID() TopicID { return p.topicID }

// RecoveryPoint is the offset below which the partition's log is known
// to be fsynced, to store for the next Open.
func (p *Partition) RecoveryPoint() int64 { return p.log.RecoveryPoint() }

// Log exposes the underlying log for metadata queries (segments, sizes).
func (p *Partition) Log() *log.Log { return p.log }

// AppendResult is where a batch landed.
type AppendResult struct {
	BaseOffset int64
	LastOffset int64
	// Duplicate is true when the batch was a producer's retry of a batch
	// already in the log: nothing was appended and the offsets are the
	// original ones.
	Duplicate bool
}

// Append writes one validated batch (already stamped for LogAppendTime if
// needed) and returns its offsets. It does not wait for durability: call
// WaitDurable(LastOffset+1) before acknowledging, or SyncSoon for acks=0.
//
// Batches from idempotent and transactional producers are checked against
// the producer state first: a retry of one of the producer's last five
// batches returns the original offsets without appending; a sequence gap,
// stale epoch or unknown producer is refused (see producerstate.Check).
func (p *Partition) Append(batch []byte, h record.Header) (AppendResult, error) {
	return p.AppendGuarded(batch, h, noGuard)
}

const noGuard = ^uint64(0)

// TxnGuard returns a token to take before verifying a transactional batch
// with the coordinator and to pass to AppendGuarded: if a marker for the
// producer lands in between (its transaction ended while the batch was in
// flight), or a truncation (which may have removed the transaction's
// start), a batch that would open a transaction is refused instead of
// starting one the coordinator does not know about.
func (p *Partition) TxnGuard(producerID int64) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.markers[producerID] + p.cuts
}

// AppendGuarded is Append with the verification guard from TxnGuard.
func (p *Partition) AppendGuarded(batch []byte, h record.Header, guard uint64) (AppendResult, error) {
	p.mu.Lock()
	if guard != noGuard && h.IsTransactional() && p.state.OpenTxn(h.ProducerID) < 0 && p.markers[h.ProducerID]+p.cuts != guard {
		p.mu.Unlock()
		return AppendResult{}, fmt.Errorf("%w: producer %d's transaction ended while this batch was being verified", producerstate.ErrInvalidTxnState, h.ProducerID)
	}
	res, err := p.appendLocked(batch, h, time.Now().UnixMilli())
	p.mu.Unlock()
	return res, err
}

// appendLocked checks the batch against the producer state at nowMs and
// appends it unless it is a duplicate; p.mu is held.
func (p *Partition) appendLocked(batch []byte, h record.Header, nowMs int64) (AppendResult, error) {
	if p.stateErr != nil {
		return AppendResult{}, p.stateErr
	}
	dup, err := p.state.Check(&h, nowMs)
	if err != nil {
		return AppendResult{}, err
	}
	if dup != nil {
		return AppendResult{BaseOffset: dup.BaseOffset, LastOffset: dup.LastOffset, Duplicate: true}, nil
	}
	base, err := p.log.Append(batch)
	if err != nil {
		return AppendResult{}, p.storageErr(err)
	}
	h.BaseOffset = base
	if h.HasProducerID() {
		p.limits.forgotten(p.state.Apply(&h, -1, 0))
		if h.IsTransactional() {
			p.publishLocked()
		}
	}
	p.sinceSnapshot += int64(len(batch))
	if p.sinceSnapshot >= snapshotEvery {
		p.sinceSnapshot = 0
		p.goBackground(func() {
			if err := p.takeSnapshot(); err != nil {
				p.logr.Error("producer state snapshot failed", "topic", p.Topic, "partition", p.Index, "err", err)
			}
		})
	}
	return AppendResult{BaseOffset: base, LastOffset: base + int64(h.LastOffsetDelta)}, nil
}

func (p *Partition) storageErr(err error) error {
	if errors.Is(err, log.ErrLogOffline) {
		return fmt.Errorf("%w: %v", ErrOffline, err)
	}
	return err
}

// WaitDurable returns once every offset below upto is fsynced and visible
// (HW ≥ upto), sharing fsyncs with concurrent callers.
func (p *Partition) WaitDurable(upto int64) error {
	if p.hw.Load() >= upto {
		return nil
	}
	if err := p.log.Sync(upto); err != nil {
		return p.storageErr(err)
	}
	p.advanceHW(p.log.DurableOffset())
	return nil
}

// SyncSoon schedules an fsync of everything appended so far without waiting
// (acks=0): the records become visible once it completes.
func (p *Partition) SyncSoon() {
	if !p.syncPending.CompareAndSwap(false, true) {
		return
	}
	if !p.goBackground(func() {
		p.syncPending.Store(false)
		if err := p.WaitDurable(p.log.NextOffset()); err != nil {
			p.logr.Error("background fsync failed", "topic", p.Topic, "partition", p.Index, "err", err)
		}
	}) {
		p.syncPending.Store(false)
	}
}

// goBackground runs f on its own goroutine unless the partition is closing;
// Close and Delete wait for it.
func (p *Partition) goBackground(f func()) bool {
	p.bgMu.Lock()
	defer p.bgMu.Unlock()
	if p.closed.Load() {
		return false
	}
	p.bg.Go(f)
	return true
}

// stopBackground refuses new background work and waits for what runs.
func (p *Partition) stopBackground() {
	p.bgMu.Lock()
	p.closed.Store(true)
	if p.cleanCancel != nil {
		p.cleanCancel()
	}
	p.bgMu.Unlock()
	p.bg.Wait()
}

func (p *Partition) advanceHW(to int64) {
	if !p.raiseHW(to) {
		return
	}
	// to may have been read before a truncation lowered the durable
	// offset (and the HW with it): the HW never stays above it.
	p.lowerHW(p.log.DurableOffset())
	p.notify()
}

// raiseHW raises the HW to to unless it is there already; false if it
// was.
func (p *Partition) raiseHW(to int64) bool {
	for {
		cur := p.hw.Load()
		if to <= cur {
			return false
		}
		if p.hw.CompareAndSwap(cur, to) {
			return true
		}
	}
}

// lowerHW brings the HW down to at most to.
func (p *Partition) lowerHW(to int64) {
	for {
		cur := p.hw.Load()
		if cur <= to || p.hw.CompareAndSwap(cur, to) {
			return
		}
	}
}

func (p *Partition) notify() {
	p.watchMu.Lock()
	for ch := range p.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	p.watchMu.Unlock()
}

// Watch registers ch (buffered, capacity ≥ 1) to be signalled when the HW
// advances; call the returned function to unregister.
func (p *Partition) Watch(ch chan struct{}) func() {
	p.watchMu.Lock()
	p.watchers[ch] = struct{}{}
	p.watchMu.Unlock()
	return func() {
		p.watchMu.Lock()
		delete(p.watchers, ch)
		p.watchMu.Unlock()
	}
}

// HighWatermark is the offset below which records are durable and visible.
func (p *Partition) HighWatermark() int64 { return p.hw.Load() }

// LastStableOffset is the offset below which read_committed readers may
// read: the first offset of the oldest open transaction, capped by the HW.
func (p *Partition) LastStableOffset() int64 {
	hw := p.hw.Load()
	if fu := p.firstUnstable.Load(); fu >= 0 && fu < hw {
		return fu
	}
	return hw
}

// LogStartOffset is the first offset still in the log.
func (p *Partition) LogStartOffset() int64 { return p.log.StartOffset() }

// LogEndOffset is the next offset to be assigned.
func (p *Partition) LogEndOffset() int64 { return p.log.NextOffset() }

// Read returns whole batches starting with the one holding offset, at most
// maxBytes (but at least one batch), bounded by the HW or, for
// read_committed, the LSO.
func (p *Partition) Read(offset int64, maxBytes int, readCommitted bool) ([]byte, error) {
	limit, err := p.readLimit(offset, readCommitted)
	if err != nil || limit < 0 {
		return nil, err
	}
	return p.log.Read(offset, maxBytes, limit)
}

// ReadSpans is Read returning pinned file ranges instead of a copy (see
// log.ReadSpans); the caller releases them.
func (p *Partition) ReadSpans(offset int64, maxBytes int, readCommitted bool) (log.Spans, error) {
	limit, err := p.readLimit(offset, readCommitted)
	if err != nil || limit < 0 {
		return log.Spans{Next: -1}, err
	}
	return p.log.ReadSpans(offset, maxBytes, limit)
}

// readLimit is the offset a read from offset must stop before (the HW, or
// the LSO for read_committed), or -1 when there is nothing to read yet.
func (p *Partition) readLimit(offset int64, readCommitted bool) (int64, error) {
	if err := p.log.Err(); err != nil {
		return -1, err
	}
	limit := p.HighWatermark()
	if readCommitted {
		limit = p.LastStableOffset()
	}
	if offset >= limit {
		// Between the limit and the log end (not yet durable or not yet
		// stable) is not out of range: there is simply nothing to read yet.
		if offset > p.log.NextOffset() || offset < p.log.StartOffset() {
			return -1, log.ErrOffsetOutOfRange
		}
		return -1, nil
	}
	return limit, nil
}

// DeleteRecordsBefore raises the log start offset (DeleteRecords API). The
// offset may not exceed the HW.
func (p *Partition) DeleteRecordsBefore(offset int64) (int64, error) {
	if offset == -1 {
		offset = p.HighWatermark()
	}
	if offset < 0 || offset > p.HighWatermark() {
		return 0, log.ErrOffsetOutOfRange
	}
	if offset <= p.log.StartOffset() {
		return p.log.StartOffset(), nil
	}
	// Producer state must outlive the segments about to go.
	if err := p.takeSnapshot(); err != nil {
		return 0, p.storageErr(err)
	}
	if err := p.log.DeleteRecordsBefore(offset); err != nil {
		return 0, p.storageErr(err)
	}
	return p.log.StartOffset(), nil
}

// ApplyRetention deletes whole segments past retention, snapshotting the
// producer state first so producers whose batches go are not forgotten.
func (p *Partition) ApplyRetention(now time.Time) (int, error) {
	if !p.log.RetentionDue(now) {
		return 0, nil
	}
	if err := p.takeSnapshot(); err != nil {
		return 0, err
	}
	return p.log.ApplyRetention(now)
}

// SetConfig applies new log settings (retention, segment size) live.
func (p *Partition) SetConfig(cfg log.Config) { p.log.SetConfig(cfg) }

// Close waits for background work, snapshots the producer state (so the
// next start replays nothing), then fsyncs and closes the log.
func (p *Partition) Close() error {
	p.stopBackground()
	var snapErr error
	if p.log.Err() == nil {
		snapErr = p.takeSnapshot()
	}
	return errors.Join(snapErr, p.log.Close())
}

// Delete closes the partition and removes its directory, if it is the one
// its topic created (see RemoveDir); it reports whether the directory is
// gone.
func (p *Partition) Delete() (bool, error) {
	p.stopBackground()
	p.log.Discard()
	if p.topicID == (TopicID{}) {
		if err := p.fs.RemoveAll(p.dir); err != nil {
			return false, err
		}
		return true, p.fs.SyncDir(filepath.Dir(filepath.Clean(p.dir)))
	}
	return RemoveDir(p.fs, p.dir, p.topicID)
}
