package share

// The coordinator: one mutex over groups, share partitions and sessions,
// the __share_group_state log behind it.

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/producerstate"
)

// StateTopic is the internal topic holding share-partition state and
// share-group configs.
const StateTopic = "__share_group_state"

// Config holds the broker's group.share.* keys.
type Config struct {
	RecordLockDuration time.Duration // group.share.record.lock.duration.ms
	MinRecordLock      time.Duration // group.share.min.record.lock.duration.ms
	MaxRecordLock      time.Duration // group.share.max.record.lock.duration.ms
	DeliveryCountLimit int           // group.share.delivery.count.limit
	MaxRecordLocks     int           // group.share.partition.max.record.locks
	MaxSessions        int           // group.share.max.share.sessions
	SessionTimeout     time.Duration // group.share.session.timeout.ms
	HeartbeatInterval  time.Duration // group.share.heartbeat.interval.ms
	MaxGroupSize       int           // group.share.max.size
	MaxGroups          int           // group.share.max.groups
}

// Source is what the coordinator reads of a partition (a
// *partition.Partition).
type Source interface {
	Read(offset int64, maxBytes int, readCommitted bool) ([]byte, error)
	LogStartOffset() int64
	HighWatermark() int64
	LastStableOffset() int64
	AbortedTxns(from, to int64) []producerstate.AbortedTxn
	Watch(ch chan struct{}) func()
}

// Options configure Start.
type Options struct {
	Config Config
	// Log is the __share_group_state partition; nil keeps state in
	// memory only (tests of the state machine).
	Log    partition.StateLog
	Topics group.TopicView
	// Partition finds a partition to read; nil when unknown.
	Partition func(topic string, index int32) Source
	Logger    *slog.Logger
	// CompactMinRecords is the log growth below which no snapshot is
	// written (default 10000).
	CompactMinRecords int
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
}

// ErrUnavailable is a coordinator whose log failed (sticky) or that closed.
var ErrUnavailable = errors.New("share: coordinator unavailable")

// Coordinator owns every share group of the broker.
type Coordinator struct {
	opts Options
	cfg  Config
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	groups   map[string]*shareGroup
	configs  map[string]map[string]string // group → share.* overrides
	parts    map[partitionKey]*Partition
	sessions map[sessionKey]*session
	// fetching holds the share partitions a fetch is acquiring from, each
	// with a channel closed when it is done (acquireOne).
	fetching map[partitionKey]chan struct{}
	failed   error
	// avail is closed (and replaced) whenever records become Available
	// by release or expiry, waking long polls.
	avail chan struct{}
	// sinceSnapshot counts records appended since the last snapshot.
	sinceSnapshot int
	// collected are the events of partitions collected so far (Metrics,
	// dropPartLocked): the counters' values less what partitions hold.
	collected events

	// compactMu serializes snapshots; never taken inside mu.
	compactMu sync.Mutex

	quit chan struct{}
	done chan struct{}
}

// Start replays the state log and starts the coordinator's timer.
func Start(opts Options) (*Coordinator, error) {
	c := &Coordinator{
		opts:     opts,
		cfg:      opts.Config,
		log:      opts.Logger,
		now:      opts.Now,
		groups:   map[string]*shareGroup{},
		configs:  map[string]map[string]string{},
		parts:    map[partitionKey]*Partition{},
		sessions: map[sessionKey]*session{},
		fetching: map[partitionKey]chan struct{}{},
		avail:    make(chan struct{}),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.opts.CompactMinRecords <= 0 {
		c.opts.CompactMinRecords = 10000
	}
	if opts.Log != nil {
		n, skipped, err := group.ReplayLog(opts.Log, c.replay)
		if err != nil {
			return nil, fmt.Errorf("share: replaying %s: %w", StateTopic, err)
		}
		if skipped > 0 {
			c.log.Warn("skipped control batches in "+StateTopic, "batches", skipped)
		}
		c.sinceSnapshot = n
		c.log.Info("replayed "+StateTopic, "records", n, "partitions", len(c.parts), "configured_groups", len(c.configs))
	}
	go c.tickLoop()
	return c, nil
}

func (c *Coordinator) replay(key, value []byte) error {
	d, err := decodeRecord(key, value, c.cfg.DeliveryCountLimit)
	if err != nil {
		return err
	}
	switch d.kind {
	case 'p':
		if d.window == nil {
			delete(c.parts, d.part)
		} else {
			c.parts[d.part] = d.window
		}
	case 'g':
		if d.exists {
			if c.groups[d.group] == nil {
				c.groups[d.group] = &shareGroup{name: d.group, members: map[string]*member{}}
			}
		} else {
			delete(c.groups, d.group)
		}
	case 'c':
		if d.config == nil {
			delete(c.configs, d.group)
		} else {
			c.configs[d.group] = d.config
		}
	}
	return nil
}

// Close stops the timer; state already answered is durable.
func (c *Coordinator) Close() {
	select {
	case <-c.quit:
	default:
		close(c.quit)
	}
	<-c.done
	c.mu.Lock()
	if c.failed == nil {
		c.failed = ErrUnavailable
	}
	c.wakeLocked()
	c.mu.Unlock()
}

// tickLoop expires members, idle sessions and record locks.
func (c *Coordinator) tickLoop() {
	defer close(c.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	ticks := 0
	for {
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
		c.mu.Lock()
		c.tickLocked(c.now())
		ticks++
		var end int64 = -1
		if ticks%20 == 0 {
			end = c.dropDeletedTopicsLocked()
		}
		c.mu.Unlock()
		if err := c.durable(end); err != nil {
			c.log.Error("dropping share state of deleted topics", "err", err)
		}
		c.maybeCompact()
	}
}

func (c *Coordinator) tickLocked(now time.Time) {
	for _, g := range c.groups {
		for id, m := range g.members {
			if now.After(m.deadline) {
				c.removeMemberLocked(g, id)
			}
		}
	}
	for k, s := range c.sessions {
		if now.Sub(s.lastUsed) > 2*c.cfg.SessionTimeout {
			c.closeSessionLocked(k, s)
		}
	}
	released := false
	for _, p := range c.parts {
		if p.Expire(now, c.cfg.DeliveryCountLimit) {
			released = true
		}
	}
	if released {
		c.wakeLocked()
	}
}

// dropDeletedTopicsLocked forgets (durably: tombstones) the share state
// of topics that no longer exist, so a deleted topic's windows do not
// outlive it; returns the offset to wait for, -1 when nothing changed.
func (c *Coordinator) dropDeletedTopicsLocked() int64 {
	dirty := map[partitionKey]bool{}
	for k := range c.parts {
		if _, ok := c.opts.Topics.TopicByID(k.TopicID); !ok {
			c.dropPartLocked(k)
			dirty[k] = true
		}
	}
	end, _ := c.persistLocked(dirty)
	return end
}

// wakeLocked wakes long polls waiting for Available records.
func (c *Coordinator) wakeLocked() {
	close(c.avail)
	c.avail = make(chan struct{})
}

// persist appends the restated values of the dirty partitions (and
// configs) and returns the offset to wait for, -1 when nothing was
// written. Called with mu held, so the log's order is the state's order.
func (c *Coordinator) persistLocked(dirty map[partitionKey]bool, extra ...group.KV) (int64, error) {
	if c.failed != nil {
		return -1, c.failed
	}
	if c.opts.Log == nil || (len(dirty) == 0 && len(extra) == 0) {
		return -1, nil
	}
	kvs := make([]group.KV, 0, len(dirty)+len(extra))
	for k := range dirty {
		kv := group.KV{Key: encodePartitionKey(k)}
		if p := c.parts[k]; p != nil {
			kv.Value = encodePartition(p)
		}
		kvs = append(kvs, kv)
	}
	kvs = append(kvs, extra...)
	end, err := group.AppendKVs(c.opts.Log, kvs, c.now())
	if err != nil {
		c.failLocked(err)
		return -1, c.failed
	}
	c.sinceSnapshot += len(kvs)
	return end, nil
}

func (c *Coordinator) configKV(g string) group.KV {
	kv := group.KV{Key: encodeConfigKey(g)}
	if cfg, ok := c.configs[g]; ok {
		kv.Value = encodeConfig(cfg)
	}
	return kv
}

func (c *Coordinator) failLocked(err error) {
	if c.failed == nil {
		c.failed = fmt.Errorf("%w: %v", ErrUnavailable, err)
		c.log.Error("share state log failed; share groups unavailable until restart", "err", err)
	}
}

// durable waits until the log is durable up to end (no-op for -1).
func (c *Coordinator) durable(end int64) error {
	if end < 0 || c.opts.Log == nil {
		return nil
	}
	if err := c.opts.Log.WaitDurable(end); err != nil {
		c.mu.Lock()
		c.failLocked(err)
		c.mu.Unlock()
		return ErrUnavailable
	}
	return nil
}

// maybeCompact snapshots the live state and deletes the log before it
// once the log grew past max(CompactMinRecords, 2 × live records).
func (c *Coordinator) maybeCompact() {
	c.mu.Lock()
	due := c.opts.Log != nil && c.failed == nil && c.sinceSnapshot >= c.opts.CompactMinRecords &&
		c.sinceSnapshot >= 2*(len(c.groups)+len(c.parts)+len(c.configs))
	c.mu.Unlock()
	if due {
		if err := c.Compact(); err != nil {
			c.log.Error("compacting "+StateTopic+" failed", "err", err)
		}
	}
}

// Compact writes every live key again and deletes the records before the
// snapshot. Every record restates a whole value, so a crash part way
// replays old records plus a partial snapshot: the same state.
func (c *Coordinator) Compact() error {
	if c.opts.Log == nil {
		return nil
	}
	c.compactMu.Lock()
	defer c.compactMu.Unlock()
	c.mu.Lock()
	if c.failed != nil {
		c.mu.Unlock()
		return c.failed
	}
	start := c.opts.Log.LogEndOffset()
	kvs := make([]group.KV, 0, len(c.groups)+len(c.parts)+len(c.configs))
	for name := range c.groups {
		kvs = append(kvs, groupKV(name, true))
	}
	for k, p := range c.parts {
		kvs = append(kvs, group.KV{Key: encodePartitionKey(k), Value: encodePartition(p)})
	}
	for g := range c.configs {
		kvs = append(kvs, c.configKV(g))
	}
	end := start
	var err error
	if len(kvs) > 0 {
		end, err = group.AppendKVs(c.opts.Log, kvs, c.now())
		if err != nil {
			c.failLocked(err)
		}
	}
	c.sinceSnapshot = 0
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if err := c.durable(end); err != nil {
		return err
	}
	_, err = c.opts.Log.DeleteRecordsBefore(start)
	return err
}
