package hostile

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// startBroker runs an embedded broker with the default config plus cfg,
// closed when the test ends.
func startBroker(t *testing.T, cfg map[string]string) *exactly.Broker {
	t.Helper()
	b, err := exactly.Start(exactly.Options{DataDir: t.TempDir(), Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// canary checks that a well-behaved client is served: it produces n
// records with acks=all to a fresh topic and reads every one back. It
// returns the topic, so a test can check the records again after a restart.
func canary(t *testing.T, tg target, n int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := fmt.Sprintf("canary-%d", time.Now().UnixNano())
	cl, err := kgo.NewClient(append(tg.opts(), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.DefaultProduceTopic(topic), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatalf("canary: creating %s: %v", topic, err)
	}
	for i := range n {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "canary-%d", i)}).FirstErr(); err != nil {
			t.Fatalf("canary: produce %d: %v", i, err)
		}
	}
	seen := 0
	for seen < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("canary: read %d of %d records: %v", seen, n, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if want := fmt.Sprintf("canary-%d", seen); string(r.Value) != want {
				t.Fatalf("canary: record %d is %q, want %q", seen, r.Value, want)
			}
			seen++
		})
	}
	return topic
}

// createTopic creates a topic for an attack to aim at unless it exists
// (attacks create what they need, and may be replayed on one broker).
func createTopic(t *testing.T, tg target, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(tg.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatalf("creating %s: %v", topic, err)
	}
}

// allocatedDuring is how many bytes the process allocated while fn ran:
// with an embedded broker and a raw client that only sends prepared
// frames, mostly the broker's.
func allocatedDuring(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// heapInUse is the Go heap in use after a collection: what the process
// holds, not garbage waiting to be collected.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// eventually polls cond every 50 ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
