package txn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/record"
	"github.com/twmb/franz-go/pkg/kerr"
)

// ErrPartitionGone is what a MarkerWriter returns for a partition that no
// longer exists (its topic was deleted): there is nothing left to end, so
// the marker is skipped.
var ErrPartitionGone = errors.New("partition no longer exists")

// ErrUnavailable means the coordinator stopped, or failed to write its log
// and refuses everything until a restart (its memory may be ahead of its
// disk). Clients get COORDINATOR_NOT_AVAILABLE and retry.
var ErrUnavailable = errors.New("transaction coordinator unavailable")

// MarkerWriter writes transaction markers to data partitions.
type MarkerWriter interface {
	// WriteTxnMarker durably writes a COMMIT or ABORT control batch for the
	// producer to one partition, ending its transaction there. It must be
	// harmless to repeat (a restarted coordinator re-sends the markers of
	// transactions it had not recorded as complete).
	WriteTxnMarker(tp TopicPartition, producerID int64, producerEpoch int16, commit bool, coordinatorEpoch int32) error
}

// OffsetCompleter applies or discards the offsets a transaction staged in
// a consumer group (TxnOffsetCommit), the group-coordinator half of a
// transaction end.
type OffsetCompleter interface {
	CompleteTxn(producerID int64, group string, commit bool) error
}

// Observer receives one call per completed transaction (for metrics).
type Observer interface {
	// TxnCompleted reports a transaction end: commit or abort, whether the
	// coordinator aborted it on timeout, and the time from the durable
	// decision to the last marker.
	TxnCompleted(commit, timedOut bool, markers time.Duration)
}

// DriverConfig is what a Driver needs.
type DriverConfig struct {
	Machine Config
	// Log is the __transaction_state partition.
	Log     partition.StateLog
	Markers MarkerWriter
	// Offsets completes staged group offsets; nil skips groups (no group
	// coordinator).
	Offsets  OffsetCompleter
	Observer Observer
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
	// CoordinatorEpoch is written into every marker. A single node has one
	// coordinator for ever, so it is constant.
	CoordinatorEpoch int32
	// SnapshotEvery is how many records may be appended after the last
	// snapshot before the log is compacted (plus twice the live ids, so a
	// large state is not rewritten constantly); 0 means 10000.
	SnapshotEvery int
	// EndWait bounds how long an EndTxn answer waits for the markers to be
	// written; the decision is durable either way. 0 means 10s.
	EndWait time.Duration
	// Failpoint, if set, is called at the points a crash test kills the
	// process: "prepared" (decision durable, no marker written yet) and
	// "marker-written" (after each marker).
	Failpoint func(stage string)
}

// Driver runs a Machine in a broker: it serializes calls, persists their
// records to the transaction log, reveals nothing before it is durable,
// writes markers, fires timeouts and compacts the log.
//
// Lock order: Driver.mu → Partition.mu (appends). Marker writes, fsync
// waits and group completions happen without Driver.mu.
type Driver struct {
	cfg    DriverConfig
	log    *slog.Logger
	plog   partition.StateLog
	now    func() time.Time
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{}

	mu       sync.Mutex
	m        *Machine
	failed   error
	started  bool
	wakeAt   time.Time        // earliest Tick work (Effects.Wake); zero: none
	lastEnd  map[string]int64 // log offset after each id's latest record
	jobs     map[string]*job  // marker jobs running, by transactional id
	appended int              // records appended since the last snapshot
}

type job struct {
	MarkerJob
	prepared int64 // log offset after the Prepare record
	start    time.Time
	timedOut bool
	done     chan struct{}
}

// NewDriver replays the transaction log into a fresh machine. Call Start to
// begin timers and finish the transactions that were ending.
func NewDriver(cfg DriverConfig) (*Driver, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SnapshotEvery <= 0 {
		cfg.SnapshotEvery = 10000
	}
	if cfg.EndWait <= 0 {
		cfg.EndWait = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{cfg: cfg, log: cfg.Logger, plog: cfg.Log, now: cfg.Now, ctx: ctx, cancel: cancel,
		wake: make(chan struct{}, 1), m: NewMachine(cfg.Machine), lastEnd: map[string]int64{}, jobs: map[string]*job{}}
	n, err := d.replay()
	if err != nil {
		cancel()
		return nil, err
	}
	d.appended = n
	d.wakeAt = d.m.NextWake()
	next, _ := d.m.ProducerIDs()
	d.log.Info("transaction coordinator loaded", "records", n, "transactional_ids", d.m.Len(), "next_producer_id", next,
		"log_start", d.plog.LogStartOffset(), "log_end", d.plog.HighWatermark())
	return d, nil
}

// replay reads the whole log (everything in it is durable: the partition
// fsyncs what survived recovery on open) into the machine.
//
// Control batches are skipped, counted and reported once: the coordinator
// writes none to its own log, so any there were forged by a client
// (WriteTxnMarkers before it refused internal topics) and refusing to start
// over them would let one request take the coordinator down for good.
func (d *Driver) replay() (int, error) {
	off, end := d.plog.LogStartOffset(), d.plog.HighWatermark()
	n, skipped := 0, 0
	for off < end {
		data, err := d.plog.Read(off, 1<<20, false)
		if err != nil {
			return n, fmt.Errorf("reading the transaction log at %d: %w", off, err)
		}
		if len(data) == 0 {
			break
		}
		_, err = record.Split(data, func(h record.Header, batch []byte) error {
			if h.LastOffset() < off {
				return nil
			}
			if h.IsControl() {
				skipped++
				off = h.LastOffset() + 1
				return nil
			}
			err := DecodeBatches(batch, func(o int64, r Record) error {
				if o >= off {
					d.m.Replay(r)
					n++
				}
				return nil
			})
			off = h.LastOffset() + 1
			return err
		})
		if err != nil {
			return n, fmt.Errorf("transaction log at %d: %w", off, err)
		}
	}
	if skipped > 0 {
		d.log.Warn("skipped control batches the transaction coordinator did not write", "batches", skipped)
	}
	return n, nil
}

// Start begins the timer loop and finishes every transaction that was
// ending when the broker stopped (their markers are written again).
func (d *Driver) Start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.started {
		return
	}
	d.started = true
	for _, j := range d.m.Pending() {
		meta, _ := d.m.Get(j.TxnID)
		d.log.Info("finishing a transaction interrupted by a restart", "transactional_id", j.TxnID, "commit", j.Commit, "partitions", len(j.Partitions))
		d.startJobLocked(j, d.plog.HighWatermark(), meta.TimedOut)
	}
	d.wg.Add(1)
	go d.loop()
}

// Stop ends the timer loop and marker writers. Transactions still ending
// stay Prepare* in the log and finish after the next start.
func (d *Driver) Stop() {
	d.cancel()
	d.wg.Wait()
	d.mu.Lock()
	if d.failed == nil {
		d.failed = ErrUnavailable
	}
	d.mu.Unlock()
}

func (d *Driver) nowMs() int64 { return d.now().UnixMilli() }

// Waiter blocks until a result may be revealed: everything it depends on is
// durable. It fails with ErrUnavailable if the coordinator failed.
type Waiter func() error

func failedWaiter(err error) Waiter { return func() error { return err } }

// applyLocked persists a state change and schedules its work. On a log
// failure the coordinator becomes unavailable: the machine has already
// moved, and a state nobody can make durable must not be revealed.
func (d *Driver) applyLocked(fx Effects, ids ...string) error {
	if len(fx.Records) > 0 {
		if err := d.appendLocked(fx.Records); err != nil {
			d.failLocked(err)
			return d.failed
		}
		end := d.plog.LogEndOffset()
		for _, r := range fx.Records {
			switch {
			case r.Txn == nil:
			case r.Txn.State == Dead:
				delete(d.lastEnd, r.Txn.ID)
			default:
				d.lastEnd[r.Txn.ID] = end
			}
		}
	}
	for _, j := range fx.Markers {
		meta, _ := d.m.Get(j.TxnID)
		d.startJobLocked(j, d.plog.LogEndOffset(), meta.TimedOut)
	}
	if !fx.Wake.IsZero() && (d.wakeAt.IsZero() || fx.Wake.Before(d.wakeAt)) {
		d.wakeAt = fx.Wake
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

func (d *Driver) appendLocked(recs []Record) error {
	// One batch per state change keeps each change atomic on disk; large
	// snapshots are split so no batch approaches the segment size.
	const maxBatch = 500
	for len(recs) > 0 {
		n := min(len(recs), maxBatch)
		batch, err := EncodeBatch(recs[:n], d.nowMs())
		if err != nil {
			return err
		}
		h, err := record.Parse(batch)
		if err != nil {
			return err
		}
		if _, err := d.plog.Append(batch, h); err != nil {
			return err
		}
		d.appended += n
		recs = recs[n:]
	}
	return nil
}

func (d *Driver) failLocked(err error) {
	if d.failed == nil {
		d.log.Error("transaction log write failed; the coordinator is unavailable until restart", "err", err)
		d.failed = fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
}

func (d *Driver) fail(err error) {
	d.mu.Lock()
	d.failLocked(err)
	d.mu.Unlock()
}

// durableWaiter waits until the log is durable up to its end as of now:
// whatever the answer depends on was appended before.
func (d *Driver) durableWaiterLocked() Waiter {
	upto := d.plog.LogEndOffset()
	return func() error {
		if err := d.plog.WaitDurable(upto); err != nil {
			d.fail(err)
			return d.unavailable()
		}
		return d.unavailable()
	}
}

// unavailable reports the sticky failure, if any.
func (d *Driver) unavailable() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed != nil && !errors.Is(d.failed, ErrUnavailable) {
		return fmt.Errorf("%w: %v", ErrUnavailable, d.failed)
	}
	return d.failed
}

// Failed reports whether a write to the log failed: the driver answers
// COORDINATOR_NOT_AVAILABLE from then on, and its owner should start a
// new one (on a replicated log, leadership most likely moved).
func (d *Driver) Failed() bool { return d.unavailable() != nil }

// InitProducerID serves InitProducerId.
func (d *Driver) InitProducerID(r InitRequest) (InitResult, Waiter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed != nil {
		return InitResult{Err: kerr.CoordinatorNotAvailable, ProducerID: -1, ProducerEpoch: -1}, failedWaiter(d.failed)
	}
	res, fx := d.m.InitProducerID(d.now(), r)
	if err := d.applyLocked(fx); err != nil {
		return res, failedWaiter(err)
	}
	return res, d.durableWaiterLocked()
}

// Add serves AddPartitionsToTxn, AddOffsetsToTxn and verification.
func (d *Driver) Add(r AddRequest) (AddResult, Waiter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed != nil {
		return AddResult{Err: kerr.CoordinatorNotAvailable}, failedWaiter(d.failed)
	}
	res, fx := d.m.Add(d.now(), r)
	if err := d.applyLocked(fx); err != nil {
		return res, failedWaiter(err)
	}
	return res, d.durableWaiterLocked()
}

// CheckProduce verifies that tp is in the running transaction of txnID for
// (pid, epoch) — adding it when implicitAdd (Produce v12+, KIP-890) — and
// returns once that membership is durable, so a transactional batch is
// never appended to a partition the coordinator could forget after a
// crash (that batch would hang the partition's LSO for ever). It blocks
// only when the membership was just recorded and not yet fsynced, i.e. on
// the first produce to a partition in a transaction.
func (d *Driver) CheckProduce(txnID string, pid int64, epoch int16, tp TopicPartition, implicitAdd bool) error {
	wait, err := d.PrepareProduce(txnID, pid, epoch, tp, implicitAdd)
	if err != nil {
		return err
	}
	return wait()
}

// PrepareProduce is CheckProduce without the wait: it checks (and, with
// implicitAdd, records) tp's membership and returns the wait for that
// record to be durable. A produce request spanning several partitions
// prepares them all and then waits: one fsync of the transaction log covers
// every partition its transaction just gained, instead of one per partition.
func (d *Driver) PrepareProduce(txnID string, pid int64, epoch int16, tp TopicPartition, implicitAdd bool) (wait func() error, err error) {
	d.mu.Lock()
	if d.failed != nil {
		d.mu.Unlock()
		return nil, kerr.CoordinatorNotAvailable
	}
	req := AddRequest{TxnID: txnID, ProducerID: pid, ProducerEpoch: epoch, Partitions: []TopicPartition{tp},
		VerifyOnly: !implicitAdd, TV2: implicitAdd, Produce: true}
	res, fx := d.m.Add(d.now(), req)
	if err := d.applyLocked(fx); err != nil {
		d.mu.Unlock()
		return nil, kerr.CoordinatorNotAvailable
	}
	upto := d.lastEnd[txnID]
	d.mu.Unlock()
	if res.Err != nil {
		return nil, res.Err
	}
	if len(res.Missing) > 0 {
		// Produce from a client that adds partitions itself, to one it
		// did not add: a late write from an earlier transaction, or a
		// client bug. Never let it open a transaction nobody will end.
		return nil, kerr.InvalidTxnState
	}
	return func() error {
		if err := d.plog.WaitDurable(upto); err != nil {
			d.fail(err)
			return kerr.CoordinatorNotAvailable
		}
		return nil
	}, nil
}

// EndTxn serves EndTxn. Its waiter also waits (bounded by EndWait) for the
// markers, so a producer that sees its commit acknowledged can read it back
// with read_committed at once.
func (d *Driver) EndTxn(r EndRequest) (EndResult, Waiter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed != nil {
		return EndResult{Err: kerr.CoordinatorNotAvailable, ProducerID: -1, ProducerEpoch: -1}, failedWaiter(d.failed)
	}
	res, fx := d.m.EndTxn(d.now(), r)
	if err := d.applyLocked(fx); err != nil {
		return res, failedWaiter(err)
	}
	durable := d.durableWaiterLocked()
	j := d.jobs[r.TxnID]
	if !res.Pending || j == nil {
		return res, durable
	}
	return res, func() error {
		if err := durable(); err != nil {
			return err
		}
		t := time.NewTimer(d.cfg.EndWait)
		defer t.Stop()
		select {
		case <-j.done:
		case <-t.C:
		case <-d.ctx.Done():
		}
		return d.unavailable()
	}
}

// Describe returns the state of the given ids (found false for unknown).
func (d *Driver) Describe(ids []string) ([]Meta, []bool, Waiter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	metas := make([]Meta, len(ids))
	found := make([]bool, len(ids))
	for i, id := range ids {
		metas[i], found[i] = d.m.Get(id)
	}
	if d.failed != nil {
		return metas, found, failedWaiter(d.failed)
	}
	return metas, found, d.durableWaiterLocked()
}

// List returns the ids the filter selects.
func (d *Driver) List(f Filter) ([]Meta, Waiter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.m.List(d.now(), f)
	if d.failed != nil {
		return out, failedWaiter(d.failed)
	}
	return out, d.durableWaiterLocked()
}

// startJobLocked runs one marker job in its own goroutine: transactions end
// in parallel, and a slow partition holds up only its own transactions.
func (d *Driver) startJobLocked(mj MarkerJob, prepared int64, timedOut bool) {
	if !d.started {
		return // Start picks it up from the machine's pending list
	}
	j := &job{MarkerJob: mj, prepared: prepared, start: d.now(), timedOut: timedOut, done: make(chan struct{})}
	d.jobs[mj.TxnID] = j
	d.wg.Add(1)
	go d.runJob(j)
}

func (d *Driver) runJob(j *job) {
	defer d.wg.Done()
	// Markers only after the decision is durable: a marker on disk for a
	// decision a crash could take back would be a torn transaction.
	if err := d.plog.WaitDurable(j.prepared); err != nil {
		d.fail(err)
		return
	}
	d.failpoint("prepared")
	// Partitions are independent: write their markers in parallel so a
	// transaction costs about one fsync, not one per partition.
	var markers sync.WaitGroup
	for _, tp := range j.Partitions {
		markers.Add(1)
		go func() {
			defer markers.Done()
			d.retry(func() error {
				err := d.cfg.Markers.WriteTxnMarker(tp, j.ProducerID, j.ProducerEpoch, j.Commit, d.cfg.CoordinatorEpoch)
				if errors.Is(err, ErrPartitionGone) {
					return nil
				}
				return err
			}, "writing transaction marker", "transactional_id", j.TxnID, "topic", tp.Topic, "partition", tp.Partition)
			d.failpoint("marker-written")
		}()
	}
	markers.Wait()
	for _, g := range j.Groups {
		if d.cfg.Offsets == nil {
			d.log.Warn("transaction staged offsets but there is no group coordinator", "transactional_id", j.TxnID, "group", g)
			continue
		}
		d.retry(func() error { return d.cfg.Offsets.CompleteTxn(j.ProducerID, g, j.Commit) },
			"completing transactional offsets", "transactional_id", j.TxnID, "group", g)
	}
	if d.ctx.Err() != nil {
		return // stopping: the Prepare record finishes it after the restart
	}
	d.mu.Lock()
	if d.failed == nil {
		fx := d.m.MarkersWritten(d.now(), j.MarkerJob)
		d.applyLocked(fx)
	}
	if d.jobs[j.TxnID] == j {
		delete(d.jobs, j.TxnID)
	}
	d.mu.Unlock()
	close(j.done)
	if d.cfg.Observer != nil {
		d.cfg.Observer.TxnCompleted(j.Commit, j.timedOut, d.now().Sub(j.start))
	}
}

func (d *Driver) failpoint(stage string) {
	if d.cfg.Failpoint != nil {
		d.cfg.Failpoint(stage)
	}
}

// retry runs fn until it succeeds or the driver stops, backing off: a
// marker that cannot be written (partition offline) holds its transaction
// in Prepare*, which is the only safe place for it.
func (d *Driver) retry(fn func() error, what string, attrs ...any) {
	backoff := 50 * time.Millisecond
	for {
		err := fn()
		if err == nil || d.ctx.Err() != nil {
			return
		}
		d.log.Warn(what+" failed; retrying", append(attrs, "err", err, "backoff", backoff)...)
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// loop fires Tick at the machine's deadlines and compacts the log.
func (d *Driver) loop() {
	defer d.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		d.mu.Lock()
		wait := time.Minute
		if !d.wakeAt.IsZero() {
			wait = min(wait, d.wakeAt.Sub(d.now()))
		}
		d.mu.Unlock()
		t.Reset(max(wait, time.Millisecond))
		select {
		case <-d.ctx.Done():
			return
		case <-d.wake:
			continue
		case <-t.C:
		}
		d.tick()
		d.maybeCompact()
	}
}

// tick runs the machine's timeouts and expirations now.
func (d *Driver) tick() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failed != nil {
		return
	}
	now := d.now()
	if d.wakeAt.IsZero() || now.Before(d.wakeAt) {
		return
	}
	fx := d.m.Tick(now)
	for _, r := range fx.Records {
		if r.Txn != nil && r.Txn.State == PrepareAbort {
			d.log.Info("aborting a transaction that outlived its timeout", "transactional_id", r.Txn.ID,
				"producer_id", r.Txn.ProducerID, "timeout_ms", r.Txn.TimeoutMs)
		}
	}
	d.applyLocked(fx)
	d.wakeAt = d.m.NextWake()
}

// maybeCompact rewrites the live state as a snapshot and drops the log
// before it once enough records have accumulated. Every record is a whole
// id's state, so the snapshot is simply every live id written again.
func (d *Driver) maybeCompact() {
	d.mu.Lock()
	if d.failed != nil || d.appended < d.cfg.SnapshotEvery+2*d.m.Len() {
		d.mu.Unlock()
		return
	}
	start := d.plog.LogEndOffset()
	recs := d.m.Snapshot()
	if err := d.appendLocked(recs); err != nil {
		d.failLocked(err)
		d.mu.Unlock()
		return
	}
	end := d.plog.LogEndOffset()
	d.appended = 0
	d.mu.Unlock()
	if err := d.plog.WaitDurable(end); err != nil {
		d.fail(err)
		return
	}
	// The snapshot is durable: everything before it is redundant.
	if _, err := d.plog.DeleteRecordsBefore(start); err != nil {
		d.log.Error("dropping the transaction log before a snapshot failed", "err", err)
		return
	}
	d.log.Info("compacted the transaction log", "records", len(recs), "log_start", start)
}

// Compact forces a snapshot now (tests, tools).
func (d *Driver) Compact() {
	d.mu.Lock()
	d.appended = math.MaxInt32
	d.mu.Unlock()
	d.maybeCompact()
}

// Machine runs fn with the machine under the driver's lock (read-only use:
// tests and diagnostics).
func (d *Driver) Machine(fn func(*Machine)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn(d.m)
}
