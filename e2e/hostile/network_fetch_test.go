package hostile

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fillTopic produces n records of size bytes to each of topic's partitions
// (created here with configs), one value shared by all so the test's own
// heap stays small.
func fillTopic(t *testing.T, tg target, topic string, partitions int32, configs map[string]*string, n, size int, opts ...kgo.Opt) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append(append(tg.opts(), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RecordPartitioner(kgo.ManualPartitioner())), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, configs, topic); err != nil {
		t.Fatalf("creating %s: %v", topic, err)
	}
	value := bytes.Repeat([]byte("x"), size)
	for p := range partitions {
		for range n {
			cl.Produce(ctx, &kgo.Record{Partition: p, Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					t.Errorf("producing to %s: %v", topic, err)
				}
			})
		}
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// attackUnreadFetches fills a partition with 8 MiB and sends 40 fetches
// of all of it (every limit at 2^31-1) down one connection that never
// reads an answer. The connection stays open.
func attackUnreadFetches(t *testing.T, tg target) {
	t.Helper()
	fillTopic(t, tg, "unread", 1, nil, 128, 64<<10)
	c := tg.dial(t)
	for i := range 40 {
		c.Send(testenv.Frame(fetchRequest("unread", 1, math.MaxInt32, math.MaxInt32, 1, 0), 12, int32(i)))
	}
}

// TestUnreadFetchesAreBounded: a client that pipelines fetches and never
// reads the answers makes the broker hold one response, not one per
// queued request, and is disconnected after
// socket.response.write.timeout.ms. Before, every queued fetch held its
// records (40 fetches of a 63 MB partition: 2.4 GB) with no deadline.
// The per-partition cap is raised so that it does not hide the bound.
func TestUnreadFetchesAreBounded(t *testing.T) {
	onEachListener(t, map[string]string{
		"fetch.partition.max.bytes":        fmt.Sprint(64 << 20),
		"socket.response.write.timeout.ms": "3000",
	}, func(t *testing.T, b *exactly.Broker, attacker, well target) {
		base := heapInUse()
		heap := sample(heapInUse)

		attackUnreadFetches(t, attacker)

		eventually(t, 20*time.Second, "the broker closing the connection that does not read", func() bool {
			return metric(t, b, metricConnCount) == 0
		})
		grew := int64(heap.end()) - int64(base)
		t.Logf("heap grew by %d MiB", grew>>20)
		if grew > 48<<20 {
			t.Errorf("heap grew by %d MiB for 40 unread fetches of an 8 MiB partition", grew>>20)
		}
		canary(t, well, 20)
	})
}

// TestFetchResponsesAreCapped: fetch.max.bytes caps a response and
// fetch.partition.max.bytes (1 MiB by default) each partition in it,
// whatever the request asks; a batch larger than the caps is still
// returned alone, so a consumer always progresses.
func TestFetchResponsesAreCapped(t *testing.T) {
	b := startBroker(t, map[string]string{"fetch.max.bytes": fmt.Sprint(2 << 20)})
	fillTopic(t, plaintext(b.Addr()), "capped", 3, nil, 20, 100<<10)
	big := fmt.Sprint(4 << 20)
	fillTopic(t, plaintext(b.Addr()), "onebig", 1, map[string]*string{"max.message.bytes": &big}, 1, 3<<20,
		kgo.ProducerBatchMaxBytes(4<<20))
	c := testenv.DialRaw(t, b.Addr())

	resp := c.Request(fetchRequest("capped", 3, math.MaxInt32, math.MaxInt32, 1, 0), 12).(*kmsg.FetchResponse)
	total := 0
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 {
			t.Fatalf("partition %d: error %d", p.Partition, p.ErrorCode)
		}
		if n := len(p.RecordBatches); n > 1<<20 {
			t.Errorf("partition %d: %d bytes, above fetch.partition.max.bytes (1 MiB)", p.Partition, n)
		}
		total += len(p.RecordBatches)
	}
	if total > 2<<20 {
		t.Errorf("response holds %d bytes, above fetch.max.bytes (2 MiB)", total)
	}
	if len(resp.Topics[0].Partitions[0].RecordBatches) == 0 {
		t.Error("first partition returned nothing")
	}

	resp = c.Request(fetchRequest("onebig", 1, math.MaxInt32, math.MaxInt32, 1, 0), 12).(*kmsg.FetchResponse)
	if n := len(resp.Topics[0].Partitions[0].RecordBatches); n < 3<<20 {
		t.Errorf("a 3 MiB batch above both caps came back as %d bytes; it must be returned whole", n)
	}
	canary(t, plaintext(b.Addr()), 20)
}
