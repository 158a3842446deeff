package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactly/exactly/eos/preset"

	"github.com/twmb/franz-go/pkg/kgo"
)

// producerOpts are the client settings for one produce mode: everything the
// same except what the guarantee needs.
func producerOpts(cfg Config, t Target, mode, topic, txnID string) []kgo.Opt {
	opts := t.clientOpts(kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(cfg.Linger), kgo.MaxBufferedRecords(cfg.MaxBufferedRecords),
	)
	switch mode {
	case AtMostOnce:
		// The project's one meaning of at-most-once (docs/GUARANTEES.md,
		// eos/preset, verify): the leader's ack, no retries, no idempotence.
		opts = append(opts, preset.AtMostOnceProducer()...)
	case AtLeastOnce:
		// Five in flight, as the idempotent producer has: the two differ
		// in deduplication and ordering, not in pipelining.
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(5))
	case Idempotent, IdempotentFlush:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case Transactional:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()), kgo.TransactionalID(txnID))
	}
	return opts
}

// produceRun writes to a fresh topic for cfg.Duration with cfg.Producers
// clients and counts what was acknowledged (or, in transactions, committed).
// The time includes the final flush and commit: records still buffered when
// the duration ends count only once they are acknowledged.
func produceRun(ctx context.Context, cfg Config, t Target, mode, topic, runID string, value []byte) Result {
	if err := createTopic(ctx, cfg, t, topic); err != nil {
		return Result{Err: fmt.Sprintf("creating %s: %v", topic, err)}
	}
	var (
		hist             histogram
		records, commits atomic.Int64
		aborts           atomic.Int64
		wg               sync.WaitGroup
		errMu            sync.Mutex
		firstErr         error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	clients := make([]*kgo.Client, cfg.Producers)
	for i := range clients {
		cl, err := kgo.NewClient(producerOpts(cfg, t, mode, topic, fmt.Sprintf("exactly-bench-%s-%d", runID, i))...)
		if err != nil {
			return Result{Err: err.Error()}
		}
		defer cl.Close()
		clients[i] = cl
	}
	// Metadata and (for transactions) producer ids first, so the clock
	// measures producing rather than client start-up.
	for _, cl := range clients {
		if mode == Transactional {
			if err := cl.BeginTransaction(); err != nil {
				return Result{Err: err.Error()}
			}
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
			return Result{Err: fmt.Sprintf("warming up: %v", err)}
		}
		if mode == Transactional {
			if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
				return Result{Err: fmt.Sprintf("warming up: %v", err)}
			}
		}
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for _, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := produceLoop(ctx, cfg, cl, mode, value, start, deadline, &hist, &records, &commits, &aborts); err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := Result{
		Records: records.Load(), Elapsed: elapsed,
		P50: hist.quantile(0.5), P99: hist.quantile(0.99), P999: hist.quantile(0.999), Max: hist.quantile(1),
		Commits: int(commits.Load()), Aborts: int(aborts.Load()),
	}
	res.Bytes = res.Records * int64(len(value))
	res.MBps = float64(res.Bytes) / elapsed.Seconds() / 1e6
	res.RecordsPerSec = float64(res.Records) / elapsed.Seconds()
	if firstErr != nil {
		res.Err = firstErr.Error()
	}
	return res
}

func produceLoop(ctx context.Context, cfg Config, cl *kgo.Client, mode string, value []byte, start, deadline time.Time,
	hist *histogram, records, commits, aborts *atomic.Int64) error {
	var (
		acked   atomic.Int64 // this transaction's (or the run's) acknowledged records
		failed  atomic.Pointer[error]
		sent    int64
		txnFrom = time.Now()
	)
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			failed.CompareAndSwap(nil, &err)
			return
		}
		acked.Add(1)
		hist.record(time.Since(r.Timestamp))
	}
	if mode == Transactional {
		if err := cl.BeginTransaction(); err != nil {
			return err
		}
	}
	endTxn := func() error {
		if err := cl.Flush(ctx); err != nil {
			return err
		}
		commit := kgo.TryCommit
		if failed.Load() != nil {
			commit = kgo.TryAbort
		}
		if err := cl.EndTransaction(ctx, commit); err != nil {
			return err
		}
		if commit == kgo.TryAbort {
			aborts.Add(1)
			return *failed.Load()
		}
		commits.Add(1)
		records.Add(acked.Swap(0))
		return nil
	}
	for {
		now := time.Now()
		if now.After(deadline) || ctx.Err() != nil {
			break
		}
		if mode == Transactional && now.Sub(txnFrom) >= cfg.TxnInterval {
			if err := endTxn(); err != nil {
				return err
			}
			if err := cl.BeginTransaction(); err != nil {
				return err
			}
			txnFrom = time.Now()
		}
		if mode == IdempotentFlush && now.Sub(txnFrom) >= cfg.TxnInterval {
			// What a commit makes the client do, without the
			// transaction: drain everything in flight, then refill.
			if err := cl.Flush(ctx); err != nil {
				return err
			}
			txnFrom = time.Now()
		}
		if cfg.Rate > 0 {
			// Pace against the schedule, not the last send, so a stall
			// is caught up rather than lost.
			if due := start.Add(time.Duration(float64(sent) / cfg.Rate * float64(time.Second))); due.After(now) {
				time.Sleep(due.Sub(now))
			}
		}
		cl.Produce(ctx, &kgo.Record{Value: value, Timestamp: time.Now()}, promise)
		sent++
		if p := failed.Load(); p != nil && mode != Transactional {
			return *p
		}
	}
	if mode == Transactional {
		return endTxn()
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	records.Add(acked.Load())
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}
