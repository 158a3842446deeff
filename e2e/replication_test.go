package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ackLedger records every acknowledged record of a producer that keeps
// writing: value → where it landed.
type ackLedger struct {
	mu    sync.Mutex
	acked map[string]producedAt
	fails int
}

// produceUntil produces numbered values (idempotent, acks=all) until stop
// is closed, recording what was acknowledged.
func (l *ackLedger) produceUntil(t *testing.T, cl *kgo.Client, topic string, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for i := 0; ; i++ {
		select {
		case <-stop:
			wg.Wait()
			return
		default:
		}
		v := fmt.Sprintf("v%07d", i)
		wg.Add(1)
		cl.Produce(context.Background(), &kgo.Record{Topic: topic, Value: []byte(v)}, func(r *kgo.Record, err error) {
			defer wg.Done()
			l.mu.Lock()
			defer l.mu.Unlock()
			if err != nil {
				l.fails++
				return
			}
			l.acked[v] = producedAt{r.Partition, r.Offset}
		})
		if i%200 == 199 {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// replicatedLeaders waits (up to limit) until a node's Metadata names a
// leader for each partition of topic, and returns them.
func replicatedLeaders(t *testing.T, probes []*kgo.Client, topic string, partitions int, limit time.Duration) []int32 {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		for _, cl := range probes {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			v, err := metadataOf(ctx, cl)
			cancel()
			if tv, ok := v.topics[topic]; err == nil && ok && len(tv.leaders) == partitions && !slices.ContainsFunc(tv.leaders, func(l int32) bool { return l < 0 }) {
				return tv.leaders
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader for every partition of %s within %v", topic, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReplicatedAcksSurviveSIGKILL is replication's durability promise
// with real processes: an idempotent acks=all producer writes to a topic
// of replication factor 3 (min.insync.replicas 2) while the leader of a
// partition is SIGKILLed five times, then while all three nodes are
// SIGKILLed together. Every acknowledged record must read back once, at
// the offset it was acknowledged at, and every partition's offsets must be
// contiguous.
func TestReplicatedAcksSurviveSIGKILL(t *testing.T) {
	testenv.SkipShort(t, "subprocess test of a three-node cluster")
	t.Parallel() // owns its nodes
	nodes, probes := startServingCluster(t,
		fmt.Sprintf("controller.quorum.election.timeout.ms=%d", clusterElectionTimeout.Milliseconds()),
		"broker.session.timeout.ms=3000", "broker.heartbeat.interval.ms=500")
	const topic, partitions = "replicated", 3
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := kadm.NewClient(probes[0]).CreateTopic(ctx, partitions, 3, map[string]*string{"min.insync.replicas": kadm.StringPtr("2")}, topic); err != nil {
		t.Fatal(err)
	}
	replicatedLeaders(t, probes, topic, partitions, time.Minute)

	var seeds []string
	for _, n := range nodes {
		seeds = append(seeds, n.addr)
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.RecordRetries(1<<30),
		kgo.RecordDeliveryTimeout(4*time.Minute), kgo.MaxBufferedRecords(2000))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	ledger := &ackLedger{acked: map[string]producedAt{}}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		ledger.produceUntil(t, producer, topic, stop)
	}()
	acks := func() int {
		ledger.mu.Lock()
		defer ledger.mu.Unlock()
		return len(ledger.acked)
	}
	// waitProgress waits until the producer got more acknowledgements
	// than before: the cluster serves again.
	waitProgress := func(what string) {
		t.Helper()
		before := acks()
		deadline := time.Now().Add(2 * time.Minute)
		for acks() < before+1000 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no progress in two minutes (%d acknowledged)", what, acks())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitProgress("before any kill")
	for round := range 5 {
		leaders := replicatedLeaders(t, probes, topic, partitions, 2*time.Minute)
		victim := nodes[leaders[round%partitions]-1]
		t.Logf("round %d: SIGKILL of node %d, leader of partition %d (%d acknowledged)", round, victim.id, round%partitions, acks())
		victim.p.kill()
		waitProgress(fmt.Sprintf("round %d, node %d down", round, victim.id))
		startClusterNode(t, victim)
		waitProgress(fmt.Sprintf("round %d, node %d back", round, victim.id))
	}
	t.Logf("SIGKILL of all three nodes (%d acknowledged)", acks())
	for _, n := range nodes {
		n.p.kill()
	}
	for _, n := range nodes {
		startClusterNode(t, n)
	}
	waitProgress("after all three were killed")
	close(stop)
	<-done
	if err := producer.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	ledger.mu.Lock()
	acked := ledger.acked
	fails := ledger.fails
	ledger.mu.Unlock()
	t.Logf("%d records acknowledged, %d failed", len(acked), fails)
	consumer, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	seen := map[string]producedAt{}
	next := map[int32]int64{}
	found, fetchErrors := 0, 0
	deadline := time.Now().Add(2 * time.Minute)
	for found < len(acked) && time.Now().Before(deadline) {
		fctx, fcancel := context.WithTimeout(ctx, 5*time.Second)
		fs := consumer.PollFetches(fctx)
		fcancel()
		for _, fe := range fs.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) && fetchErrors < 20 {
				fetchErrors++
				t.Logf("fetch %s-%d: %v", fe.Topic, fe.Partition, fe.Err)
			}
		}
		fs.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			if prev, dup := seen[v]; dup {
				t.Errorf("%s read twice: at %d@%d and %d@%d", v, prev.partition, prev.offset, r.Partition, r.Offset)
			}
			seen[v] = producedAt{r.Partition, r.Offset}
			if want, ok := next[r.Partition]; ok && r.Offset != want {
				t.Errorf("partition %d: offset %d follows %d", r.Partition, r.Offset, want-1)
			}
			next[r.Partition] = r.Offset + 1
			if _, ok := acked[v]; ok {
				found++
			}
		})
	}
	t.Logf("read %d records, %d of them acknowledged", len(seen), found)
	missing := 0
	for v, at := range acked {
		got, ok := seen[v]
		if !ok {
			if missing++; missing > 20 {
				continue
			}
		}
		switch {
		case !ok:
			t.Errorf("acknowledged %s (partition %d offset %d) is missing", v, at.partition, at.offset)
		case got != at:
			t.Errorf("acknowledged %s at %d@%d reads back at %d@%d", v, at.partition, at.offset, got.partition, got.offset)
		}
	}
	if missing > 0 {
		t.Errorf("%d acknowledged records missing in all", missing)
	}
}
