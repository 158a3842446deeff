package hostile

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// forgedProducers is how many made-up producer ids attackForgedProducerIDs
// sends, and forgedTopic where.
const (
	forgedProducers = 100_000
	forgedTopic     = "forged-pids"
	producerCap     = 1000
)

// idempotentBatch is a one-record batch from producer pid at epoch 0,
// sequence 0: what an idempotent producer's first batch looks like.
func idempotentBatch(pid int64) []byte {
	b := testenv.Batch("x")
	binary.BigEndian.PutUint64(b[43:], uint64(pid))
	binary.BigEndian.PutUint16(b[51:], 0)
	binary.BigEndian.PutUint32(b[53:], 0)
	return testenv.SealBatch(b)
}

// attackForgedProducerIDs produces one batch for each of forgedProducers
// made-up producer ids (never obtained from InitProducerId) to partition 0
// of forgedTopic, pipelined with acks=0, and waits until the broker has
// handled them all (an acks=all request queued behind them is answered).
func attackForgedProducerIDs(t *testing.T, tg target) {
	createTopic(t, tg, forgedTopic, 1)
	c := tg.dial(t)
	// acks=0 gets no answers, so the writes only wait for the broker to
	// read: give them as long as the whole attack may take.
	c.NC.SetWriteDeadline(time.Now().Add(60 * time.Second))
	var frames []byte
	for i := range forgedProducers {
		req := testenv.ProduceRequest(forgedTopic, 0, idempotentBatch(int64(1_000_000+i)))
		req.Acks = 0
		frames = append(frames, testenv.Frame(req, 9, int32(i))...)
		if len(frames) > 1<<20 || i == forgedProducers-1 {
			if _, err := c.NC.Write(frames); err != nil {
				t.Fatalf("sending forged producers: %v", err)
			}
			frames = frames[:0]
		}
	}
	last := testenv.ProduceRequest(forgedTopic, 0, testenv.Batch("last"))
	c.Send(testenv.Frame(last, 9, 42))
	// Its answer comes after every forged batch was handled: under -race
	// on a busy machine that took over 10 s.
	c.ReadTimeout = 60 * time.Second
	c.ReadResponse(last, 9, 42)
}

// describedProducers lists the producers on partition 0 of topic by id.
func describedProducers(t *testing.T, tg target, topic string) map[int64]kadm.DescribedProducer {
	t.Helper()
	set := kadm.TopicsSet{}
	set.Add(topic, 0)
	described, err := adminClient(t, tg).DescribeProducers(context.Background(), set)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]kadm.DescribedProducer{}
	described.EachProducer(func(p kadm.DescribedProducer) { out[p.ProducerID] = p })
	return out
}

// 100k forged producer ids leave at most producer.id.max.per.partition in
// the partition's state, the heap does not keep them, and an idempotent
// producer that was there first keeps its state (the forged ids could not
// evict it: it was not idle) and goes on producing. Before the fix all
// 100k were kept (and snapshotted) for ever.
func TestStateForgedProducerIDs(t *testing.T) {
	b := startBroker(t, map[string]string{"producer.id.max.per.partition": fmt.Sprint(producerCap)})
	createTopic(t, plaintext(b.Addr()), forgedTopic, 1)
	legit, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(forgedTopic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer legit.Close()
	if err := legit.ProduceSync(t.Context(), &kgo.Record{Value: []byte("before")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	heapBefore := heapInUse()
	attackForgedProducerIDs(t, plaintext(b.Addr()))
	if grown := int64(heapInUse()) - int64(heapBefore); grown > 32<<20 {
		t.Errorf("heap grew by %d MiB after %d forged producer ids", grown>>20, forgedProducers)
	}
	producers := describedProducers(t, plaintext(b.Addr()), forgedTopic)
	if len(producers) > producerCap {
		t.Errorf("%d producers kept after %d forged ids, want at most %d", len(producers), forgedProducers, producerCap)
	}
	if err := legit.ProduceSync(t.Context(), &kgo.Record{Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatalf("the idempotent producer after the attack: %v", err)
	}
	canary(t, plaintext(b.Addr()), 20)
}

// An idempotent producer idle past producer.id.expiration.ms is forgotten
// (and stays forgotten across a restart); a producer with a transaction
// open is never expired, and its transaction still commits. Before the
// fix nothing ever expired.
func TestStateProducerExpiry(t *testing.T) {
	dir := t.TempDir()
	cfg := map[string]string{"producer.id.expiration.ms": "1000", "producer.id.expiration.check.interval.ms": "100"}
	b, err := exactly.Start(exactly.Options{DataDir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close() }()
	const topic = "expiring"
	createTopic(t, plaintext(b.Addr()), topic, 1)
	ctx := t.Context()
	idem, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer idem.Close()
	if err := idem.ProduceSync(ctx, &kgo.Record{Value: []byte("idle")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	tx, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic), kgo.TransactionalID("slow"),
		kgo.TransactionTimeout(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := tx.ProduceSync(ctx, &kgo.Record{Value: []byte("in-txn")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	var idleID, txnID int64
	for id, p := range describedProducers(t, plaintext(b.Addr()), topic) {
		if p.CurrentTxnStartOffset >= 0 {
			txnID = id
		} else {
			idleID = id
		}
	}
	eventually(t, 10*time.Second, "the idle producer was not expired", func() bool {
		_, ok := describedProducers(t, plaintext(b.Addr()), topic)[idleID]
		return !ok
	})
	if p, ok := describedProducers(t, plaintext(b.Addr()), topic)[txnID]; !ok || p.CurrentTxnStartOffset < 0 {
		t.Fatalf("the producer with an open transaction was expired: %+v %v", p, ok)
	}
	if err := tx.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("committing after the expiry: %v", err)
	}
	tx.Close()
	idem.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Restarted with expiry checks far apart: what a replay rebuilds must
	// not bring the expired producer back.
	cfg["producer.id.expiration.check.interval.ms"] = "3600000"
	if b, err = exactly.Start(exactly.Options{DataDir: dir, Config: cfg}); err != nil {
		t.Fatal(err)
	}
	if _, ok := describedProducers(t, plaintext(b.Addr()), topic)[idleID]; ok {
		t.Error("the expired producer came back after a restart")
	}
	canary(t, plaintext(b.Addr()), 20)
}
