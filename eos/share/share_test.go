package share

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	inTopic  = "in"
	dlqTopic = "dlq"
	limit    = 3
)

// newBroker starts a broker with a small delivery-count limit and short
// locks, the input (2 partitions) and dead-letter topics, and returns its
// address and an admin client.
func newBroker(t *testing.T) (string, *kgo.Client) {
	t.Helper()
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{
		"group.share.delivery.count.limit":        strconv.Itoa(limit),
		"group.share.record.lock.duration.ms":     "2000",
		"group.share.min.record.lock.duration.ms": "1000",
		"group.share.heartbeat.interval.ms":       "500",
	}})
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	for topic, parts := range map[string]int32{inTopic: 2, dlqTopic: 1} {
		resp, err := adm.CreateTopic(context.Background(), parts, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatalf("creating %s: %v", topic, err)
		}
	}
	return b.Addr(), cl
}

// produce writes n records v-000.. round-robin over the input's partitions,
// each with a trace header.
func produce(t *testing.T, cl *kgo.Client, n int) {
	t.Helper()
	var rs []*kgo.Record
	for i := range n {
		rs = append(rs, &kgo.Record{Topic: inTopic, Partition: int32(i % 2), Key: fmt.Appendf(nil, "k-%03d", i),
			Value: fmt.Appendf(nil, "v-%03d", i), Headers: []kgo.RecordHeader{{Key: "trace", Value: fmt.Appendf(nil, "t-%d", i)}}})
	}
	if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// settled waits until the group's share-partition start offsets reach the
// input's end: every record accepted or archived.
func settled(t *testing.T, ctx context.Context, cl *kgo.Client, group string) bool {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, inTopic)
	if err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		d, err := adm.DescribeShareGroupOffsets(ctx, group)
		if err == nil && d[group].Err == nil {
			done := true
			ends.Each(func(o kadm.ListedOffset) {
				if so, ok := d[group].Offsets[inTopic][o.Partition]; !ok || so.StartOffset < o.Offset {
					done = false
				}
			})
			if done {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// readDLQ reads every dead-letter record once at least want are there.
func readDLQ(t *testing.T, addr string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(dlqTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("dead-letter topic: %d records, want %d", len(out), want)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func header(r *kgo.Record, k string) string {
	for _, h := range r.Headers {
		if h.Key == k {
			return string(h.Value)
		}
	}
	return ""
}

// run starts a Consumer with handler and returns a stop function that
// waits for Run's answer.
func run(t *testing.T, addr, group string, handler func(context.Context, *kgo.Record) error) (*Consumer, func() error) {
	t.Helper()
	c, err := New(Config{Kafka: []kgo.Opt{kgo.SeedBrokers(addr)}, Group: group, Topics: []string{inTopic},
		DeadLetterTopic: dlqTopic, Handler: handler, MaxPollRecords: 10,
		OnError: func(err error) { t.Log(err) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return c, func() error { cancel(); return <-done }
}

// A poison record (its handler always fails, retriably) is handled exactly
// limit times, with delivery counts 1..limit, then lands in the
// dead-letter topic with headers naming where it came from, how often it
// was delivered and why; every other record is accepted after one call.
func TestPoisonRecordEndsInDeadLetterTopicAfterTheLimit(t *testing.T) {
	addr, cl := newBroker(t)
	const group, n, poison = "poison", 40, "v-017"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := StartAtEarliest(ctx, cl, group); err != nil {
		t.Fatal(err)
	}
	produce(t, cl, n)
	var mu sync.Mutex
	calls := map[string][]int32{}
	c, stop := run(t, addr, group, func(_ context.Context, r *kgo.Record) error {
		mu.Lock()
		calls[string(r.Value)] = append(calls[string(r.Value)], r.DeliveryCount())
		mu.Unlock()
		if string(r.Value) == poison {
			return errors.New("cannot parse the order")
		}
		return nil
	})
	if !settled(t, ctx, cl, group) {
		t.Fatal("the share group did not settle every record")
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
	if c.DeliveryLimit() != limit {
		t.Fatalf("delivery limit read as %d, want %d", c.DeliveryLimit(), limit)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := fmt.Sprint(calls[poison]); got != "[1 2 3]" {
		t.Fatalf("poison record handled with delivery counts %s, want [1 2 3]", got)
	}
	for i := range n {
		v := fmt.Sprintf("v-%03d", i)
		if v != poison && len(calls[v]) != 1 {
			t.Fatalf("%s handled %d times, want once", v, len(calls[v]))
		}
	}
	dl := readDLQ(t, addr, 1)
	if len(dl) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(dl))
	}
	r := dl[0]
	want := map[string]string{HeaderTopic: inTopic, HeaderPartition: "1", HeaderOffset: "8", HeaderGroup: group,
		HeaderDeliveryCount: strconv.Itoa(limit), HeaderError: "cannot parse the order", "trace": "t-17"}
	for k, v := range want {
		if got := header(r, k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if string(r.Value) != poison || string(r.Key) != "k-017" || header(r, HeaderTimestamp) == "" {
		t.Errorf("dead-letter record %q/%q, timestamp %q", r.Key, r.Value, header(r, HeaderTimestamp))
	}
	if st := c.Stats(); st.Accepted != n-1 || st.Released != limit-1 || st.DeadLettered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A Permanent error dead-letters the record on its first delivery.
func TestPermanentErrorDeadLettersAtOnce(t *testing.T) {
	addr, cl := newBroker(t)
	const group = "permanent"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := StartAtEarliest(ctx, cl, group); err != nil {
		t.Fatal(err)
	}
	produce(t, cl, 10)
	var mu sync.Mutex
	calls := map[string]int{}
	c, stop := run(t, addr, group, func(_ context.Context, r *kgo.Record) error {
		mu.Lock()
		calls[string(r.Value)]++
		mu.Unlock()
		if string(r.Value) == "v-004" {
			return Permanent(errors.New("schema violation"))
		}
		return nil
	})
	if !settled(t, ctx, cl, group) {
		t.Fatal("the share group did not settle every record")
	}
	stop()
	dl := readDLQ(t, addr, 1)
	if len(dl) != 1 || string(dl[0].Value) != "v-004" || header(dl[0], HeaderDeliveryCount) != "1" || header(dl[0], HeaderError) != "schema violation" {
		t.Fatalf("dead-letter records %v", dl)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["v-004"] != 1 {
		t.Fatalf("permanently failing record handled %d times", calls["v-004"])
	}
	if st := c.Stats(); st.Accepted != 9 || st.DeadLettered != 1 || st.Released != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// While the dead-letter topic cannot be written (here for longer than the
// record's lock), a record on its last delivery is never rejected without
// its copy: the publish is retried until the topic exists, and the record
// lands there. (Whether the lock renewals in between held is not asserted:
// if they did not, the broker archived the record at its limit meanwhile,
// which the copy makes harmless.)
func TestDeadLetterPublishIsRetriedNotDropped(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{
		"group.share.delivery.count.limit":        "2",
		"group.share.record.lock.duration.ms":     "2000",
		"group.share.min.record.lock.duration.ms": "1000",
		"auto.create.topics.enable":               "false",
	}})
	addr := b.Addr()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, inTopic); err != nil {
		t.Fatal(err)
	}
	const group = "retry"
	if err := StartAtEarliest(ctx, cl, group); err != nil {
		t.Fatal(err)
	}
	produce(t, cl, 1)
	var mu sync.Mutex
	var counts []int32
	failures := make(chan struct{}, 100)
	c, err := New(Config{Kafka: []kgo.Opt{kgo.SeedBrokers(addr), kgo.RecordRetries(2)}, Group: group, Topics: []string{inTopic},
		DeadLetterTopic: dlqTopic, Backoff: 200 * time.Millisecond,
		Handler: func(_ context.Context, r *kgo.Record) error {
			mu.Lock()
			counts = append(counts, r.DeliveryCount())
			mu.Unlock()
			return errors.New("down")
		},
		OnError: func(err error) {
			t.Log(err)
			select {
			case failures <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	// Fail publishes for longer than the 2 s lock.
	deadline := time.After(5 * time.Second)
wait:
	for {
		select {
		case <-failures:
		case <-deadline:
			break wait
		}
	}
	if resp, err := adm.CreateTopic(ctx, 1, 1, nil, dlqTopic); err != nil || resp.Err != nil {
		t.Fatal(err, resp.Err)
	}
	dl := readDLQ(t, addr, 1)
	stop()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(dl) != 1 || header(dl[0], HeaderDeliveryCount) != "2" || fmt.Sprint(counts) != "[1 2]" {
		t.Fatalf("dead-letter records %d (count %q), handler saw delivery counts %v", len(dl), header(dl[0], HeaderDeliveryCount), counts)
	}
	if !settled(t, ctx, cl, group) {
		t.Fatal("the record was not rejected after its dead-letter publish")
	}
}

func TestNewChecksConfig(t *testing.T) {
	h := func(context.Context, *kgo.Record) error { return nil }
	for _, cfg := range []Config{
		{Topics: []string{"a"}, Handler: h, DeadLetterTopic: "d"},
		{Group: "g", Handler: h, DeadLetterTopic: "d"},
		{Group: "g", Topics: []string{"a"}, DeadLetterTopic: "d"},
		{Group: "g", Topics: []string{"a"}, Handler: h},
		{Group: "g", Topics: []string{"a"}, Handler: h, DeadLetterTopic: "a"},
	} {
		if _, err := New(cfg); err == nil {
			t.Fatalf("New(%+v) accepted", cfg)
		}
	}
}
