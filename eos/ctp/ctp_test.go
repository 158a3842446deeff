package ctp

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	inTopic  = "in"
	outTopic = "out"
	dlqTopic = "dlq"
)

// newBroker starts a broker whose groups form at once (no initial
// rebalance delay), with the topics every test uses.
func newBroker(t *testing.T, inParts int32) string {
	t.Helper()
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{"group.initial.rebalance.delay.ms": "0"}})
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for topic, parts := range map[string]int32{inTopic: inParts, outTopic: 3, dlqTopic: 1} {
		resp, err := adm.CreateTopic(context.Background(), parts, 1, nil, topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatalf("creating %s: %v", topic, err)
		}
	}
	return b.Addr()
}

func value(i int) string { return fmt.Sprintf("v-%03d", i) }

// produceInputs writes values from..to-1 round-robin over parts
// partitions, each with a "trace" header, and returns the written records
// (with their offsets) by value.
func produceInputs(t *testing.T, addr string, parts int32, from, to int) map[string]*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		recs = append(recs, &kgo.Record{Topic: inTopic, Partition: int32(i) % parts,
			Key: fmt.Appendf(nil, "k-%03d", i), Value: []byte(value(i)),
			Headers: []kgo.RecordHeader{{Key: "trace", Value: fmt.Appendf(nil, "t-%d", i)}}})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	out := map[string]*kgo.Record{}
	for _, r := range recs {
		out[string(r.Value)] = r
	}
	return out
}

// readTopic reads topic to its end once it holds at least want records,
// so duplicates beyond want are still seen.
func readTopic(t *testing.T, addr, topic string, want int, readCommitted bool) []*kgo.Record {
	t.Helper()
	return testenv.Flatten(testenv.ReadAtLeast(t, addr, topic, readCommitted, want))
}

// assertExactlyOnce checks that recs hold each of want exactly once and
// nothing else.
func assertExactlyOnce(t *testing.T, what string, recs []*kgo.Record, want []string) {
	t.Helper()
	count := map[string]int{}
	for _, r := range recs {
		count[string(r.Value)]++
	}
	for _, v := range want {
		if count[v] != 1 {
			t.Errorf("%s: %q seen %d times, want once", what, v, count[v])
		}
		delete(count, v)
	}
	for v, n := range count {
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		t.Errorf("%s: unexpected %q seen %d times", what, v, n)
	}
	if len(recs) != len(want) {
		t.Errorf("%s: %d records, want %d", what, len(recs), len(want))
	}
}

// hasDuplicates reports whether some value occurs twice: in a
// read_uncommitted view, the trace of an aborted attempt.
func hasDuplicates(recs []*kgo.Record) bool {
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[string(r.Value)] {
			return true
		}
		seen[string(r.Value)] = true
	}
	return false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// baseConfig is a processor over the test topics with short backoffs and
// fast group heartbeats, so rebalances are noticed within a second.
func baseConfig(t *testing.T, addr, txnID string, transform func(context.Context, *kgo.Record) ([]*kgo.Record, error)) Config {
	return Config{
		Kafka: []kgo.Opt{kgo.SeedBrokers(addr), kgo.HeartbeatInterval(300 * time.Millisecond),
			kgo.SessionTimeout(6 * time.Second), kgo.FetchMaxWait(200 * time.Millisecond)},
		Group:           "g",
		Topics:          []string{inTopic},
		TransactionalID: txnID,
		Transform:       transform,
		OutputTopic:     outTopic,
		DeadLetterTopic: dlqTopic,
		Backoff:         10 * time.Millisecond,
		RestartBackoff:  100 * time.Millisecond,
		OnError:         func(err error) { t.Logf("%s: %v", txnID, err) },
	}
}

// instance is a Processor running in its own goroutine.
type instance struct {
	p      *Processor
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func start(t *testing.T, p *Processor) *instance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{p: p, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		in.err = p.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-in.done:
		case <-time.After(60 * time.Second):
			t.Errorf("Run of %s did not return after cancel", p.cfg.TransactionalID)
		}
	})
	return in
}

func mustNew(t *testing.T, cfg Config) *Processor {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wait returns Run's error once it returned.
func (in *instance) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-in.done:
		return in.err
	case <-time.After(60 * time.Second):
		t.Fatalf("Run of %s did not return", in.p.cfg.TransactionalID)
		return nil
	}
}

// twoOutputs maps an input to two outputs, so a torn transaction would
// show as one output without the other.
func twoOutputs(r *kgo.Record) []*kgo.Record {
	return []*kgo.Record{
		{Key: r.Key, Value: append(bytes.Clone(r.Value), "#0"...)},
		{Key: r.Key, Value: append(bytes.Clone(r.Value), "#1"...)},
	}
}

func outputsOf(values ...string) []string {
	var out []string
	for _, v := range values {
		out = append(out, v+"#0", v+"#1")
	}
	return out
}

func header(r *kgo.Record, key string) (string, bool) {
	v, ok := "", false
	for _, h := range r.Headers {
		if h.Key == key {
			v, ok = string(h.Value), true
		}
	}
	return v, ok
}

// checkDeadLetter checks that d is src's dead-letter record.
func checkDeadLetter(t *testing.T, d, src *kgo.Record, attempts int, errText string) {
	t.Helper()
	if !bytes.Equal(d.Key, src.Key) || !bytes.Equal(d.Value, src.Value) {
		t.Errorf("dead letter %q/%q, want the input's %q/%q", d.Key, d.Value, src.Key, src.Value)
	}
	if len(d.Headers) == 0 || d.Headers[0].Key != "trace" || !bytes.Equal(d.Headers[0].Value, src.Headers[0].Value) {
		t.Errorf("%s: input header not copied first: %v", src.Value, d.Headers)
	}
	want := map[string]string{
		HeaderTopic:     src.Topic,
		HeaderPartition: strconv.Itoa(int(src.Partition)),
		HeaderOffset:    strconv.FormatInt(src.Offset, 10),
		HeaderTimestamp: strconv.FormatInt(src.Timestamp.UnixMilli(), 10),
		HeaderGroup:     "g",
		HeaderAttempts:  strconv.Itoa(attempts),
	}
	for k, w := range want {
		if got, ok := header(d, k); !ok || got != w {
			t.Errorf("%s: header %s = %q (present %v), want %q", src.Value, k, got, ok, w)
		}
	}
	if got, _ := header(d, HeaderError); !strings.Contains(got, errText) {
		t.Errorf("%s: header %s = %q, want it to contain %q", src.Value, HeaderError, got, errText)
	}
}

var errPoison = errors.New("poison: cannot transform")

// Two instances share the work; the first is held in the middle of a
// transaction while the second joins (the rebalance revokes partitions from
// under it), and later is stopped in the middle of another one. Every input
// still has its outputs, and the poison records their dead letters,
// exactly once in the read_committed view, while the read_uncommitted view
// shows the aborted attempts were really written.
func TestExactlyOnceAcrossRebalance(t *testing.T) {
	const parts = 4
	addr := newBroker(t, parts)
	poison := map[string]bool{value(13): true, value(150): true, value(250): true}

	var (
		aCalls  atomic.Int64
		blockAt atomic.Int64 // A's call number that blocks; 0: none
		blocked = make(chan struct{}, 1)
		release atomic.Pointer[chan struct{}] // what a blocked call waits for
	)
	transform := func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
		if poison[string(r.Value)] {
			return nil, errPoison
		}
		return twoOutputs(r), nil
	}
	aTransform := func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
		if n := aCalls.Add(1); n == blockAt.Load() {
			blocked <- struct{}{}
			select {
			case <-*release.Load():
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return transform(ctx, r)
	}
	cfgA := baseConfig(t, addr, "ctp-a", aTransform)
	cfgA.MaxPollRecords = 20
	cfgB := baseConfig(t, addr, "ctp-b", transform)
	cfgB.MaxPollRecords = 20

	// Phase 1: A alone, held on its 30th record (in its second
	// transaction, after the first 9 records' outputs were sent).
	inputs := produceInputs(t, addr, parts, 0, 200)
	phase1 := make(chan struct{})
	release.Store(&phase1)
	blockAt.Store(30)
	a := start(t, mustNew(t, cfgA))
	<-blocked
	b := start(t, mustNew(t, cfgB))
	// B commits only once the rebalance gave it partitions, that is
	// after A's revocation.
	waitFor(t, "B to commit after joining", func() bool { return b.p.Stats().Committed > 0 })
	close(phase1)
	waitFor(t, "A to abort the transaction the rebalance interrupted", func() bool { return a.p.Stats().Aborted > 0 })
	waitFor(t, "phase 1 to be processed", func() bool { return a.p.Stats().Records+b.p.Stats().Records == 200 })

	// Phase 2: A is held again, on its second record from now (after the
	// first one's outputs were produced), and stopped there: it leaves the
	// group mid-transaction.
	abortedBefore := a.p.Stats().Aborted
	never := make(chan struct{})
	release.Store(&never)
	blockAt.Store(aCalls.Load() + 2)
	for v, r := range produceInputs(t, addr, parts, 200, 400) {
		inputs[v] = r
	}
	<-blocked
	a.cancel()
	if err := a.wait(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("A's Run returned %v, want context.Canceled", err)
	}
	if got := a.p.Stats().Aborted; got != abortedBefore+1 {
		t.Errorf("A aborted %d transactions when stopped mid-transaction, want %d", got-abortedBefore, 1)
	}
	waitFor(t, "B to process the rest", func() bool { return a.p.Stats().Records+b.p.Stats().Records == 400 })

	var good, bad []string
	for i := range 400 {
		if poison[value(i)] {
			bad = append(bad, value(i))
		} else {
			good = append(good, value(i))
		}
	}
	want := outputsOf(good...)
	assertExactlyOnce(t, "read_committed outputs", readTopic(t, addr, outTopic, len(want), true), want)
	dlq := readTopic(t, addr, dlqTopic, len(bad), true)
	assertExactlyOnce(t, "read_committed dead letters", dlq, bad)
	for _, d := range dlq {
		if src := inputs[string(d.Value)]; src != nil {
			checkDeadLetter(t, d, src, 3, errPoison.Error())
		}
	}
	if raw := readTopic(t, addr, outTopic, len(want)+1, false); !hasDuplicates(raw) {
		t.Errorf("read_uncommitted outputs show no aborted attempt (%d records): the aborts this test forces did not happen", len(raw))
	}
	sa, sb := a.p.Stats(), b.p.Stats()
	if sa.DeadLettered+sb.DeadLettered != int64(len(bad)) || sa.Outputs+sb.Outputs != int64(len(want)) {
		t.Errorf("stats: A %+v, B %+v; want %d outputs and %d dead letters in total", sa, sb, len(want), len(bad))
	}
}

// Poison records, whether they fail every attempt, fail permanently or
// panic, go to the dead-letter topic exactly once with their headers and
// the error's description, and the records around them flow.
func TestPoisonRecordsDeadLetteredOnce(t *testing.T) {
	addr := newBroker(t, 2)
	inputs := produceInputs(t, addr, 2, 0, 30)
	var mu sync.Mutex
	calls := map[string]int{}
	transform := func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
		mu.Lock()
		calls[string(r.Value)]++
		mu.Unlock()
		switch string(r.Value) {
		case value(5):
			return nil, errPoison
		case value(10):
			return nil, Permanent(errors.New("unparseable"))
		case value(15):
			panic("transform bug")
		}
		return twoOutputs(r), nil
	}
	cfg := baseConfig(t, addr, "ctp-p", transform)
	cfg.MaxPollRecords = 7
	in := start(t, mustNew(t, cfg))
	waitFor(t, "all records", func() bool { return in.p.Stats().Records == 30 })

	var good []string
	for i := range 30 {
		if i != 5 && i != 10 && i != 15 {
			good = append(good, value(i))
		}
	}
	want := outputsOf(good...)
	assertExactlyOnce(t, "outputs", readTopic(t, addr, outTopic, len(want), true), want)
	dlq := readTopic(t, addr, dlqTopic, 3, true)
	assertExactlyOnce(t, "dead letters", dlq, []string{value(5), value(10), value(15)})
	for _, d := range dlq {
		switch v := string(d.Value); v {
		case value(5):
			checkDeadLetter(t, d, inputs[v], 3, errPoison.Error())
		case value(10):
			checkDeadLetter(t, d, inputs[v], 1, "unparseable")
		case value(15):
			checkDeadLetter(t, d, inputs[v], 1, "transform panicked: transform bug")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls[value(5)] != 3 || calls[value(10)] != 1 || calls[value(15)] != 1 {
		t.Errorf("transform calls: %d, %d, %d; want 3 for the retried, 1 for the permanent and 1 for the panicking record",
			calls[value(5)], calls[value(10)], calls[value(15)])
	}
	if s := in.p.Stats(); s.Retries != 2 || s.DeadLettered != 3 || s.Aborted != 0 {
		t.Errorf("stats %+v, want 2 retries, 3 dead letters, no aborts", s)
	}
}

// A record that fails twice and then succeeds has its output exactly once;
// the outputs returned with the failed attempts are never written, not
// even to an aborted transaction, and nothing is dead-lettered.
func TestTransientFailureRetriedOnce(t *testing.T) {
	addr := newBroker(t, 2)
	produceInputs(t, addr, 2, 0, 20)
	var failures atomic.Int64
	transform := func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
		if string(r.Value) == value(7) && failures.Add(1) <= 2 {
			return []*kgo.Record{{Value: []byte("partial")}}, errors.New("downstream briefly unavailable")
		}
		return twoOutputs(r), nil
	}
	cfg := baseConfig(t, addr, "ctp-t", transform)
	in := start(t, mustNew(t, cfg))
	waitFor(t, "all records", func() bool { return in.p.Stats().Records == 20 })

	var vals []string
	for i := range 20 {
		vals = append(vals, value(i))
	}
	want := outputsOf(vals...)
	assertExactlyOnce(t, "read_committed outputs", readTopic(t, addr, outTopic, len(want), true), want)
	// read_uncommitted: not even an aborted write of the partial output.
	assertExactlyOnce(t, "read_uncommitted outputs", readTopic(t, addr, outTopic, len(want), false), want)
	if dlq := readTopic(t, addr, dlqTopic, 0, false); len(dlq) != 0 {
		t.Errorf("%d dead letters, want none", len(dlq))
	}
	if s := in.p.Stats(); s.Retries != 2 || s.DeadLettered != 0 || s.Aborted != 0 {
		t.Errorf("stats %+v, want 2 retries, no dead letters, no aborts", s)
	}
}

// An output rejected for its size aborts the transaction; the batch is
// consumed again and its input is dead-lettered instead of blocking the
// partition, while its neighbours' outputs commit once. The client rejects
// a record too large for any batch on its own; the broker rejects a whole
// batch over the topic's max.message.bytes, which may also hold
// neighbours' outputs, and those must not be blamed.
func TestRejectedOutputDeadLettered(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxBytes string // the output topic's max.message.bytes; "" default
		size     int
	}{
		{"by the client", "", 2 << 20},
		{"by the broker", "1500", 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := newBroker(t, 1)
			output := outTopic
			if tc.maxBytes != "" {
				output = "small"
				cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1,
					map[string]*string{"max.message.bytes": &tc.maxBytes}, output)
				cl.Close()
				if err == nil {
					err = resp.Err
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			inputs := produceInputs(t, addr, 1, 0, 10)
			var bigCalls atomic.Int64
			transform := func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
				outs := twoOutputs(r)
				if string(r.Value) == value(4) {
					bigCalls.Add(1)
					// Incompressible: the limits apply to the compressed batch.
					outs[1].Value = make([]byte, tc.size)
					_, _ = rand.Read(outs[1].Value)
				}
				return outs, nil
			}
			cfg := baseConfig(t, addr, "ctp-r", transform)
			cfg.OutputTopic = output
			in := start(t, mustNew(t, cfg))
			waitFor(t, "all records", func() bool { return in.p.Stats().Records == 10 })

			var good []string
			for i := range 10 {
				if i != 4 {
					good = append(good, value(i))
				}
			}
			want := outputsOf(good...)
			assertExactlyOnce(t, "outputs", readTopic(t, addr, output, len(want), true), want)
			dlq := readTopic(t, addr, dlqTopic, 1, true)
			assertExactlyOnce(t, "dead letters", dlq, []string{value(4)})
			for _, d := range dlq {
				checkDeadLetter(t, d, inputs[value(4)], 1, "MESSAGE_TOO_LARGE")
			}
			s := in.p.Stats()
			if s.DeadLettered != 1 || s.Aborted < 1 || s.Aborted != bigCalls.Load() {
				t.Errorf("stats %+v after %d oversized transforms: want one dead letter and one abort per oversized transform", s, bigCalls.Load())
			}
			if tc.maxBytes == "" && bigCalls.Load() != 1 {
				t.Errorf("the oversized transform ran %d times, want once (a lone rejection is certain)", bigCalls.Load())
			}
		})
	}
}

// An instance killed in the middle of a transaction (its client closed
// after the batch's outputs were written, without ending the transaction)
// never has those outputs seen by read_committed readers; whoever takes its
// partitions reprocesses them. The successor is the same instance
// restarted (its transactional id fences the open transaction at once), or
// another instance (the open transaction times out).
func TestKilledMidTransaction(t *testing.T) {
	t.Run("restarted", func(t *testing.T) { killedMidTransaction(t, false) })
	t.Run("other instance", func(t *testing.T) { killedMidTransaction(t, true) })
}

func killedMidTransaction(t *testing.T, other bool) {
	const parts = 2
	addr := newBroker(t, parts)
	transform := func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) { return twoOutputs(r), nil }

	cfgA := baseConfig(t, addr, "ctp-a", transform)
	cfgA.MaxPollRecords = 5
	if other {
		// Only the timeout ends the dead instance's transaction; until
		// then it holds back the last stable offset of the outputs.
		cfgA.Kafka = append(cfgA.Kafka, kgo.TransactionTimeout(3*time.Second))
	} else {
		// The restart must end it by fencing, long before this.
		cfgA.Kafka = append(cfgA.Kafka, kgo.TransactionTimeout(10*time.Minute))
	}
	pa := mustNew(t, cfgA)
	var crash atomic.Bool
	pa.crashBeforeEnd = func(int64) bool { return crash.Load() }
	a := start(t, pa)
	var b *instance
	if other {
		b = start(t, mustNew(t, baseConfig(t, addr, "ctp-b", transform)))
	}
	records := func() int64 {
		n := pa.Stats().Records
		if b != nil {
			n += b.p.Stats().Records
		}
		return n
	}

	// Phase 1: both partitions processed and committed, by A alone or by
	// A and B.
	produceInputs(t, addr, parts, 0, 20)
	waitFor(t, "phase 1", func() bool { return records() == 20 })
	if other && (pa.Stats().Committed == 0 || b.p.Stats().Committed == 0) {
		// Not fatal for the guarantee, but then B never took over.
		t.Logf("A committed %d, B %d transactions in phase 1", pa.Stats().Committed, b.p.Stats().Committed)
	}

	// Phase 2: A dies before ending its next transaction.
	crash.Store(true)
	produceInputs(t, addr, parts, 20, 40)
	if err := a.wait(t); !errors.Is(err, errCrashed) {
		t.Fatalf("A's Run returned %v, want the simulated crash", err)
	}
	if !other {
		b = start(t, mustNew(t, cfgA)) // same transactional id, no crash
	}
	waitFor(t, "the successor to process the rest", func() bool { return records() == 40 })

	var vals []string
	for i := range 40 {
		vals = append(vals, value(i))
	}
	want := outputsOf(vals...)
	assertExactlyOnce(t, "read_committed outputs", readTopic(t, addr, outTopic, len(want), true), want)
	if raw := readTopic(t, addr, outTopic, len(want)+1, false); !hasDuplicates(raw) {
		t.Errorf("read_uncommitted outputs show nothing of the killed transaction (%d records)", len(raw))
	}
}

// Without a dead-letter topic a poison record stops Run with a
// *RecordError and nothing of its batch commits; a fixed transform then
// resumes exactly at that record.
func TestNoDeadLetterTopicStops(t *testing.T) {
	addr := newBroker(t, 1)
	inputs := produceInputs(t, addr, 1, 0, 8)
	broken := func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) {
		if string(r.Value) == value(3) {
			return nil, errPoison
		}
		return twoOutputs(r), nil
	}
	cfg := baseConfig(t, addr, "ctp-n", broken)
	cfg.DeadLetterTopic = ""
	cfg.MaxPollRecords = 2
	in := start(t, mustNew(t, cfg))
	err := in.wait(t)
	var re *RecordError
	if !errors.As(err, &re) || !errors.Is(err, errPoison) {
		t.Fatalf("Run returned %v, want a *RecordError wrapping the poison error", err)
	}
	if src := inputs[value(3)]; re.Topic != src.Topic || re.Partition != src.Partition || re.Offset != src.Offset || re.Attempts != 3 {
		t.Errorf("RecordError %+v, want %s/%d@%d after 3 attempts", re, src.Topic, src.Partition, src.Offset)
	}
	// Batches of two: v-000 and v-001 committed, v-002 and v-003 aborted.
	assertExactlyOnce(t, "outputs before the fix", readTopic(t, addr, outTopic, 4, true), outputsOf(value(0), value(1)))

	cfg.Transform = func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) { return twoOutputs(r), nil }
	fixed := start(t, mustNew(t, cfg))
	waitFor(t, "the rest", func() bool { return fixed.p.Stats().Records == 6 })
	var vals []string
	for i := range 8 {
		vals = append(vals, value(i))
	}
	want := outputsOf(vals...)
	assertExactlyOnce(t, "outputs after the fix", readTopic(t, addr, outTopic, len(want), true), want)
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Group: "g", Topics: []string{"in"}, TransactionalID: "id",
		Transform: func(context.Context, *kgo.Record) ([]*kgo.Record, error) { return nil, nil }}
	for name, mutate := range map[string]func(*Config){
		"no group":         func(c *Config) { c.Group = "" },
		"no topics":        func(c *Config) { c.Topics = nil },
		"no txn id":        func(c *Config) { c.TransactionalID = "" },
		"no transform":     func(c *Config) { c.Transform = nil },
		"dlq is an input":  func(c *Config) { c.DeadLetterTopic = "in" },
		"negative backoff": func(c *Config) { c.Backoff = -time.Second },
	} {
		c := ok
		mutate(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	if p.cfg.MaxAttempts != 3 || p.cfg.MaxPollRecords != 500 || p.backoff(1) != 100*time.Millisecond ||
		p.backoff(3) != 400*time.Millisecond || p.backoff(30) != 5*time.Second {
		t.Errorf("defaults: %+v, backoffs %v %v %v", p.cfg, p.backoff(1), p.backoff(3), p.backoff(30))
	}
	if Permanent(nil) != nil || !IsPermanent(fmt.Errorf("wrapped: %w", Permanent(errPoison))) || IsPermanent(errPoison) {
		t.Error("Permanent/IsPermanent")
	}
}

// A second live instance with the same transactional id fences the first:
// the first stops with ErrFenced at its next transaction instead of
// fighting back, and the second processes everything exactly once.
func TestSameTransactionalIDFences(t *testing.T) {
	const parts = 2
	addr := newBroker(t, parts)
	transform := func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error) { return twoOutputs(r), nil }
	cfg := baseConfig(t, addr, "ctp-z", transform)
	cfg.MaxPollRecords = 5
	a := start(t, mustNew(t, cfg))
	produceInputs(t, addr, parts, 0, 20)
	waitFor(t, "phase 1", func() bool { return a.p.Stats().Records == 20 })

	b := start(t, mustNew(t, cfg))
	// B fences A before it joins the group (its session initialises the
	// producer id first), so once the group is stable with two members,
	// A's next transaction is a zombie's.
	waitFor(t, "B to join", func() bool { return groupMembers(t, addr, "g") == 2 })
	produceInputs(t, addr, parts, 20, 40)
	err := a.wait(t)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("A's Run returned %v, want ErrFenced", err)
	}
	t.Logf("A stopped: %v", err)
	waitFor(t, "B to process the rest", func() bool { return a.p.Stats().Records+b.p.Stats().Records == 40 })
	var vals []string
	for i := range 40 {
		vals = append(vals, value(i))
	}
	want := outputsOf(vals...)
	assertExactlyOnce(t, "read_committed outputs", readTopic(t, addr, outTopic, len(want), true), want)
}

// groupMembers is the member count of a stable group, 0 while it rebalances.
func groupMembers(t *testing.T, addr, group string) int {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gs, err := kadm.NewClient(cl).DescribeGroups(ctx, group)
	if err != nil {
		return 0
	}
	g, ok := gs[group]
	if !ok || g.Err != nil || g.State != "Stable" {
		return 0
	}
	return len(g.Members)
}
