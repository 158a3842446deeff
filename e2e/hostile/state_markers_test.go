package hostile

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// markerTarget is the topic whose running transaction
// attackForgedMarkers tries to end.
const markerTarget = "txn-target"

// attackForgedMarkers forges COMMIT and ABORT markers, as any client can
// send WriteTxnMarkers: for every producer with a transaction open on
// markerTarget (found with DescribeProducers, as an attacker would), on
// both internal topics, and at a bumped epoch for a producer with nothing
// open (which would fence it). Every marker must be refused.
func attackForgedMarkers(t *testing.T, tg target) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm := adminClient(t, tg)
	set := kadm.TopicsSet{}
	set.Add(markerTarget, 0)
	described, err := adm.DescribeProducers(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	var forged []*kmsg.WriteTxnMarkersRequestMarker
	forge := func(topic string, pid int64, epoch int16, commit bool) {
		m := kmsg.NewWriteTxnMarkersRequestMarker()
		m.ProducerID, m.ProducerEpoch, m.Committed = pid, epoch, commit
		mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
		mt.Topic, mt.Partitions = topic, []int32{0}
		m.Topics = append(m.Topics, mt)
		forged = append(forged, &m)
	}
	described.EachProducer(func(p kadm.DescribedProducer) {
		if p.CurrentTxnStartOffset >= 0 {
			forge(markerTarget, p.ProducerID, p.ProducerEpoch, false)
			forge(markerTarget, p.ProducerID, p.ProducerEpoch, true)
		} else {
			forge(markerTarget, p.ProducerID, p.ProducerEpoch+1, false)
		}
	})
	for _, internal := range []string{"__transaction_state", "__consumer_offsets"} {
		forge(internal, 7, 0, true)
		forge(internal, 7, 0, false)
	}
	c := tg.dial(t)
	for _, m := range forged {
		req := kmsg.NewPtrWriteTxnMarkersRequest()
		req.Markers = append(req.Markers, *m)
		resp := c.Request(req, 1).(*kmsg.WriteTxnMarkersResponse)
		code := resp.Markers[0].Topics[0].Partitions[0].ErrorCode
		if code == 0 {
			t.Errorf("forged %v marker for producer %d epoch %d on %s accepted", m.Committed, m.ProducerID, m.ProducerEpoch, m.Topics[0].Topic)
		}
	}
}

// producerStates describes every producer on markerTarget (id, epoch,
// open transaction).
func producerStates(t *testing.T, tg target) string {
	t.Helper()
	set := kadm.TopicsSet{}
	set.Add(markerTarget, 0)
	described, err := adminClient(t, tg).DescribeProducers(t.Context(), set)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	described.EachProducer(func(p kadm.DescribedProducer) {
		lines = append(lines, fmt.Sprintf("producer %d epoch %d open txn at %d", p.ProducerID, p.ProducerEpoch, p.CurrentTxnStartOffset))
	})
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// startAt runs an embedded broker on dir; the caller closes it.
func startAt(t *testing.T, dir string) *exactly.Broker {
	t.Helper()
	b, err := exactly.Start(exactly.Options{DataDir: dir})
	if err != nil {
		t.Fatalf("starting the broker on %s: %v", dir, err)
	}
	return b
}

// readCommitted reads markerTarget read_committed to its end offset and
// returns the values seen.
func readCommitted(t *testing.T, tg target) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	offs, err := adminClient(t, tg).ListEndOffsets(ctx, markerTarget)
	if err != nil {
		t.Fatal(err)
	}
	end, _ := offs.Lookup(markerTarget, 0)
	cl, err := kgo.NewClient(append(tg.opts(), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{markerTarget: {0: kgo.NewOffset().AtStart()}}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var values []string
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s read_committed: got %v before the end offset %d", markerTarget, values, end.Offset)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			values = append(values, string(r.Value))
			done = done || r.Offset+2 >= end.Offset // the last record, then the COMMIT marker
		})
		if done {
			return values
		}
	}
}

// Forged markers change nothing: a running transaction still commits
// through its coordinator with its records visible to read_committed
// exactly once, a live producer is not fenced, the internal topics take no
// marker, and the broker restarts on the same data. Before the fix the
// forged ABORT hid the committed records and the forged markers on
// __transaction_state made the restart fail ("unknown transaction log
// record key").
func TestStateForgedMarkers(t *testing.T) {
	dir := t.TempDir()
	b := startAt(t, dir)
	defer func() { b.Close() }()
	createTopic(t, plaintext(b.Addr()), markerTarget, 1)
	ctx := t.Context()

	idem, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(markerTarget))
	if err != nil {
		t.Fatal(err)
	}
	defer idem.Close()
	if err := idem.ProduceSync(ctx, &kgo.Record{Value: []byte("idempotent-0")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	tx, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(markerTarget), kgo.TransactionalID("forged-markers"))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := tx.ProduceSync(ctx, &kgo.Record{Value: fmt.Appendf(nil, "txn-%d", i)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	before := producerStates(t, plaintext(b.Addr()))
	attackForgedMarkers(t, plaintext(b.Addr()))
	if after := producerStates(t, plaintext(b.Addr())); after != before {
		t.Errorf("producer state of %s changed by the attack:\n%s\nwant\n%s", markerTarget, after, before)
	}

	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("committing the attacked transaction: %v", err)
	}
	if err := idem.ProduceSync(ctx, &kgo.Record{Value: []byte("idempotent-1")}).FirstErr(); err != nil {
		t.Fatalf("the idempotent producer after the attack: %v", err)
	}
	want := "[idempotent-0 txn-0 txn-1 txn-2 idempotent-1]"
	if got := fmt.Sprint(readCommitted(t, plaintext(b.Addr()))); got != want {
		t.Errorf("read_committed after the attack: %s, want %s", got, want)
	}
	tx.Close()
	idem.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = startAt(t, dir)
	if got := fmt.Sprint(readCommitted(t, plaintext(b.Addr()))); got != want {
		t.Errorf("read_committed after a restart: %s, want %s", got, want)
	}
	canary(t, plaintext(b.Addr()), 20)
}
