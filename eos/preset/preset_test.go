package preset_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/eos/preset"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func client(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(addr))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createTopic(t *testing.T, addr, topic string) {
	t.Helper()
	resp, err := kadm.NewClient(client(t, addr)).CreateTopic(context.Background(), 1, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// poll reads until want records arrived or 10s passed.
func poll(t *testing.T, cl *kgo.Client, want int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		got = append(got, fs.Records()...)
	}
	return got
}

// pollNone asserts that nothing arrives within a short window.
func pollNone(t *testing.T, cl *kgo.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if rs := cl.PollFetches(ctx).Records(); len(rs) > 0 {
		t.Fatalf("got %d records, want none", len(rs))
	}
}

func produce(t *testing.T, cl *kgo.Client, topic string, n int) {
	t.Helper()
	for i := range n {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "%d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAtMostOnceProducerOptions(t *testing.T) {
	b := exactly.NewTestBroker(t)
	cl := client(t, b.Addr(), preset.AtMostOnceProducer()...)
	if got := cl.OptValue(kgo.RequiredAcks); got != kgo.LeaderAck() {
		t.Errorf("acks = %v, want leader", got)
	}
	if got := cl.OptValue(kgo.RecordRetries); got != int64(0) {
		t.Errorf("record retries = %v, want 0", got)
	}
	if got := cl.OptValue(kgo.DisableIdempotentWrite); got != true {
		t.Errorf("idempotence not disabled: %v", got)
	}
	createTopic(t, b.Addr(), "amo")
	produce(t, cl, "amo", 3) // the combination is accepted by the client and the broker
}

// At-most-once: offsets committed before processing, then a crash, means the
// next member never sees those records again.
func TestAtMostOnceConsumerCommitBeforeProcessing(t *testing.T) {
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "amo")
	produce(t, client(t, b.Addr(), preset.AtLeastOnceProducer()...), "amo", 5)

	c1 := client(t, b.Addr(), append(preset.AtMostOnceConsumer("g"), kgo.ConsumeTopics("amo"))...)
	if got := poll(t, c1, 5); len(got) != 5 {
		t.Fatalf("got %d records", len(got))
	}
	if err := c1.CommitUncommittedOffsets(context.Background()); err != nil {
		t.Fatal(err)
	}
	c1.Close() // "crash" before processing

	c2 := client(t, b.Addr(), append(preset.AtMostOnceConsumer("g"), kgo.ConsumeTopics("amo"))...)
	pollNone(t, c2)
}

// At-least-once: no auto-commit, so records polled but not committed (a crash
// before the post-processing commit) are delivered again.
func TestAtLeastOnceConsumerRedeliversUncommitted(t *testing.T) {
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "alo")
	pr := client(t, b.Addr(), preset.AtLeastOnceProducer()...)
	if got := pr.OptValue(kgo.RequiredAcks); got != kgo.AllISRAcks() {
		t.Errorf("acks = %v, want all", got)
	}
	produce(t, pr, "alo", 5)

	opts := append(preset.AtLeastOnceConsumer("g"), kgo.ConsumeTopics("alo"),
		kgo.AutoCommitInterval(100*time.Millisecond))
	c1 := client(t, b.Addr(), opts...)
	if got := poll(t, c1, 5); len(got) != 5 {
		t.Fatalf("got %d records", len(got))
	}
	time.Sleep(300 * time.Millisecond) // an auto-committer would have committed by now
	c1.Close()                         // crash before the commit

	c2 := client(t, b.Addr(), opts...)
	got := poll(t, c2, 5)
	if len(got) != 5 {
		t.Fatalf("redelivered %d records, want 5", len(got))
	}
	if err := c2.CommitRecords(context.Background(), got...); err != nil {
		t.Fatal(err)
	}
	c2.Close()
	pollNone(t, client(t, b.Addr(), opts...))
}

// Exactly-once: the producer is transactional, and the consumer never sees an
// aborted transaction's records (a read_uncommitted reader does).
func TestExactlyOnceProducerAndReadCommittedConsumer(t *testing.T) {
	b := exactly.NewTestBroker(t)
	createTopic(t, b.Addr(), "eos")
	pr := client(t, b.Addr(), preset.ExactlyOnceProducer("eos-preset")...)
	if got := pr.OptValue(kgo.TransactionalID); got != "eos-preset" {
		t.Fatalf("transactional id = %v", got)
	}
	ctx := context.Background()
	for _, commit := range []kgo.TransactionEndTry{kgo.TryAbort, kgo.TryCommit} {
		if err := pr.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			pr.Produce(ctx, &kgo.Record{Topic: "eos", Value: fmt.Appendf(nil, "%v-%d", commit, i)}, nil)
		}
		if err := pr.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := pr.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	c := client(t, b.Addr(), append(preset.ExactlyOnceConsumer("g"), kgo.ConsumeTopics("eos"))...)
	got := poll(t, c, 3)
	for _, r := range got {
		if string(r.Value[:4]) != "true" {
			t.Errorf("read_committed consumer saw %q", r.Value)
		}
	}
	if len(got) != 3 {
		t.Fatalf("got %d committed records, want 3", len(got))
	}
	ru := client(t, b.Addr(), kgo.ConsumeTopics("eos"))
	if got := poll(t, ru, 6); len(got) != 6 {
		t.Fatalf("read_uncommitted reader saw %d records, want 6 (aborted included)", len(got))
	}
}
