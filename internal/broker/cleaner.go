package broker

import (
	"context"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/partition"
	"github.com/prometheus/client_golang/prometheus"
)

// The log cleaner: log.cleaner.threads goroutines (read at start) that
// every log.cleaner.backoff.ms pick the dirtiest partition of a topic whose
// cleanup.policy includes compact, and run one cleaning pass on it
// (partition.Clean), until no partition is due. A partition is due when
// its dirty ratio — dirty bytes / cleanable bytes, over closed segments
// below the LSO that are older than min.compaction.lag.ms — reaches
// min.cleanable.dirty.ratio, or when its first dirty segment is older than
// max.compaction.lag.ms. Each thread owns a key map of
// log.cleaner.dedupe.buffer.size / threads bytes, allocated when it first
// has a log to clean (again if the key changes); all threads share one I/O budget of
// log.cleaner.io.max.bytes.per.second. A partition is cleaned by one
// thread at a time.
type logCleaner struct {
	b        *Broker
	throttle ioThrottle

	mu    sync.Mutex // leaf
	busy  map[*partition.Partition]bool
	ratio map[*partition.Partition]float64 // last computed, for metrics

	runs         prometheus.Counter
	bytesRead    prometheus.Counter
	bytesWritten prometheus.Counter
}

func newLogCleaner(b *Broker) *logCleaner {
	return &logCleaner{
		b:     b,
		busy:  map[*partition.Partition]bool{},
		ratio: map[*partition.Partition]float64{},
		runs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kafka_log_cleaner_runs_total", Help: "Cleaning passes run by the log cleaner.",
		}),
		bytesRead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kafka_log_cleaner_bytes_read_total", Help: "Segment bytes the log cleaner read (building key maps and rewriting).",
		}),
		bytesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kafka_log_cleaner_bytes_written_total", Help: "Bytes the log cleaner wrote into cleaned segments.",
		}),
	}
}

// start launches the cleaner threads; the caller waits on b.bg.
func (c *logCleaner) start() {
	if !c.b.brokerBool("log.cleaner.enable") {
		return
	}
	threads := int(c.b.brokerInt("log.cleaner.threads"))
	for i := 0; i < threads; i++ {
		c.b.bg.Add(1)
		go c.run()
	}
}

func (c *logCleaner) run() {
	defer c.b.bg.Done()
	var m *log.OffsetMap
	mapSize := 0
	for {
		backoff := time.Duration(c.b.brokerInt("log.cleaner.backoff.ms")) * time.Millisecond
		select {
		case <-c.b.ctx.Done():
			return
		case <-time.After(max(backoff, 10*time.Millisecond)):
		}
		threads := max(c.b.brokerInt("log.cleaner.threads"), 1)
		size := int(min(c.b.brokerInt("log.cleaner.dedupe.buffer.size")/threads, math.MaxInt32))
		for c.b.ctx.Err() == nil {
			p, t := c.pick(time.Now())
			if p == nil {
				break
			}
			// The map (128 MiB by default) only once there is a log to
			// clean: a broker without compacted topics never holds it.
			if m == nil || size != mapSize {
				m, mapSize = log.NewOffsetMap(size), size
			}
			c.clean(p, t, m)
		}
	}
}

// pick returns the dirtiest due partition, marked busy, and its topic.
func (c *logCleaner) pick(now time.Time) (*partition.Partition, *cluster.Topic) {
	nowMs := now.UnixMilli()
	var best *partition.Partition
	var bestTopic *cluster.Topic
	bestRatio := -1.0
	ratios := map[*partition.Partition]float64{}
	defer func() {
		c.mu.Lock()
		c.ratio = ratios
		c.mu.Unlock()
	}()
	for _, t := range c.b.catalog.Topics() {
		if t.Internal || !c.b.compacted(t) {
			continue
		}
		minRatio := c.b.topicFloat(t, "min.cleanable.dirty.ratio")
		minLag := c.b.topicInt(t, "min.compaction.lag.ms")
		maxLag := c.b.topicInt(t, "max.compaction.lag.ms")
		for _, p := range c.b.partitions(t.Name) {
			if p.Err() != nil {
				continue
			}
			clean, dirty, firstTs := p.DirtyBytes(nowMs, minLag)
			ratio := 0.0
			if dirty > 0 {
				ratio = float64(dirty) / float64(clean+dirty)
			}
			ratios[p] = ratio
			c.mu.Lock()
			busy := c.busy[p]
			c.mu.Unlock()
			overdue := dirty > 0 && firstTs >= 0 && maxLag < math.MaxInt64 && nowMs-firstTs > maxLag
			if busy || dirty == 0 || (ratio < minRatio && !overdue) {
				continue
			}
			if overdue {
				ratio += 1 // overdue logs first
			}
			if ratio > bestRatio {
				best, bestTopic, bestRatio = p, t, ratio
			}
		}
	}
	if best == nil {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy[best] {
		return nil, nil // another thread took it meanwhile; look again later
	}
	c.busy[best] = true
	return best, bestTopic
}

func (c *logCleaner) clean(p *partition.Partition, t *cluster.Topic, m *log.OffsetMap) {
	defer func() {
		c.mu.Lock()
		delete(c.busy, p)
		c.mu.Unlock()
	}()
	ctx := c.b.ctx
	st, err := p.Clean(partition.CleanConfig{
		Ctx:                ctx,
		NowMs:              time.Now().UnixMilli(),
		DeleteRetentionMs:  c.b.topicInt(t, "delete.retention.ms"),
		MinCompactionLagMs: c.b.topicInt(t, "min.compaction.lag.ms"),
		MaxRecordsBytes:    c.b.topicInt(t, "max.message.bytes") * decompressedRatio,
		Map:                m,
		Throttle:           func(n int) { c.throttle.wait(ctx, n, c.b.brokerFloat("log.cleaner.io.max.bytes.per.second")) },
	})
	c.runs.Inc()
	c.bytesRead.Add(float64(st.BytesRead))
	c.bytesWritten.Add(float64(st.BytesWritten))
	if err != nil {
		if ctx.Err() == nil {
			c.b.log.Error("log cleaning failed", "topic", p.Topic, "partition", p.Index, "err", err)
		}
		return
	}
	c.b.log.Debug("cleaned log", "topic", p.Topic, "partition", p.Index, "first_dirty", st.FirstDirty, "end", st.End,
		"segments", st.Segments, "read", st.BytesRead, "written", st.BytesWritten, "records_removed", st.RecordsRemoved, "keys", st.MapKeys)
}

// dirtyRatio is the last dirty ratio computed for p, if it is compacted.
func (c *logCleaner) dirtyRatio(p *partition.Partition) (float64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.ratio[p]
	return r, ok
}

// ioThrottle is a token bucket over the cleaner's I/O bytes, shared by
// its threads: a thread that overdraws it sleeps until the debt is paid.
type ioThrottle struct {
	mu    sync.Mutex
	avail float64
	last  time.Time
}

// wait charges n bytes at rate bytes/s (at most one second of burst).
func (t *ioThrottle) wait(ctx context.Context, n int, rate float64) {
	if rate <= 0 || rate >= 1e15 {
		return // unlimited (Kafka's default is Double.MaxValue)
	}
	t.mu.Lock()
	now := time.Now()
	if !t.last.IsZero() {
		t.avail = min(t.avail+now.Sub(t.last).Seconds()*rate, rate)
	}
	t.last = now
	t.avail -= float64(n)
	debt := -t.avail
	t.mu.Unlock()
	if debt <= 0 {
		return
	}
	timer := time.NewTimer(time.Duration(debt / rate * float64(time.Second)))
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}

// compacted reports whether t's cleanup.policy includes compact.
func (b *Broker) compacted(t *cluster.Topic) bool {
	v, _ := b.catalog.TopicConfig(t, "cleanup.policy")
	return cluster.PolicyCompacts(v)
}

// topicFloat resolves a numeric (double) topic config.
func (b *Broker) topicFloat(t *cluster.Topic, key string) float64 {
	v, _ := b.catalog.TopicConfig(t, key)
	f, _ := strconv.ParseFloat(v, 64)
	return f
}

// brokerFloat resolves a numeric (double) broker config.
func (b *Broker) brokerFloat(key string) float64 {
	v, _ := b.catalog.BrokerConfig(key)
	f, _ := strconv.ParseFloat(v, 64)
	return f
}
