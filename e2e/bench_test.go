package e2e

import (
	"context"
	"crypto/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkProduceAcksAll measures produce throughput through a real client
// over loopback: 1 KiB incompressible records, acks=all (answered only after
// fsync), 6 partitions, on the real disk. Reported MB/s is record value
// bytes acknowledged per second.
func BenchmarkProduceAcksAll(b *testing.B) {
	benchProduce(b, kgo.AllISRAcks(), 6)
}

// BenchmarkProduceAcks1 is the same with acks=1 (also fsynced before the
// answer on this single node, so it should match acks=all).
func BenchmarkProduceAcks1(b *testing.B) {
	benchProduce(b, kgo.LeaderAck(), 6)
}

func benchProduce(b *testing.B, acks kgo.Acks, partitions int32) {
	br := exactly.NewTestBroker(b, exactly.Options{DataDir: b.TempDir()})
	benchProduceTo(b, br.Addr(), acks, partitions)
}

// benchProduceTo runs the produce benchmark against the broker at addr.
func benchProduceTo(b *testing.B, addr string, acks kgo.Acks, partitions int32) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("bench"),
		kgo.RequiredAcks(acks), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(time.Millisecond), kgo.MaxBufferedRecords(1 << 16),
	}
	if acks != kgo.AllISRAcks() {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), partitions, 1, nil, "bench"); err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 1024)
	rand.Read(value)
	ctx := context.Background()
	errs := make(chan error, 1)
	b.SetBytes(int64(len(value)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// BenchmarkConsumeReadUncommitted and BenchmarkConsumeReadCommitted read the
// same pre-filled topic (1 KiB records, 6 partitions) with a franz-go
// consumer; the difference is the isolation level's cost (LSO bound and
// aborted-transaction lookup).
func BenchmarkConsumeReadUncommitted(b *testing.B) {
	benchConsume(b, kgo.ReadUncommitted())
}

// BenchmarkConsumeReadCommitted: see BenchmarkConsumeReadUncommitted.
func BenchmarkConsumeReadCommitted(b *testing.B) {
	benchConsume(b, kgo.ReadCommitted())
}

func benchConsume(b *testing.B, iso kgo.IsolationLevel) {
	br := exactly.NewTestBroker(b, exactly.Options{DataDir: b.TempDir()})
	const partitions = 6
	prod, err := kgo.NewClient(kgo.SeedBrokers(br.Addr()), kgo.DefaultProduceTopic("cbench"),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerLinger(time.Millisecond), kgo.MaxBufferedRecords(1<<16))
	if err != nil {
		b.Fatal(err)
	}
	defer prod.Close()
	ctx := context.Background()
	if _, err := kadm.NewClient(prod).CreateTopic(ctx, partitions, 1, nil, "cbench"); err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 1024)
	rand.Read(value)
	for i := 0; i < b.N; i++ {
		prod.Produce(ctx, &kgo.Record{Value: value}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(value)))
	b.ResetTimer()
	cons, err := kgo.NewClient(kgo.SeedBrokers(br.Addr()), kgo.ConsumeTopics("cbench"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(iso))
	if err != nil {
		b.Fatal(err)
	}
	defer cons.Close()
	for n := 0; n < b.N; {
		fs := cons.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			b.Fatal(err)
		}
		n += fs.NumRecords()
	}
}

// BenchmarkProduceTransactional is BenchmarkProduceAcksAll (idempotent,
// acks=all) inside transactions committed every 100 ms: the cost of
// exactly-once on the produce path.
func BenchmarkProduceTransactional(b *testing.B) {
	br := exactly.NewTestBroker(b, exactly.Options{DataDir: b.TempDir()})
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(br.Addr()), kgo.DefaultProduceTopic("tbench"),
		kgo.TransactionalID("bench-txn"), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(time.Millisecond), kgo.MaxBufferedRecords(1<<16),
	)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 6, 1, nil, "tbench"); err != nil {
		b.Fatal(err)
	}
	value := make([]byte, 1024)
	rand.Read(value)
	errs := make(chan error, 1)
	b.SetBytes(int64(len(value)))
	b.ResetTimer()
	if err := cl.BeginTransaction(); err != nil {
		b.Fatal(err)
	}
	last := time.Now()
	var txns int
	var flushing, ending time.Duration
	for i := 0; i < b.N; i++ {
		if time.Since(last) >= txnInterval() {
			t0 := time.Now()
			if err := cl.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				b.Fatal(err)
			}
			if err := cl.BeginTransaction(); err != nil {
				b.Fatal(err)
			}
			last = time.Now()
			txns++
			flushing += t1.Sub(t0)
			ending += last.Sub(t1)
		}
		cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if txns > 0 {
		// Where a transaction's overhead goes: draining the producer
		// before EndTxn, and EndTxn itself (the pipeline is idle).
		b.ReportMetric(float64(flushing.Microseconds())/float64(txns)/1000, "flush-ms/txn")
		b.ReportMetric(float64(ending.Microseconds())/float64(txns)/1000, "endtxn-ms/txn")
	}
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// txnInterval is how often BenchmarkProduceTransactional commits: 100 ms,
// or EXACTLY_BENCH_TXN_INTERVAL (a Go duration) to see how the per-commit
// cost amortizes.
func txnInterval() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("EXACTLY_BENCH_TXN_INTERVAL")); err == nil && d > 0 {
		return d
	}
	return 100 * time.Millisecond
}

// BenchmarkProduceWhileCleaning measures acks=all produce throughput (as
// BenchmarkProduceAcksAll, 6 partitions) to one topic while a background
// producer keeps updating 10k keys of a compacted topic (1 MiB segments,
// any dirt worth cleaning), with the log cleaner off and on: the
// difference is what compaction costs producers of other topics.
func BenchmarkProduceWhileCleaning(b *testing.B) {
	for _, cleaner := range []string{"false", "true"} {
		b.Run("cleaner="+cleaner, func(b *testing.B) {
			br := exactly.NewTestBroker(b, exactly.Options{DataDir: b.TempDir(), Config: map[string]string{
				"log.cleaner.enable": cleaner, "log.cleaner.backoff.ms": "100",
			}})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			bg, err := kgo.NewClient(kgo.SeedBrokers(br.Addr()), kgo.DefaultProduceTopic("compacted"),
				kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(1<<12))
			if err != nil {
				b.Fatal(err)
			}
			defer bg.Close()
			if _, err := kadm.NewClient(bg).CreateTopic(ctx, 1, 1, map[string]*string{
				"cleanup.policy": kadm.StringPtr("compact"), "segment.bytes": kadm.StringPtr("1048576"),
				"min.cleanable.dirty.ratio": kadm.StringPtr("0.01"),
			}, "compacted"); err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				value := make([]byte, 512)
				for i := 0; ctx.Err() == nil; i++ {
					bg.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % 10000)), Value: value}, nil)
				}
			}()
			defer func() { cancel(); <-done }()
			benchProduceTo(b, br.Addr(), kgo.AllISRAcks(), 6)
		})
	}
}
