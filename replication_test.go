package exactly_test

import (
	"context"
	crand "crypto/rand"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// replicatedLayout waits until every running node's Metadata names a
// leader with every replica in sync for each partition of topic, and
// returns the leaders by partition.
func (c *inProcessCluster) replicatedLayout(ctx context.Context, topic string, partitions, inSync int, running ...int) []int32 {
	c.t.Helper()
	var leaders []int32
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok := true
		leaders = make([]int32, partitions)
		for _, i := range running {
			m, err := c.metadataOf(ctx, i)
			if err != nil {
				ok = false
				break
			}
			for _, mt := range m.Topics {
				if mt.Topic == nil || *mt.Topic != topic {
					continue
				}
				if len(mt.Partitions) != partitions {
					ok = false
				}
				for _, mp := range mt.Partitions {
					if mp.ErrorCode != 0 || mp.Leader < 0 || len(mp.ISR) < inSync || mp.LeaderEpoch < 1 ||
						(leaders[mp.Partition] != 0 && leaders[mp.Partition] != mp.Leader) {
						ok = false
						continue
					}
					leaders[mp.Partition] = mp.Leader
				}
			}
		}
		if ok && !slices.Contains(leaders, 0) {
			return leaders
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no leader with %d replicas in sync for every partition of %s (leaders %v)", inSync, topic, leaders)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// produceNumbered produces values from..to-1 (as decimal strings) with an
// idempotent acks=all producer, spreading them over the partitions, and
// returns the acknowledged ones.
func produceNumbered(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, from, to int) []int {
	t.Helper()
	var acked []int
	results := make(chan int, to-from)
	for v := from; v < to; v++ {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: []byte(strconv.Itoa(v))}, func(r *kgo.Record, err error) {
			if err != nil {
				t.Errorf("value %s not acknowledged: %v", r.Value, err)
				results <- -1
				return
			}
			n, _ := strconv.Atoi(string(r.Value))
			results <- n
		})
	}
	for range to - from {
		if v := <-results; v >= 0 {
			acked = append(acked, v)
		}
	}
	return acked
}

// consumeAll reads every record of topic from the start until want values
// were seen (or a minute passed) and returns the values with their
// offsets by partition.
func consumeAll(ctx context.Context, t *testing.T, c *inProcessCluster, seed int, topic string, want int) (map[int]int, map[int32][]int64) {
	t.Helper()
	cl := c.client(seed, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	seen := map[int]int{}
	offsets := map[int32][]int64{}
	total := 0
	deadline := time.Now().Add(time.Minute)
	for total < want && time.Now().Before(deadline) {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		fs := cl.PollFetches(fctx)
		cancel()
		for _, fe := range fs.Errors() {
			if fe.Err != context.DeadlineExceeded {
				t.Logf("fetch %s-%d: %v", fe.Topic, fe.Partition, fe.Err)
			}
		}
		fs.EachRecord(func(r *kgo.Record) {
			n, _ := strconv.Atoi(string(r.Value))
			seen[n]++
			offsets[r.Partition] = append(offsets[r.Partition], r.Offset)
			total++
		})
	}
	return seen, offsets
}

// TestReplicatedPartitionsSurviveLosingTheirLeader is replication's core
// promise on three in-process nodes: with replication factor 3, every
// record an idempotent acks=all producer had acknowledged is there once,
// at contiguous offsets, after the node leading a partition stopped and
// came back, and the producer kept writing meanwhile.
func TestReplicatedPartitionsSurviveLosingTheirLeader(t *testing.T) {
	c := startInProcessCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const topic = "replicated"
	adm := kadm.NewClient(c.client(0))
	resp, err := adm.CreateTopic(ctx, 3, 3, map[string]*string{"min.insync.replicas": kadm.StringPtr("2")}, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	leaders := c.replicatedLayout(ctx, topic, 3, 3, 0, 1, 2)
	t.Logf("leaders by partition: %v", leaders)

	prod := c.client(1, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()), kgo.RecordRetries(1000),
		kgo.RetryTimeout(time.Minute))
	acked := produceNumbered(ctx, t, prod, topic, 0, 300)

	// Stop partition 0's leader (never the producer's seed) while
	// writing, then bring it back.
	victim := int(leaders[0]) - 1
	if victim == 1 {
		victim = int(leaders[1]) - 1
	}
	done := make(chan []int)
	go func() { done <- produceNumbered(ctx, t, prod, topic, 300, 900) }()
	time.Sleep(50 * time.Millisecond)
	if err := c.nodes[victim].Close(); err != nil {
		t.Fatalf("closing node %d: %v", victim+1, err)
	}
	acked = append(acked, <-done...)
	running := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == victim })
	c.replicatedLayout(ctx, topic, 3, 2, running...)
	acked = append(acked, produceNumbered(ctx, t, prod, topic, 900, 1200)...)
	c.nodes[victim] = c.start(victim, c.voters())
	c.replicatedLayout(ctx, topic, 3, 3, 0, 1, 2)
	acked = append(acked, produceNumbered(ctx, t, prod, topic, 1200, 1500)...)
	if len(acked) != 1500 {
		t.Fatalf("%d of 1500 records acknowledged", len(acked))
	}

	seen, offsets := consumeAll(ctx, t, c, 2, topic, 1500)
	for p, offs := range offsets {
		t.Logf("partition %d: %d records read", p, len(offs))
	}
	for _, v := range acked {
		if seen[v] != 1 {
			t.Errorf("acknowledged value %d read %d times", v, seen[v])
		}
	}
	for p, offs := range offsets {
		for i := 1; i < len(offs); i++ {
			if offs[i] != offs[i-1]+1 {
				t.Errorf("partition %d: offset %d follows %d", p, offs[i], offs[i-1])
				break
			}
		}
	}
}

// TestReplicatedTopicRefusals: a replication factor above the brokers is
// INVALID_REPLICATION_FACTOR, and acks=all with fewer replicas in sync
// than min.insync.replicas is NOT_ENOUGH_REPLICAS.
func TestReplicatedTopicRefusals(t *testing.T) {
	c := newInProcessCluster(t)
	c.conf = map[string]string{"replica.lag.time.max.ms": "1000"}
	c.startAll(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adm := kadm.NewClient(c.client(0))
	resp, _ := adm.CreateTopic(ctx, 1, 4, nil, "too-many")
	if !errors.Is(resp.Err, kerr.InvalidReplicationFactor) {
		t.Fatalf("RF 4 on 3 brokers: %v", resp.Err)
	}
	resp, err := adm.CreateTopic(ctx, 1, 3, map[string]*string{"min.insync.replicas": kadm.StringPtr("3")}, "strict")
	if err != nil || resp.Err != nil {
		t.Fatalf("create: %v %v", err, resp.Err)
	}
	leaders := c.replicatedLayout(ctx, "strict", 1, 3, 0, 1, 2)
	other := (int(leaders[0]) % 3) // a node that is not the leader
	if err := c.nodes[other].Close(); err != nil {
		t.Fatal(err)
	}
	c.nodes[other] = nil
	lead := int(leaders[0]) - 1
	cl := c.client(lead)
	deadline := time.Now().Add(90 * time.Second)
	for {
		req := kmsg.NewPtrProduceRequest()
		req.Acks = -1
		req.TimeoutMillis = 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = "strict"
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = 0
		rp.Records = testenv.Batch("v")
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		pr, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		code := pr.Topics[0].Partitions[0].ErrorCode
		if code == kerr.NotEnoughReplicas.Code {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("produce with one replica out of sync answered %v, want NOT_ENOUGH_REPLICAS", kerr.ErrorForCode(code))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// BenchmarkReplicatedProduce: idempotent acks=all produce of 1 KiB
// incompressible, uncompressed records into a replication factor 3 topic on
// three in-process nodes (the bytes cross loopback three times and are
// written by every node). Zeros under franz-go's default snappy would
// measure compression instead: a few bytes per record on the wire and disk.
func BenchmarkReplicatedProduce(b *testing.B) {
	c := newInProcessCluster(b)
	c.startAll(nil)
	ctx := context.Background()
	adm := kadm.NewClient(c.client(0))
	if resp, err := adm.CreateTopic(ctx, 3, 3, nil, "bench"); err != nil || resp.Err != nil {
		b.Fatal(err, resp.Err)
	}
	c.replicatedLayout(ctx, "bench", 3, 3, 0, 1, 2)
	prod := c.client(0, kgo.DefaultProduceTopic("bench"), kgo.MaxBufferedRecords(1<<14),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	value := make([]byte, 1024)
	crand.Read(value)
	b.SetBytes(1024)
	b.ResetTimer()
	for range b.N {
		prod.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				b.Error(err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		b.Fatal(err)
	}
}

// TestCoordinatorsMoveWithLeadership: on three nodes the coordinators'
// internal topics are replicated, and the coordinators run on their
// leader. Stopping that node moves them: committed offsets are still
// there, a transaction begun before the move commits after it, and
// read_committed readers see exactly its records.
func TestCoordinatorsMoveWithLeadership(t *testing.T) {
	c := startInProcessCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const topic = "moved"
	adm := kadm.NewClient(c.client(0))
	if resp, err := adm.CreateTopic(ctx, 1, 3, nil, topic); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	c.replicatedLayout(ctx, topic, 1, 3, 0, 1, 2)
	var home int32
	for _, name := range []string{"__consumer_offsets", "__transaction_state", "__share_group_state"} {
		l := c.replicatedLayout(ctx, name, 1, 3, 0, 1, 2)[0]
		if home != 0 && l != home {
			// They gather on one node; give them a moment.
			l = c.replicatedLayout(ctx, name, 1, 3, 0, 1, 2)[0]
		}
		home = l
	}
	// transaction.state.log.min.isr and
	// share.coordinator.state.topic.min.isr, both 2 by default.
	cfgs, err := adm.DescribeTopicConfigs(ctx, "__transaction_state", "__share_group_state")
	if err != nil {
		t.Fatal(err)
	}
	for _, rc := range cfgs {
		got := ""
		for _, kv := range rc.Configs {
			if kv.Key == "min.insync.replicas" {
				got = kv.MaybeValue()
			}
		}
		if got != "2" {
			t.Errorf("%s: min.insync.replicas %q, want 2", rc.Name, got)
		}
	}
	seed := (int(home) % 3) // a node other than the coordinators'
	t.Logf("coordinators on node %d; clients seeded at node %d", home, seed+1)
	adm = kadm.NewClient(c.client(seed))

	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: topic, Partition: 0, At: 42, LeaderEpoch: -1})
	if resp, err := adm.CommitOffsets(ctx, "g", offsets); err != nil || resp.Error() != nil {
		t.Fatalf("commit offsets: %v %v", err, resp.Error())
	}

	prod := c.client(seed, kgo.TransactionalID("moving"), kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RetryTimeout(time.Minute))
	produceTxn := func(from int) {
		t.Helper()
		for i := from; i < from+10; i++ {
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Fatalf("produce %d: %v", i, err)
			}
		}
	}
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceTxn(0)
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("first commit: %v", err)
	}
	if err := prod.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	produceTxn(10)

	// The coordinators' node stops with the transaction open.
	if err := c.nodes[home-1].Close(); err != nil {
		t.Fatal(err)
	}
	c.nodes[home-1] = nil
	running := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == int(home-1) })
	moved := home
	for moved == home && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
		moved = c.replicatedLayout(ctx, "__consumer_offsets", 1, 2, running...)[0]
	}
	// franz-go keeps a coordinator it found until an error code says it
	// moved; a node that is gone says nothing. Once the cluster fenced
	// the stopped node, Metadata no longer lists it and the client looks
	// the coordinator up again.
	for ctx.Err() == nil {
		if m, err := c.metadataOf(ctx, running[0]); err == nil && len(m.Brokers) == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	prod.ForceMetadataRefresh()
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("commit after the coordinators moved to node %d: %v", moved, err)
	}

	// A new client: this one caches the stopped node as the group's
	// coordinator and keeps dialing it.
	fetched, err := kadm.NewClient(c.client(seed)).FetchOffsets(ctx, "g")
	if err != nil || fetched.Error() != nil {
		t.Fatalf("fetch offsets after the move: %v %v", err, fetched.Error())
	}
	if o, ok := fetched.Lookup(topic, 0); !ok || o.At != 42 {
		t.Fatalf("committed offset after the move: %+v (found %v), want 42", o, ok)
	}

	cons := c.client(seed, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	seen := map[string]int{}
	for len(seen) < 20 && ctx.Err() == nil {
		cons.PollFetches(ctx).EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++ })
	}
	for i := range 20 {
		if n := seen[strconv.Itoa(i)]; n != 1 {
			t.Errorf("committed value %d read %d times", i, n)
		}
	}
	if len(seen) != 20 {
		t.Errorf("read %d distinct values, want 20", len(seen))
	}
}

// TestReplicaRestartsAfterItsLogStartPassedTheCheckpoint: a replica
// checkpoints every 16 MiB; when DeleteRecords then moves the log start
// past the checkpoint (as the coordinators' compaction of their own
// topics does), a restarted node starts that log over at the checkpoint
// and applies the rest again (it once refused to open the partition).
func TestReplicaRestartsAfterItsLogStartPassedTheCheckpoint(t *testing.T) {
	c := startInProcessCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const topic = "pruned"
	adm := kadm.NewClient(c.client(0))
	if resp, err := adm.CreateTopic(ctx, 1, 3, nil, topic); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	c.replicatedLayout(ctx, topic, 1, 3, 0, 1, 2)
	prod := c.client(1, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchMaxBytes(1<<20))
	value := make([]byte, 900<<10)
	crand.Read(value) // incompressible: each entry is 900 KiB
	produce := func(n int) {
		for range n {
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(40) // past two 16 MiB checkpoints
	deleted, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 38, LeaderEpoch: -1}}})
	if err != nil || deleted.Error() != nil {
		t.Fatalf("delete records: %v %v", err, deleted.Error())
	}
	produce(3)

	for i := range c.nodes {
		if err := c.nodes[i].Close(); err != nil {
			t.Fatal(err)
		}
		c.nodes[i] = c.start(i, c.voters())
		if c.nodes[i] == nil {
			t.FailNow()
		}
		c.replicatedLayout(ctx, topic, 1, 3, 0, 1, 2)
	}
	// With 2 s broker sessions a loaded machine can fence the leader's
	// node for a moment (LEADER_NOT_AVAILABLE): list as a client would.
	starts, err := testenv.ListOffsets(ctx, adm.ListStartOffsets, topic)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := testenv.ListOffsets(ctx, adm.ListEndOffsets, topic)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := starts.Lookup(topic, 0)
	e, _ := ends.Lookup(topic, 0)
	if s.Offset != 38 || e.Offset != 43 {
		t.Fatalf("after every node restarted: log start %d, end %d; want 38 and 43", s.Offset, e.Offset)
	}
}
