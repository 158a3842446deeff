package verify_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/verify"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func newProxy(t *testing.T, b *exactly.Broker) *verify.Proxy {
	t.Helper()
	p, err := verify.NewProxy([]string{b.Addr()}, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func client(t *testing.T, seeds []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...), kgo.RetryBackoffFn(func(int) time.Duration { return 20 * time.Millisecond }), kgo.MetadataMinAge(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createTopic(t *testing.T, addr, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(client(t, []string{addr})).CreateTopic(ctx, partitions, 1, nil, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create %s: %v %v", topic, err, resp.Err)
	}
}

func TestProxyRewritesBrokerAddresses(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{"group.initial.rebalance.delay.ms": "0"}})
	p := newProxy(t, b)
	cl := client(t, p.Addrs())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	meta, err := (&kmsg.MetadataRequest{}).RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(meta.Brokers) != 1 || fmt.Sprintf("%s:%d", meta.Brokers[0].Host, meta.Brokers[0].Port) != p.Addrs()[0] {
		t.Fatalf("metadata brokers %+v, want the proxy %s", meta.Brokers, p.Addrs()[0])
	}
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.CoordinatorKey, fc.CoordinatorKeys = "g", []string{"g"}
	fcr, err := fc.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range fcr.Coordinators {
		if got := fmt.Sprintf("%s:%d", c.Host, c.Port); got != p.Addrs()[0] {
			t.Fatalf("coordinator at %s, want the proxy %s", got, p.Addrs()[0])
		}
	}
	if fcr.Version < 4 && fmt.Sprintf("%s:%d", fcr.Host, fcr.Port) != p.Addrs()[0] {
		t.Fatalf("coordinator at %s:%d", fcr.Host, fcr.Port)
	}

	// A group consumer and an acks=0 producer work through it.
	createTopic(t, b.Addr(), "t", 2)
	prod := client(t, p.Addrs(), kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite(), kgo.DefaultProduceTopic("t"))
	for i := 0; i < 50; i++ {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	prod.Flush(ctx)
	cons := client(t, p.Addrs(), kgo.ConsumerGroup("g"), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := 0
	for got < 50 && ctx.Err() == nil {
		fs := cons.PollFetches(ctx)
		got += fs.NumRecords()
	}
	if got != 50 {
		t.Fatalf("consumed %d of 50 through the proxy", got)
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Stats().Connections == 0 {
		t.Fatal("no connection went through the proxy")
	}
}

// A dropped Produce response makes a plain producer resend a write that
// happened (a duplicate); an idempotent producer's resend is deduplicated
// by the broker.
func TestProxyLostAcksDuplicateOnlyWithoutIdempotence(t *testing.T) {
	b := exactly.NewTestBroker(t)
	p := newProxy(t, b)
	createTopic(t, b.Addr(), "plain", 1)
	createTopic(t, b.Addr(), "idem", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const n = 60
	produce := func(topic string, opts ...kgo.Opt) {
		cl := client(t, p.Addrs(), append(opts, kgo.DefaultProduceTopic(topic))...)
		p.SetDrop(0.3)
		defer p.SetDrop(0)
		for i := 0; i < n; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
				t.Fatalf("%s record %d: %v", topic, i, err)
			}
		}
	}
	produce("plain", kgo.DisableIdempotentWrite())
	dropped := p.Stats().DroppedResponses
	produce("idem")
	if dropped == 0 || p.Stats().DroppedResponses == dropped {
		t.Fatalf("no responses dropped: %+v", p.Stats())
	}

	count := func(topic string) (records int, distinct int) {
		cl := client(t, []string{b.Addr()}, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		seen := map[string]bool{}
		for ctx.Err() == nil {
			pctx, pc := context.WithTimeout(ctx, 300*time.Millisecond)
			fs := cl.PollFetches(pctx)
			pc()
			got := 0
			fs.EachRecord(func(r *kgo.Record) { got++; seen[string(r.Value)] = true })
			records += got
			if got == 0 && len(seen) >= n {
				break // everything arrived and nothing more follows
			}
		}
		return records, len(seen)
	}
	if recs, distinct := count("plain"); distinct != n || recs <= n {
		t.Fatalf("plain producer: %d records, %d distinct; want duplicates of all %d", recs, distinct, n)
	}
	if recs, distinct := count("idem"); distinct != n || recs != n {
		t.Fatalf("idempotent producer: %d records, %d distinct; want exactly %d", recs, distinct, n)
	}
}

func TestProxyResetBreaksConnectionsAndClientsRecover(t *testing.T) {
	b := exactly.NewTestBroker(t)
	p := newProxy(t, b)
	createTopic(t, b.Addr(), "r", 1)
	cl := client(t, p.Addrs(), kgo.DefaultProduceTopic("r"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("a")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if n := p.Reset(); n == 0 {
		t.Fatal("Reset found no connections")
	}
	p.SetDelay(50 * time.Millisecond)
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("b")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if p.Stats().Resets == 0 || p.Stats().DelayedResponses == 0 {
		t.Fatalf("stats %+v", p.Stats())
	}
}
