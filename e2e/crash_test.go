package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestAckedRecordsSurviveSIGKILL is the durability promise: a producer with
// acks=all writes continuously while the broker is SIGKILLed at random
// moments and restarted on the same data directory. Every acknowledged
// record must read back afterwards at the offset it was acknowledged with,
// and every partition's offsets must be contiguous.
func TestAckedRecordsSurviveSIGKILL(t *testing.T) { crashTest(t, false) }

// TestIdempotentProducerAcrossSIGKILL: the same with franz-go's idempotent
// producer. Batches retried across a broker SIGKILL must be recognised from
// the producer state rebuilt after restart: zero duplicates, zero lost.
func TestIdempotentProducerAcrossSIGKILL(t *testing.T) { crashTest(t, true) }

// TestRecodedBatchesAcrossSIGKILL: the same on a topic that re-encodes
// every batch (snappy, franz-go's default) to zstd: retries deduplicated from the
// re-encoded batches' producer state, acknowledged records all present,
// and every record read back from a zstd batch.
func TestRecodedBatchesAcrossSIGKILL(t *testing.T) {
	zstd := "zstd"
	crashTest(t, true, map[string]*string{"compression.type": &zstd})
}

func crashTest(t *testing.T, idempotent bool, topicConfigs ...map[string]*string) {
	if testing.Short() {
		t.Skip("subprocess crash test; skipped with -short")
	}
	const (
		topic      = "crash"
		partitions = 3
		kills      = 5
	)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	dataDir := t.TempDir()
	addr := freePort(t)
	broker := startBroker(t, dataDir, addr)

	admin, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	var configs map[string]*string
	if len(topicConfigs) > 0 {
		configs = topicConfigs[0]
	}
	if _, err := kadm.NewClient(admin).CreateTopic(context.Background(), partitions, 1, configs, topic); err != nil {
		t.Fatal(err)
	}
	admin.Close()

	type ack struct {
		partition int32
		offset    int64
	}
	var (
		mu      sync.Mutex
		acked   = map[ack]string{}
		lastErr error
	)
	opts := []kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordRetries(1000),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
		kgo.ProducerLinger(time.Millisecond),
	}
	if !idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				v := fmt.Sprintf("w%d-%d", w, i)
				r := &kgo.Record{Topic: topic, Value: []byte(v)}
				cl.Produce(ctx, r, func(r *kgo.Record, err error) {
					if err != nil {
						mu.Lock()
						lastErr = err // not acknowledged: no promise made
						mu.Unlock()
						return
					}
					mu.Lock()
					acked[ack{r.Partition, r.Offset}] = string(r.Value)
					mu.Unlock()
				})
				if i%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}(w)
	}

	for k := 0; k < kills; k++ {
		time.Sleep(time.Duration(200+rng.Intn(800)) * time.Millisecond)
		broker.kill()
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		t.Logf("kill %d: %d records acknowledged so far", k+1, n)
		time.Sleep(time.Duration(rng.Intn(200)) * time.Millisecond)
		broker = startBroker(t, dataDir, addr)
		// Each kill must land on a broker that is taking writes again.
		deadline := time.Now().Add(30 * time.Second)
		for {
			mu.Lock()
			m, e := len(acked), lastErr
			mu.Unlock()
			if m > n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no record acknowledged within 30s of restart %d (last produce error: %v)", k+1, e)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()
	flushCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	cl.Flush(flushCtx)
	cancel()

	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 100 {
		t.Fatalf("only %d records acknowledged; the test did not exercise the broker", len(acked))
	}
	got := testenv.ReadToEnd(t, addr, topic, false)
	for p := int32(0); p < partitions; p++ {
		for i, r := range got[p] {
			if r.Offset != int64(i) {
				t.Fatalf("partition %d: record %d has offset %d; offsets are not contiguous", p, i, r.Offset)
			}
			if configs["compression.type"] != nil && *configs["compression.type"] == "zstd" && r.Attrs.CompressionType() != 4 {
				t.Fatalf("partition %d: record %d read from a batch with codec %d on a zstd topic", p, i, r.Attrs.CompressionType())
			}
		}
	}
	if idempotent {
		seen := map[string]int64{}
		dups := 0
		for p := int32(0); p < partitions; p++ {
			for _, r := range got[p] {
				if r.ProducerID < 0 {
					t.Fatalf("record at %d/%d has no producer id: the producer did not run idempotently", p, r.Offset)
				}
				if prev, ok := seen[string(r.Value)]; ok {
					dups++
					if dups <= 10 {
						t.Errorf("%q at offset %d duplicates offset %d", r.Value, r.Offset, prev)
					}
				}
				seen[string(r.Value)] = r.Offset
			}
		}
		if dups > 0 {
			t.Fatalf("%d duplicates from an idempotent producer", dups)
		}
	}
	lost := 0
	for a, v := range acked {
		rs := got[a.partition]
		if a.offset >= int64(len(rs)) || string(rs[a.offset].Value) != v {
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged %q at %d/%d is missing or changed", v, a.partition, a.offset)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged records lost across %d SIGKILLs", lost, len(acked), kills)
	}
	t.Logf("%d acknowledged records all present after %d SIGKILLs", len(acked), kills)
}
