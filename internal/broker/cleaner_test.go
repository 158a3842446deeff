package broker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// TestCleanerThrottle: at log.cleaner.io.max.bytes.per.second = 1 MB/s,
// charging 3 MB takes at least 2 s (one second of burst at most); a
// cancelled context ends a wait; an unlimited rate is not metered. Only a lower bound is checked: a loaded
// machine can only make it slower.
func TestCleanerThrottle(t *testing.T) {
	var th ioThrottle
	start := time.Now()
	for i := 0; i < 48; i++ {
		th.wait(context.Background(), 64<<10, 1<<20)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("3 MiB at 1 MiB/s took %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	th.wait(ctx, 100<<20, 1<<20) // a cancelled context ends the wait (else: 100 s)
	var free ioThrottle
	for i := 0; i < 1000; i++ {
		free.wait(context.Background(), 1<<30, 1.7976931348623157e308) // Kafka's default: unlimited
	}
	if !free.last.IsZero() || free.avail != 0 {
		t.Fatal("an unlimited rate was metered")
	}
}

// The cleaner picks a compacted topic whose dirty ratio passes
// min.cleanable.dirty.ratio and cleans it; the metrics show the runs, the
// bytes and the topic's dirty ratio, which falls once it is cleaned.
func TestCleanerCleansAndReports(t *testing.T) {
	reg := prometheus.NewRegistry()
	b, err := New(Config{FS: vfs.NewMem(), DataDir: "/data", AdvertisedHost: "127.0.0.1", AdvertisedPort: 9092,
		Static: map[string]string{"log.cleaner.backoff.ms": "10"}, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.createTopic("m", 1, map[string]string{"cleanup.policy": "compact", "segment.bytes": "1024", "min.cleanable.dirty.ratio": "0.2"}); err != nil {
		t.Fatal(err)
	}
	p := b.partition("m", 0)
	for i := 0; i < 200; i++ {
		batch := testenv.KeyedBatch(fmt.Sprint("key-", i%5), "value-value-value")
		h, err := record.Validate(batch)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Append(batch, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.WaitDurable(p.LogEndOffset()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for counter(t, reg, "kafka_log_cleaner_runs_total") == 0 || p.Log().Size() > 2048 {
		if time.Now().After(deadline) {
			t.Fatalf("not cleaned: %d bytes left", p.Log().Size())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if counter(t, reg, "kafka_log_cleaner_bytes_read_total") == 0 {
		t.Fatal("bytes read not counted")
	}
	if r := gauge(t, reg, "kafka_log_cleaner_dirty_ratio"); r >= 0.2 {
		t.Fatalf("dirty ratio %v after cleaning", r)
	}
}
