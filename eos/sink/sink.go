// Package sink is an exactly-once sink from Kafka into a SQL database:
// consumed offsets are stored in the same database transaction as the
// handler's writes, so a record's effect and "this record was consumed"
// commit or roll back together, with no dedup store.
//
//	tbl := sink.Table{Dialect: sink.Postgres}
//	_ = tbl.CreateSchema(ctx, db)
//	s, _ := sink.New(sink.Config{
//		DB: db, Table: tbl, Group: "ledger", Topics: []string{"transfers"},
//		Kafka: []kgo.Opt{kgo.SeedBrokers(addr)},
//		Handler: func(ctx context.Context, tx *sql.Tx, rs []*kgo.Record) error {
//			... write rs's effects with tx ...
//		},
//	})
//	err := s.Run(ctx)
//
// How it holds (see docs/DESIGN.md, "EOS sink"):
//
//   - Positions live in the offsets table (Table), never in Kafka. The
//     group consumer has auto-commit off; on assignment the sink reads the
//     stored next offset and hands it to kgo through AdjustFetchOffsetsFn,
//     which runs after the group's offsets are fetched and before the first
//     fetch of the partition, so no record before the stored position is
//     ever fetched, let alone handled.
//   - Each poll's records are handled per partition, in offset order, in one
//     transaction that ends by moving that partition's stored offset past the
//     last record; then the transaction commits. A crash anywhere before the
//     commit leaves both the effects and the offset unchanged.
//   - Fencing: assignment bumps a per-partition counter (fence) in the
//     offsets table and remembers the new value; a commit moves the offset
//     only WHERE fence = ours. An instance that lost the partition (kicked
//     out of the group while busy, paused, partitioned away) finds its
//     fence superseded, its transaction rolls back, and it rejoins the group
//     as a new member. The row lock serialises the two: a fence bump waits
//     for a commit in flight and then reads its offset.
//   - Rebalances happen only between polls (kgo's BlockRebalanceOnPoll), so
//     a revoke or loss never interrupts a transaction: the callbacks run
//     after the poll's transactions have committed or rolled back.
//   - An ambiguous commit (the connection died during COMMIT) is resolved by
//     re-reading the stored offset before anything is retried, so a batch
//     that did commit is never applied twice.
//
// Kafka-side delivery is read_committed: records of aborted transactions are
// never handled. Offsets can also be committed to Kafka after the database
// commit (Config.CommitKafkaOffsets), only so that lag monitoring works; the
// sink never reads them.
package sink

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Handler applies a batch of one partition's records inside tx. records
// are consecutive records of a single partition in offset order (offsets
// may skip transaction markers and aborted records). Return nil to commit
// the batch together with its offsets; an error rolls tx back and the same
// records are handed again after a backoff. The handler must not commit or
// roll back tx itself, and must do all its work with tx: anything done
// outside it is not covered by the exactly-once guarantee.
type Handler func(ctx context.Context, tx *sql.Tx, records []*kgo.Record) error

// Config configures a Sink.
type Config struct {
	// DB holds the handler's tables and the offsets table.
	DB *sql.DB
	// Table is the offsets table (create it with Table.CreateSchema).
	Table Table
	// Group is the Kafka consumer group: instances with the same Group
	// share the partitions of Topics, and the stored offsets are keyed by
	// it.
	Group string
	// Topics to consume.
	Topics []string
	// Kafka holds client options, at least kgo.SeedBrokers. The sink
	// appends its own group options after them (consumer group, topics,
	// read_committed, auto-commit off, rebalance callbacks and offset
	// adjustment), which therefore cannot be overridden. Timeouts, the
	// balancer, InstanceID and the like are yours to set.
	Kafka []kgo.Opt
	// Handler applies records; required.
	Handler Handler
	// Name labels this instance in the offsets table's owner column and
	// in logs. Default: hostname/pid.
	Name string
	// MaxPollRecords bounds the records handled per poll (and thus per
	// transaction). A rebalance waits for a whole poll to be handled, so
	// size it so that a poll finishes well within the rebalance timeout.
	// Default 500.
	MaxPollRecords int
	// MaxRetries bounds how often a failing batch is retried before Run
	// gives up and returns the error. Default 5; negative: never retry.
	MaxRetries int
	// RetryBackoff is the wait before the first retry; it doubles on each
	// further retry up to MaxRetryBackoff. Defaults 200ms and 5s. Retries
	// hold off rebalances, so keep their sum below the rebalance timeout.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// StartAtEnd makes a partition with no stored offset start at its end
	// instead of its start (the default, which never skips a record).
	StartAtEnd bool
	// CommitKafkaOffsets also commits each stored offset to Kafka after the
	// database commit, so lag monitoring sees the group's progress. The
	// copy may lag or be lost; the sink never reads it.
	CommitKafkaOffsets bool
	// TxOptions are passed to BeginTx for handler transactions (nil: the
	// database's default isolation).
	TxOptions *sql.TxOptions
	// Logger receives the sink's logs; nil discards them.
	Logger *slog.Logger
}

// Stats counts what a Sink did; all counters only grow.
type Stats struct {
	// Transactions committed, each holding one partition's batch.
	Transactions int64
	// Records handled in committed transactions.
	Records int64
	// Retries of failed batches.
	Retries int64
	// Fenced counts commits refused because another instance was assigned
	// the partition after this one; each is followed by a restart.
	Fenced int64
	// Restarts of the Kafka client after being fenced.
	Restarts int64
	// Skipped records: below the stored offset (already committed) or of a
	// partition this instance does not hold a fence for. Normally zero.
	Skipped int64
}

// Sink consumes Topics as Group and applies records with Handler exactly
// once. Create it with New and call Run.
type Sink struct {
	cfg Config
	log *slog.Logger

	transactions, records, retries, fenced, restarts, skipped atomic.Int64
}

// New validates cfg and fills in defaults. It does not connect.
func New(cfg Config) (*Sink, error) {
	if cfg.DB == nil || cfg.Handler == nil || cfg.Group == "" || len(cfg.Topics) == 0 {
		return nil, errors.New("sink: DB, Handler, Group and Topics are required")
	}
	if _, err := cfg.Table.name(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		h, _ := os.Hostname()
		cfg.Name = fmt.Sprintf("%s/%d", h, os.Getpid())
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 500
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 5
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = 200 * time.Millisecond
	}
	if cfg.MaxRetryBackoff <= 0 {
		cfg.MaxRetryBackoff = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Sink{cfg: cfg, log: log.With("sink", cfg.Name, "group", cfg.Group)}, nil
}

// Stats returns the counters so far.
func (s *Sink) Stats() Stats {
	return Stats{
		Transactions: s.transactions.Load(),
		Records:      s.records.Load(),
		Retries:      s.retries.Load(),
		Fenced:       s.fenced.Load(),
		Restarts:     s.restarts.Load(),
		Skipped:      s.skipped.Load(),
	}
}

// Run consumes until ctx ends (returning ctx.Err()) or a batch still fails
// after MaxRetries retries (returning that error; the batch and everything
// after it stay unhandled, and a restarted sink resumes at it). When fenced
// it closes its Kafka client, waits RetryBackoff and joins the group again
// as a new member, so it only ever handles partitions under a fresh fence.
// On return the Kafka client is closed and this instance has left the group.
// Run must not be called concurrently with itself.
func (s *Sink) Run(ctx context.Context) error {
	for {
		err := s.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, errFenced) {
			return err
		}
		s.restarts.Add(1)
		s.log.Warn("sink: fenced by a newer owner; rejoining the group", "err", err)
		if err := sleep(ctx, s.cfg.RetryBackoff); err != nil {
			return err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// session is one Kafka client's lifetime: the partitions it holds fences
// for and their stored offsets.
type session struct {
	s  *Sink
	mu sync.Mutex
	// owned maps each partition this client was assigned (and holds a fence
	// for) to its fence and the stored next offset as of our last commit.
	owned map[tp]claim
}

func (ss *session) get(p tp) (claim, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	c, ok := ss.owned[p]
	return c, ok
}

// advanced records a commit, unless the partition was re-assigned (a new
// fence) in between, which BlockRebalanceOnPoll rules out but costs nothing
// to respect.
func (ss *session) advanced(p tp, fence, next int64) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if c, ok := ss.owned[p]; ok && c.fence == fence {
		c.next = next
		ss.owned[p] = c
	}
}

func (ss *session) drop(m map[string][]int32) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for t, ps := range m {
		for _, p := range ps {
			delete(ss.owned, tp{t, p})
		}
	}
}

// adjust is kgo's AdjustFetchOffsetsFn: it runs once the group assigned
// partitions and their Kafka offsets were fetched, and before any of them is
// fetched. It ignores the Kafka offsets, takes a fence for every partition
// and returns the offsets stored in the database instead.
func (ss *session) adjust(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	s := ss.s
	var parts []tp
	for t, ps := range offsets {
		for p := range ps {
			parts = append(parts, tp{t, p})
		}
	}
	if len(parts) == 0 {
		return offsets, nil
	}
	claims, err := s.cfg.Table.acquire(ctx, s.cfg.DB, s.cfg.Group, s.cfg.Name, parts)
	if err != nil {
		// kgo treats this like a failed offset fetch: the session ends
		// and the member rejoins, so nothing is consumed without a fence.
		s.log.Error("sink: taking fences on assignment failed", "err", err)
		return nil, fmt.Errorf("sink: taking fences: %w", err)
	}
	start := kgo.NewOffset().AtStart()
	if s.cfg.StartAtEnd {
		start = kgo.NewOffset().AtEnd()
	}
	out := make(map[string]map[int32]kgo.Offset, len(offsets))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for p, c := range claims {
		if out[p.topic] == nil {
			out[p.topic] = map[int32]kgo.Offset{}
		}
		o := start
		if c.next >= 0 {
			// Epoch -1: the stored offset is not tied to a leader epoch,
			// so kgo must not run its epoch-based truncation check on it.
			o = kgo.NewOffset().At(c.next).WithEpoch(-1)
		}
		out[p.topic][p.partition] = o
		ss.owned[p] = c
		s.log.Info("sink: assigned", "topic", p.topic, "partition", p.partition, "fence", c.fence, "next_offset", c.next)
	}
	return out, nil
}

func (s *Sink) session(ctx context.Context) error {
	ss := &session{s: s, owned: map[tp]claim{}}
	opts := append(append([]kgo.Opt{}, s.cfg.Kafka...),
		kgo.ConsumerGroup(s.cfg.Group),
		kgo.ConsumeTopics(s.cfg.Topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		// Revoke, loss and assignment run only between polls: no
		// transaction is ever in flight for a partition being taken away.
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(ss.adjust),
		// Registered (even though adjust does the work) because kgo gates
		// the assign phase against polls only when it is set.
		kgo.OnPartitionsAssigned(func(context.Context, *kgo.Client, map[string][]int32) {}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			ss.drop(m)
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			ss.drop(m)
		}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("sink: kafka client: %w", err)
	}
	defer cl.CloseAllowingRebalance()
	for {
		fs := cl.PollRecords(ctx, s.cfg.MaxPollRecords)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fs.IsClientClosed() {
			return errors.New("sink: kafka client closed")
		}
		fs.EachError(func(t string, p int32, err error) {
			s.log.Warn("sink: fetch error", "topic", t, "partition", p, "err", err)
		})
		// A partition may appear in several fetches of one poll; gather its
		// records in order first so it gets one transaction.
		var order []tp
		batches := map[tp][]*kgo.Record{}
		fs.EachRecord(func(r *kgo.Record) {
			k := tp{r.Topic, r.Partition}
			if _, ok := batches[k]; !ok {
				order = append(order, k)
			}
			batches[k] = append(batches[k], r)
		})
		commit := map[string]map[int32]kgo.EpochOffset{}
		for _, k := range order {
			next, err := ss.handle(ctx, k, batches[k])
			if err != nil {
				return err
			}
			if next >= 0 {
				if commit[k.topic] == nil {
					commit[k.topic] = map[int32]kgo.EpochOffset{}
				}
				commit[k.topic][k.partition] = kgo.EpochOffset{Epoch: -1, Offset: next}
			}
		}
		if s.cfg.CommitKafkaOffsets && len(commit) > 0 {
			// Issued before AllowRebalance, so it carries the generation
			// that owns the partitions; asynchronous, since it is only a
			// copy for monitoring.
			cl.CommitOffsets(ctx, commit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
				if err != nil && ctx.Err() == nil {
					s.log.Warn("sink: mirroring offsets to kafka failed (monitoring only)", "err", err)
				}
			})
		}
		cl.AllowRebalance()
	}
}

// handle applies one partition's records and returns the stored next offset
// (-1 if nothing was applied).
func (ss *session) handle(ctx context.Context, k tp, recs []*kgo.Record) (int64, error) {
	s := ss.s
	c, ok := ss.get(k)
	if !ok {
		// Cannot happen with kgo's guarantees (no records of a partition
		// before its offsets were adjusted, none after its revoke); never
		// handle without a fence.
		s.skipped.Add(int64(len(recs)))
		s.log.Error("sink: records of a partition without a fence; skipped", "topic", k.topic, "partition", k.partition)
		return -1, nil
	}
	i := 0
	for i < len(recs) && recs[i].Offset < c.next {
		i++
	}
	if i > 0 {
		// Already committed: handling them again would be a duplicate.
		s.skipped.Add(int64(i))
		s.log.Warn("sink: records below the stored offset skipped", "topic", k.topic, "partition", k.partition, "count", i, "next_offset", c.next)
		recs = recs[i:]
	}
	if len(recs) == 0 {
		return -1, nil
	}
	next := recs[len(recs)-1].Offset + 1
	backoff := s.cfg.RetryBackoff
	for attempt := 0; ; attempt++ {
		err := ss.apply(ctx, k, c, next, recs)
		if err == nil {
			ss.advanced(k, c.fence, next)
			s.transactions.Add(1)
			s.records.Add(int64(len(recs)))
			return next, nil
		}
		if ctx.Err() != nil {
			return -1, ctx.Err()
		}
		if errors.Is(err, errFenced) {
			s.fenced.Add(1)
			return -1, err
		}
		if errors.Is(err, errStop) || attempt >= s.cfg.MaxRetries {
			return -1, fmt.Errorf("sink: %s/%d offsets %d..%d failed after %d retries: %w",
				k.topic, k.partition, recs[0].Offset, next-1, attempt, err)
		}
		s.retries.Add(1)
		s.log.Warn("sink: batch failed; rolled back, retrying", "topic", k.topic, "partition", k.partition,
			"first_offset", recs[0].Offset, "attempt", attempt+1, "backoff", backoff, "err", err)
		if err := sleep(ctx, backoff); err != nil {
			return -1, err
		}
		backoff = min(2*backoff, s.cfg.MaxRetryBackoff)
	}
}

// apply runs one transaction: handler, offset move under the fence, commit.
func (ss *session) apply(ctx context.Context, k tp, c claim, next int64, recs []*kgo.Record) error {
	s := ss.s
	tx, err := s.cfg.DB.BeginTx(ctx, s.cfg.TxOptions)
	if err != nil {
		return err
	}
	if err := s.cfg.Handler(ctx, tx, recs); err != nil {
		tx.Rollback()
		return err
	}
	// The offset moves last, after the handler: an instance stuck in its
	// handler holds no lock on the offsets row, so a new owner's fence bump
	// is never blocked behind it.
	if err := s.cfg.Table.advance(ctx, tx, s.cfg.Group, k, c.fence, c.next, next); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return ss.resolve(ctx, k, c, next, err)
	}
	return nil
}

// resolve decides whether a transaction whose COMMIT failed did commit: the
// stored offset says so. Retrying without knowing could apply the batch
// twice, so an unreadable outcome stops the sink instead.
func (ss *session) resolve(ctx context.Context, k tp, c claim, next int64, commitErr error) error {
	s := ss.s
	backoff := s.cfg.RetryBackoff
	for attempt := 0; ; attempt++ {
		cur, err := s.cfg.Table.read(ctx, s.cfg.DB, s.cfg.Group, k)
		if err == nil {
			switch {
			case cur.fence != c.fence:
				return errFenced
			case cur.next == next:
				return nil // it did commit
			case cur.next == c.next:
				return commitErr // it did not; retry the batch
			default:
				return fmt.Errorf("%w: %s/%d: stored offset %d after a failed commit from %d to %d",
					errStop, k.topic, k.partition, cur.next, c.next, next)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt >= max(s.cfg.MaxRetries, 0) {
			return fmt.Errorf("%w: commit outcome unknown (%v) and the stored offset unreadable: %v", errStop, commitErr, err)
		}
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, s.cfg.MaxRetryBackoff)
	}
}
