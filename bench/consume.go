package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// prefilled is the topic the consume modes read.
type prefilled struct {
	topic string
	// bytes of values in the log, committed and aborted.
	bytes int64
}

// endKey marks the last record of each partition of a prefilled topic: a
// non-transactional record written after every transaction ended, so both
// isolation levels see it and know they have read everything.
const endKey = "exactly-bench-end"

// prefill writes cfg.ConsumeBytes of values in transactions of
// cfg.TxnInterval's worth of records (every cfg.AbortEvery-th aborted; at
// least 20 transactions), then one end record per partition.
func prefill(ctx context.Context, cfg Config, t Target, topic string, value []byte) (*prefilled, error) {
	if err := createTopic(ctx, cfg, t, topic); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(producerOpts(cfg, t, Transactional, topic, topic)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	want := cfg.ConsumeBytes / int64(len(value))
	if want < 1 {
		want = 1
	}
	// At least 20 transactions, so a small topic has aborted ones too.
	perTxn := max(want/20, 1)
	var written int64
	for txn := 0; written < want; txn++ {
		if err := cl.BeginTransaction(); err != nil {
			return nil, err
		}
		from, upto := time.Now(), min(written+perTxn, want)
		for written < upto && time.Since(from) < cfg.TxnInterval {
			cl.Produce(ctx, &kgo.Record{Value: value}, nil)
			written++
		}
		if err := cl.Flush(ctx); err != nil {
			return nil, err
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(cfg.AbortEvery == 0 || txn%cfg.AbortEvery != cfg.AbortEvery-1)); err != nil {
			return nil, err
		}
	}
	end, err := kgo.NewClient(t.clientOpts(kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		return nil, err
	}
	defer end.Close()
	for p := int32(0); p < cfg.Partitions; p++ {
		if err := end.ProduceSync(ctx, &kgo.Record{Key: []byte(endKey), Partition: p}).FirstErr(); err != nil {
			return nil, err
		}
	}
	return &prefilled{topic: topic, bytes: written * int64(len(value))}, nil
}

// consumeRun reads the prefilled topic from the start to every partition's
// end record with a fresh client (no group: the group protocol is not what
// is measured) and times it.
func consumeRun(ctx context.Context, cfg Config, t Target, mode string, p *prefilled) Result {
	if p == nil {
		return Result{Err: "no prefilled topic"}
	}
	iso := kgo.ReadUncommitted()
	if mode == ReadCommitted {
		iso = kgo.ReadCommitted()
	}
	parts := map[int32]kgo.Offset{}
	for i := int32(0); i < cfg.Partitions; i++ {
		parts[i] = kgo.NewOffset().AtStart()
	}
	start := time.Now()
	cl, err := kgo.NewClient(t.clientOpts(kgo.FetchIsolationLevel(iso),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{p.topic: parts}))...)
	if err != nil {
		return Result{Err: err.Error()}
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var delivered int64
	done := map[int32]bool{}
	for len(done) < int(cfg.Partitions) {
		fs := cl.PollFetches(ctx)
		if err := fs.Err(); err != nil {
			return Result{Err: fmt.Sprintf("after %d records: %v", delivered, err)}
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Key) == endKey {
				done[r.Partition] = true
				return
			}
			delivered++
		})
	}
	elapsed := time.Since(start)
	return Result{Records: delivered, Bytes: p.bytes, Elapsed: elapsed,
		MBps: float64(p.bytes) / elapsed.Seconds() / 1e6, RecordsPerSec: float64(delivered) / elapsed.Seconds()}
}
