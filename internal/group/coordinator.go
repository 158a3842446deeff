package group

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactly/exactly/internal/partition"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// OffsetsTopic is the internal topic holding committed offsets.
const OffsetsTopic = "__consumer_offsets"

// ErrClosed is returned by a Coordinator that has been closed.
var ErrClosed = errors.New("group: coordinator closed")

// Options configure a Coordinator.
type Options struct {
	// Partition is the opened __consumer_offsets partition. The
	// Coordinator appends to it and replays it; nothing else may write it.
	Partition partition.StateLog
	// Topics answers topic metadata questions.
	Topics TopicView
	// Config is the state machine's configuration.
	Config Config
	// Logger receives notable events; nil discards them.
	Logger *slog.Logger
	// CompactMinRecords: a snapshot is taken once this many records were
	// appended since the last one and they outnumber the live state two to
	// one. Zero means 100000.
	CompactMinRecords int
	// RetentionCheckInterval is offsets.retention.check.interval.ms. Zero
	// means 10 minutes.
	RetentionCheckInterval time.Duration
	// TopicSweepInterval is how often offsets of deleted topics are
	// dropped. Zero means 5 seconds.
	TopicSweepInterval time.Duration
	// ReserveGenerations durably records that classic generations up to
	// upto may be handed out; the broker passes the last reservation back
	// as Config.GenerationBase after a restart. Nil: no reservation
	// (generations restart from Config.GenerationBase).
	ReserveGenerations func(upto int32) error
}

// generationMargin: a new reservation is written while at least this many
// generations are still reserved, so the loop never hands out one that is
// not covered (each event raises generations by a handful at most).
const generationMargin = 500

// Coordinator runs a Machine: one goroutine owns it and serializes every
// request, timer and persistence result into it; a second waits for
// fsyncs so the first never blocks on the disk in the common path.
//
// All methods are safe for concurrent use. Methods that wait (the
// transaction operations) must not be called from a server.Handler's
// Handle (they block until durable); Submit never blocks for long.
type Coordinator struct {
	opts     Options
	reserved int32 // generations durably reserved (ReserveGenerations)
	p        partition.StateLog
	log      *slog.Logger

	events chan func(now time.Time)
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once

	syncKick chan struct{}
	syncUpto atomic.Int64
	durable  chan durableResult
	syncQuit chan struct{}
	syncDone chan struct{}

	failedFlag atomic.Bool

	stats struct {
		classicRebalances, consumerEpochBumps, expired atomic.Uint64
	}

	// Owned by the loop goroutine.
	m             *Machine
	nextTok       Token
	waiting       map[Token]waiting
	inflight      []inflight
	sinceSnapshot int
	// nextCompactCheck: no snapshot before sinceSnapshot reaches it.
	nextCompactCheck int
	wake             time.Time
	timer            *time.Timer
}

type waiting struct {
	req  kmsg.Request       // nil for transaction operations
	resp chan kmsg.Response // buffered 1
	err  chan error         // buffered 1
}

type inflight struct {
	seq uint64
	end int64 // log offset after the persisted records
}

type durableResult struct {
	upto int64
	err  error
}

// Start replays the offsets partition into a new Machine and starts the
// coordinator.
func Start(opts Options) (*Coordinator, error) {
	if opts.Partition == nil || opts.Topics == nil {
		return nil, errors.New("group: Start needs Partition and Topics")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CompactMinRecords <= 0 {
		opts.CompactMinRecords = 100000
	}
	if opts.RetentionCheckInterval <= 0 {
		opts.RetentionCheckInterval = 10 * time.Minute
	}
	if opts.TopicSweepInterval <= 0 {
		opts.TopicSweepInterval = 5 * time.Second
	}
	m := NewMachine(opts.Config, opts.Topics)
	now := time.Now()
	n, skipped, err := replayPartition(opts.Partition, func(k, v []byte) error { return m.Replay(now, k, v) })
	if err != nil {
		return nil, err
	}
	if skipped > 0 {
		opts.Logger.Warn("skipped control batches the group coordinator did not write", "topic", OffsetsTopic, "batches", skipped)
	}
	c := &Coordinator{
		opts: opts, p: opts.Partition, log: opts.Logger, m: m,
		events: make(chan func(time.Time), 1024), quit: make(chan struct{}), done: make(chan struct{}),
		syncKick: make(chan struct{}, 1), durable: make(chan durableResult), syncQuit: make(chan struct{}), syncDone: make(chan struct{}),
		waiting: map[Token]waiting{}, sinceSnapshot: n,
	}
	if opts.ReserveGenerations != nil {
		c.reserved = m.MaxGeneration() + 2*generationMargin
		if err := opts.ReserveGenerations(c.reserved); err != nil {
			return nil, fmt.Errorf("group: reserving generations: %w", err)
		}
	}
	c.log.Info("group coordinator started", "replayed_records", n, "groups", len(m.groups), "live_offsets", m.LiveRecords())
	go c.syncLoop()
	go c.run()
	// Replayed members' session deadlines are armed: start the clock.
	c.enqueue(func(now time.Time) { c.handle(now, c.m.Tick(now)) })
	return c, nil
}

// Close stops the coordinator: records already appended are made durable
// and their replies sent; requests still waiting (a JoinGroup parked in a
// rebalance) are answered COORDINATOR_NOT_AVAILABLE, so clients look for
// the coordinator again.
func (c *Coordinator) Close() {
	c.once.Do(func() { close(c.quit) })
	<-c.done
}

// enqueue runs fn on the loop; false if the coordinator is closed.
func (c *Coordinator) enqueue(fn func(now time.Time)) bool {
	select {
	case <-c.quit:
		return false
	default:
	}
	select {
	case c.events <- fn:
		return true
	case <-c.quit:
		return false
	}
}

// Submit hands a group request to the coordinator. The response arrives on
// the returned channel — at once for most requests, after a rebalance for
// JoinGroup/SyncGroup, after fsync for commits.
func (c *Coordinator) Submit(client Client, req kmsg.Request) <-chan kmsg.Response {
	ch := make(chan kmsg.Response, 1)
	ok := c.enqueue(func(now time.Time) {
		tok := c.token(waiting{req: req, resp: ch})
		c.handle(now, c.m.Handle(now, tok, client, req))
	})
	if !ok {
		ch <- ErrorResponse(req, kerr.CoordinatorNotAvailable.Code)
	}
	return ch
}

// Await returns the response Submit promised, or COORDINATOR_NOT_AVAILABLE
// if the coordinator stops before answering.
func (c *Coordinator) Await(req kmsg.Request, ch <-chan kmsg.Response) kmsg.Response {
	select {
	case r := <-ch:
		return r
	case <-c.done:
		select {
		case r := <-ch:
			return r
		default:
			return ErrorResponse(req, kerr.CoordinatorNotAvailable.Code)
		}
	}
}

// Done is closed once the coordinator has stopped.
func (c *Coordinator) Done() <-chan struct{} { return c.done }

// query runs fn on the loop and waits for it.
func (c *Coordinator) query(fn func(now time.Time)) error {
	done := make(chan struct{})
	if !c.enqueue(func(now time.Time) { fn(now); close(done) }) {
		return ErrClosed
	}
	select {
	case <-done:
		return nil
	case <-c.done:
		select {
		case <-done:
			return nil
		default:
			return ErrClosed
		}
	}
}

// wait runs an operation that replies with an error once durable.
func (c *Coordinator) wait(op func(now time.Time, tok Token) Output) error {
	ch := make(chan error, 1)
	if !c.enqueue(func(now time.Time) {
		tok := c.token(waiting{err: ch})
		c.handle(now, op(now, tok))
	}) {
		return fmt.Errorf("%w: %w", kerr.CoordinatorNotAvailable, ErrClosed)
	}
	select {
	case err := <-ch:
		return err
	case <-c.done:
		select {
		case err := <-ch:
			return err
		default:
			return fmt.Errorf("%w: %w", kerr.CoordinatorNotAvailable, ErrClosed)
		}
	}
}

// ValidateTxnCommit checks a TxnOffsetCommit's membership fields; see
// Machine.ValidateTxnCommit.
func (c *Coordinator) ValidateTxnCommit(group, memberID string, generation int32, groupInstanceID *string) error {
	var err error
	if qerr := c.query(func(time.Time) { err = c.m.ValidateTxnCommit(group, memberID, generation, groupInstanceID) }); qerr != nil {
		return kerr.CoordinatorNotAvailable
	}
	return err
}

// StageTxnOffsets stages offsets for the producer's open transaction and
// returns once they are durable. It blocks: call it from a deferred reply,
// not from Handle.
func (c *Coordinator) StageTxnOffsets(producerID int64, producerEpoch int16, group string, offsets ...TxnOffset) error {
	return c.wait(func(now time.Time, tok Token) Output {
		return c.m.StageTxnOffsets(now, tok, producerID, producerEpoch, group, offsets)
	})
}

// CompleteTxn applies (commit) or discards the producer's staged offsets
// for group and returns once the marker is durable. It blocks like
// StageTxnOffsets.
func (c *Coordinator) CompleteTxn(producerID int64, group string, commit bool) error {
	return c.wait(func(now time.Time, tok Token) Output {
		return c.m.CompleteTxn(now, tok, producerID, group, commit)
	})
}

// HasPendingTxnOffsets reports whether an open transaction staged an
// offset for the partition in group.
func (c *Coordinator) HasPendingTxnOffsets(group, topic string, partition int32) bool {
	var has bool
	c.query(func(time.Time) { has = c.m.HasPendingTxnOffsets(group, topic, partition) })
	return has
}

// PendingTxns lists producer ids with offsets staged in group.
func (c *Coordinator) PendingTxns(group string) []int64 {
	var out []int64
	c.query(func(time.Time) { out = c.m.PendingTxns(group) })
	return out
}

// Committed lists every committed offset (for lag metrics).
func (c *Coordinator) Committed() []CommittedOffset {
	var out []CommittedOffset
	c.query(func(time.Time) { out = c.m.Committed() })
	return out
}

// Stats returns cumulative counters without waiting on the loop.
func (c *Coordinator) Stats() Stats {
	return Stats{
		ClassicRebalances:  c.stats.classicRebalances.Load(),
		ConsumerEpochBumps: c.stats.consumerEpochBumps.Load(),
		ExpiredOffsets:     c.stats.expired.Load(),
	}
}

// Available reports whether the coordinator can serve (it is running and
// its offsets log has not failed).
func (c *Coordinator) Available() bool {
	ok := false
	if c.query(func(time.Time) { ok = c.m.Failed() == nil }) != nil {
		return false
	}
	return ok
}

func (c *Coordinator) token(w waiting) Token {
	c.nextTok++
	c.waiting[c.nextTok] = w
	return c.nextTok
}

func (c *Coordinator) run() {
	defer close(c.done)
	c.timer = time.NewTimer(time.Hour)
	c.timer.Stop()
	retention := time.NewTicker(c.opts.RetentionCheckInterval)
	defer retention.Stop()
	sweep := time.NewTicker(c.opts.TopicSweepInterval)
	defer sweep.Stop()
	for {
		select {
		case ev := <-c.events:
			ev(time.Now())
		case d := <-c.durable:
			c.onDurable(time.Now(), d)
		case now := <-c.timer.C:
			c.wake = time.Time{}
			c.handle(now, c.m.Tick(time.Now()))
		case <-retention.C:
			c.handle(time.Now(), c.m.ExpireOffsets(time.Now()))
		case <-sweep.C:
			c.handle(time.Now(), c.m.DropDeletedTopics(time.Now()))
		case <-c.quit:
			c.shutdown()
			return
		}
		c.maybeCompact()
		c.maybeReserveGenerations()
	}
}

// maybeReserveGenerations extends the durable generation reservation
// before the machine can run past it.
func (c *Coordinator) maybeReserveGenerations() {
	if c.opts.ReserveGenerations == nil || c.m.MaxGeneration() < c.reserved-generationMargin {
		return
	}
	next := c.m.MaxGeneration() + 2*generationMargin
	if err := c.opts.ReserveGenerations(next); err != nil {
		c.log.Error("reserving group generations failed", "err", err)
		return
	}
	c.reserved = next
}

// handle carries out one Output: append what must be persisted, send
// replies, re-arm the timer.
func (c *Coordinator) handle(now time.Time, out Output) {
	if out.Persist != nil {
		end, err := appendRecords(c.p, out.Persist.Records, now)
		if err != nil {
			c.log.Error("appending to "+OffsetsTopic+" failed; the group coordinator stops accepting commits", "err", err)
			c.deliver(out.Replies)
			c.handle(now, c.m.PersistFailed(now, err))
			return
		}
		c.sinceSnapshot += len(out.Persist.Records)
		c.inflight = append(c.inflight, inflight{seq: out.Persist.Seq, end: end})
		c.syncUpto.Store(end)
		select {
		case c.syncKick <- struct{}{}:
		default:
		}
	}
	c.deliver(out.Replies)
	if err := c.m.Failed(); err != nil && !errors.Is(err, ErrClosed) {
		c.failedFlag.Store(true)
	}
	st := c.m.Stats()
	c.stats.classicRebalances.Store(st.ClassicRebalances)
	c.stats.consumerEpochBumps.Store(st.ConsumerEpochBumps)
	c.stats.expired.Store(st.ExpiredOffsets)
	if !out.Wake.Equal(c.wake) {
		c.wake = out.Wake
		c.timer.Stop()
		if !out.Wake.IsZero() {
			c.timer.Reset(max(time.Until(out.Wake), 0))
		}
	}
}

func (c *Coordinator) deliver(replies []Reply) {
	for _, r := range replies {
		w, ok := c.waiting[r.Token]
		if !ok {
			continue
		}
		delete(c.waiting, r.Token)
		if w.resp != nil {
			w.resp <- r.Response
		} else {
			w.err <- r.Err
		}
	}
}

func (c *Coordinator) onDurable(now time.Time, d durableResult) {
	if d.err != nil {
		c.log.Error("fsync of "+OffsetsTopic+" failed; the group coordinator stops accepting commits", "err", d.err)
		c.inflight = nil
		c.handle(now, c.m.PersistFailed(now, d.err))
		return
	}
	var seq uint64
	n := 0
	for n < len(c.inflight) && c.inflight[n].end <= d.upto {
		seq = c.inflight[n].seq
		n++
	}
	c.inflight = c.inflight[n:]
	if n > 0 {
		c.handle(now, c.m.Persisted(now, seq))
	}
}

// syncLoop makes appended records durable, one group-commit fsync for
// everything appended since the last.
func (c *Coordinator) syncLoop() {
	defer close(c.syncDone)
	for {
		select {
		case <-c.syncKick:
		case <-c.syncQuit:
			return
		}
		upto := c.syncUpto.Load()
		err := c.p.WaitDurable(upto)
		select {
		case c.durable <- durableResult{upto: upto, err: err}:
		case <-c.syncQuit:
			return
		}
	}
}

// flush makes everything appended durable now, on the loop.
func (c *Coordinator) flush(now time.Time) bool {
	if len(c.inflight) == 0 {
		return c.m.Failed() == nil
	}
	last := c.inflight[len(c.inflight)-1]
	if err := c.p.WaitDurable(last.end); err != nil {
		c.onDurable(now, durableResult{err: err})
		return false
	}
	c.onDurable(now, durableResult{upto: last.end})
	return true
}

// maybeCompact writes a snapshot and drops the log before it once the log
// has grown well past the live state (see the package comment).
func (c *Coordinator) maybeCompact() {
	// Counting the live state is O(groups); do it only when the cheap
	// counter says a snapshot might be due.
	if c.sinceSnapshot < max(c.opts.CompactMinRecords, c.nextCompactCheck) || c.m.Failed() != nil {
		return
	}
	if live := c.m.LiveRecords(); c.sinceSnapshot < 2*live {
		c.nextCompactCheck = 2 * live
		return
	}
	if err := c.Compact(); err != nil {
		c.log.Error("compacting "+OffsetsTopic+" failed", "err", err)
	}
}

// Compact snapshots the state into the log and deletes what came before.
// It runs on the loop (maybeCompact) or, for tests, through CompactNow.
func (c *Coordinator) Compact() error {
	now := time.Now()
	if !c.flush(now) {
		return fmt.Errorf("group: cannot compact: %w", c.m.Failed())
	}
	start := c.p.LogEndOffset()
	kvs := c.m.SnapshotRecords()
	if len(kvs) > 0 {
		end, err := appendRecords(c.p, kvs, now)
		if err == nil {
			err = c.p.WaitDurable(end)
		}
		if err != nil {
			c.handle(now, c.m.PersistFailed(now, err))
			return err
		}
	}
	c.sinceSnapshot, c.nextCompactCheck = 0, 0
	if _, err := c.p.DeleteRecordsBefore(start); err != nil {
		return err
	}
	c.log.Debug("compacted "+OffsetsTopic, "snapshot_records", len(kvs), "log_start_offset", c.p.LogStartOffset())
	return nil
}

// CompactNow runs Compact on the loop and waits (tests, tooling).
func (c *Coordinator) CompactNow() error {
	var err error
	if qerr := c.query(func(time.Time) { err = c.Compact() }); qerr != nil {
		return qerr
	}
	return err
}

// DropDeletedTopicsNow removes the committed offsets of topics that no
// longer exist right away (the broker calls it after deleting a topic), so a
// topic re-created under the same name never inherits old offsets; the
// periodic sweep remains as a backstop.
func (c *Coordinator) DropDeletedTopicsNow() error {
	return c.query(func(now time.Time) { c.handle(now, c.m.DropDeletedTopics(now)) })
}

func (c *Coordinator) shutdown() {
	now := time.Now()
	close(c.syncQuit)
	<-c.syncDone
	c.flush(now)
	for tok, w := range c.waiting {
		delete(c.waiting, tok)
		if w.resp != nil {
			w.resp <- ErrorResponse(w.req, kerr.CoordinatorNotAvailable.Code)
		} else {
			w.err <- fmt.Errorf("%w: %w", kerr.CoordinatorNotAvailable, ErrClosed)
		}
	}
	c.timer.Stop()
	// Requests that raced in before quit are refused without touching the
	// state: nothing appended now could be made durable before we return.
	if c.m.failed == nil {
		c.m.failed = ErrClosed
	}
	for {
		select {
		case ev := <-c.events:
			ev(now)
		default:
			return
		}
	}
}

// Failed reports whether the offsets log failed and the coordinator
// refuses everything (FindCoordinator then answers
// COORDINATOR_NOT_AVAILABLE). It does not wait on the loop.
func (c *Coordinator) Failed() bool { return c.failedFlag.Load() }

// HasGroup reports whether a classic or consumer group of that name exists;
// share groups share the namespace and refuse such a name.
func (c *Coordinator) HasGroup(name string) bool {
	var ok bool
	if c.query(func(time.Time) {
		g := c.m.groups[name]
		ok = g != nil && g.state != stateDead
	}) != nil {
		return false
	}
	return ok
}
