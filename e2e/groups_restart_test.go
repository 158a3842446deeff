package e2e

// Committed offsets are durable: they survive a SIGKILL of the broker, and a
// consumer that comes back resumes exactly at its commit.

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestGroupOffsetsSurviveSIGKILL(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	extra := []string{"--set", "group.initial.rebalance.delay.ms=0"}
	p := startBroker(t, dir, addr, extra...)
	const topic, group, total = "resume", "resumers", 300
	createTopic(t, addr, topic, 3)
	produceN(t, addr, topic, total, 50)

	// Consume about half, committing what was processed.
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.FetchMaxPartitionBytes(2000))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seen := 0
	for seen < total/2 {
		fs := cl.PollRecords(ctx, 40)
		if ctx.Err() != nil {
			t.Fatal("timed out consuming")
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", tp, p, err) })
		seen += fs.NumRecords()
		if err := cl.CommitRecords(ctx, fs.Records()...); err != nil {
			t.Fatal(err)
		}
	}
	committed, err := kadm.NewClient(cl).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	sum := int64(0)
	committed.Each(func(o kadm.OffsetResponse) { sum += o.At })
	if sum != int64(seen) {
		t.Fatalf("committed offsets sum to %d, consumed %d", sum, seen)
	}

	// Meanwhile an admin keeps committing another group's offset; the last
	// acknowledged value must survive the kill.
	adm := kadm.NewClient(cl)
	var acked atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := int64(1); ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var os kadm.Offsets
			os.AddOffset(topic, 0, i, -1)
			cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Second)
			resp, err := adm.CommitOffsets(cctx, "hammer", os)
			ccancel()
			if err != nil || resp.Error() != nil {
				return
			}
			acked.Store(i)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	p.kill()
	close(stop)
	cl.Close()
	<-done
	if acked.Load() == 0 {
		t.Fatal("no hammer commit was acknowledged before the kill")
	}
	t.Logf("%d hammer commits acknowledged before SIGKILL", acked.Load())

	startBroker(t, dir, addr, extra...)
	cl2, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit())
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel2()
	after, err := kadm.NewClient(cl2).FetchOffsets(ctx2, group)
	if err != nil {
		t.Fatal(err)
	}
	committed.Each(func(o kadm.OffsetResponse) {
		if got, _ := after.Lookup(o.Topic, o.Partition); got.At != o.At {
			t.Fatalf("%s/%d committed %d before the kill, %d after", o.Topic, o.Partition, o.At, got.At)
		}
	})
	hammer, err := kadm.NewClient(cl2).FetchOffsets(ctx2, "hammer")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := hammer.Lookup(topic, 0); got.At < acked.Load() || got.At > acked.Load()+1 {
		t.Fatalf("hammer offset %d after the kill; the last acknowledged commit was %d", got.At, acked.Load())
	}

	// The group resumes exactly at its commits: every remaining record
	// once, none of the committed ones again.
	first := map[int32]int64{}
	rest := 0
	for rest < total-seen {
		fs := cl2.PollFetches(ctx2)
		if ctx2.Err() != nil {
			t.Fatalf("timed out resuming: %d of %d", rest, total-seen)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if _, ok := first[r.Partition]; !ok {
				first[r.Partition] = r.Offset
			}
			rest++
		})
	}
	for p, off := range first {
		if want, _ := committed.Lookup(topic, p); off != want.At {
			t.Fatalf("partition %d resumed at %d, committed %d", p, off, want.At)
		}
	}
	if rest != total-seen {
		t.Fatalf("resumed consumer got %d records, want %d", rest, total-seen)
	}
}
