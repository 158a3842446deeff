package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The background load of Config.WhileCleaning: keyed overwrites into a
// compacted topic of their own whose segments roll every MiB and which is
// due for cleaning at 1% dirt, so the target's log cleaner always has a
// closed dirty segment to rewrite while the benchmark topic is measured.
const (
	// cleaningKeys is how many distinct keys the writer cycles through:
	// few enough that nearly every closed segment is garbage (a cleaning
	// pass rewrites about 1000 records), so the cleaner keeps rewriting.
	cleaningKeys = 1000
	// cleaningSegmentBytes is the compacted topic's segment.bytes:
	// Kafka 4's smallest allowed value, so the same run works there.
	cleaningSegmentBytes = "1048576"
	// CleanerBackoff is the log.cleaner.backoff.ms a managed broker gets
	// with Config.WhileCleaning (Kafka's default is 15 s, longer than a
	// run), so its cleaner starts on a due partition within a tenth of a
	// second.
	CleanerBackoff = "100"
)

// CleanerActivity is what a target's log cleaner did during one run,
// read from its kafka_log_cleaner_* counters before and after.
type CleanerActivity struct {
	// Runs are cleaning passes finished.
	Runs int64 `json:"runs"`
	// BytesRead are segment bytes read (key maps and rewriting).
	BytesRead int64 `json:"bytes_read"`
	// BytesWritten are bytes written into cleaned segments: what the
	// cleaner rewrote.
	BytesWritten int64 `json:"bytes_written"`
}

func (a *CleanerActivity) add(b *CleanerActivity) {
	a.Runs += b.Runs
	a.BytesRead += b.BytesRead
	a.BytesWritten += b.BytesWritten
}

// cleanerCounters reads the cleaner's counters from a Prometheus text
// endpoint (an exactly broker's /metrics). A target whose endpoint lacks
// them (not an exactly broker, or one too old) is an error: a report that
// says the cleaner did nothing must mean it.
func cleanerCounters(ctx context.Context, url string) (CleanerActivity, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return CleanerActivity{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return CleanerActivity{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return CleanerActivity{}, fmt.Errorf("%s: %s", url, resp.Status)
	}
	series := map[string]*int64{}
	var a CleanerActivity
	series["kafka_log_cleaner_runs_total"] = &a.Runs
	series["kafka_log_cleaner_bytes_read_total"] = &a.BytesRead
	series["kafka_log_cleaner_bytes_written_total"] = &a.BytesWritten
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		dst, wanted := series[name]
		if !wanted {
			continue
		}
		// Counters are floats in the text format ("1.048576e+06").
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return CleanerActivity{}, fmt.Errorf("%s: %s: %w", url, name, err)
		}
		*dst = int64(v)
		found++
	}
	if err := sc.Err(); err != nil {
		return CleanerActivity{}, fmt.Errorf("%s: %w", url, err)
	}
	if found != len(series) {
		return CleanerActivity{}, fmt.Errorf("%s has no kafka_log_cleaner_* counters", url)
	}
	return a, nil
}

// cleaningLoad is one busy run's background writer.
type cleaningLoad struct {
	t       Target
	topic   string
	cl      *kgo.Client
	cancel  context.CancelFunc
	done    chan struct{}
	records atomic.Int64
	bytes   atomic.Int64
	failed  atomic.Pointer[error]
}

// startCleaningLoad creates topic (compacted, one partition) and starts
// writing cfg.CleaningRate records per second of keyed overwrites to it
// until stop. Its client is separate from the measured producers and
// acknowledges with acks=all, idempotent, as franz-go does by default.
func startCleaningLoad(ctx context.Context, cfg Config, t Target, topic string, value []byte) (*cleaningLoad, error) {
	cl, err := kgo.NewClient(t.clientOpts(kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(1<<12))...)
	if err != nil {
		return nil, err
	}
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 1, t.replicationFactor(cfg), map[string]*string{
		"cleanup.policy":            kadm.StringPtr("compact"),
		"segment.bytes":             kadm.StringPtr(cleaningSegmentBytes),
		"min.cleanable.dirty.ratio": kadm.StringPtr("0.01"),
	}, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("creating the compacted topic %s: %w", topic, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	l := &cleaningLoad{t: t, topic: topic, cl: cl, cancel: cancel, done: make(chan struct{})}
	go l.write(lctx, cfg.CleaningRate, value)
	return l, nil
}

func (l *cleaningLoad) write(ctx context.Context, rate float64, value []byte) {
	defer close(l.done)
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				l.failed.CompareAndSwap(nil, &err)
			}
			return
		}
		l.records.Add(1)
		l.bytes.Add(int64(len(r.Key) + len(r.Value)))
	}
	start := time.Now()
	for sent := int64(0); ctx.Err() == nil; sent++ {
		// Paced against the schedule, as produceLoop is.
		if due := start.Add(time.Duration(float64(sent) / rate * float64(time.Second))); due.After(time.Now()) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(due)):
			}
		}
		key := strconv.Itoa(int(sent % cleaningKeys))
		l.cl.Produce(ctx, &kgo.Record{Key: []byte(key), Value: value}, promise)
	}
}

// stop ends the writer, waits for what it has in flight and deletes its
// topic, so the cleaner has nothing of it left to clean in the next run.
// It returns the bytes (keys and values) the writer got acknowledged.
func (l *cleaningLoad) stop() (int64, error) {
	l.cancel()
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l.cl.Flush(ctx)
	l.cl.Close()
	deleteTopic(l.t, l.topic)
	if p := l.failed.Load(); p != nil {
		return l.bytes.Load(), fmt.Errorf("background writer: %w", *p)
	}
	return l.bytes.Load(), nil
}
