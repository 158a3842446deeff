package verify

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// groupClient is what the pipeline needs from a plain client or a
// GroupTransactSession.
type groupClient interface {
	PollRecords(ctx context.Context, max int) kgo.Fetches
	Produce(ctx context.Context, r *kgo.Record, promise func(*kgo.Record, error))
	Close()
}

// committer is how a pipeline claims the input it processes: one
// implementation per commit mode (ConsumerProfile.Commit), chosen once when
// the pipeline starts.
type committer interface {
	// claim runs after a poll, before processing; false drops the batch.
	claim(ctx context.Context, b *batch) (bool, error)
	// settle runs once every output of the batch has been handed to the
	// client; it waits for them as its mode needs.
	settle(ctx context.Context, b *batch) error
}

// pipeline is one consume-process-produce worker instance.
type pipeline struct {
	spec WorkerSpec
	c    *control
	rec  *Recorder
	cnt  *counters
	cl   groupClient
	raw  *kgo.Client
	// release lets a rebalance held back since the last poll go ahead
	// (a no-op for the transactional session, which aborts instead).
	release func()
	commit  committer
	// n numbers the outputs, txn the transactions.
	n, txn int64
}

// batch is one poll's records on their way through the pipeline.
type batch struct {
	records []*kgo.Record
	// txn is the transaction the outputs are written in (0: none).
	txn    int64
	outs   []string
	wg     sync.WaitGroup
	mu     sync.Mutex
	failed error
}

// wait waits until every output written so far is acknowledged or failed.
func (b *batch) wait() { b.wg.Wait() }

// err is the first output write that failed.
func (b *batch) err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failed
}

func (b *batch) fail(err error) {
	b.mu.Lock()
	if b.failed == nil {
		b.failed = err
	}
	b.mu.Unlock()
}

// commits are the next offsets the batch's records claim, as recorded in
// the history.
func (b *batch) commits() map[string]map[int32]int64 {
	m := map[string]map[int32]int64{}
	for _, r := range b.records {
		if m[r.Topic] == nil {
			m[r.Topic] = map[int32]int64{}
		}
		if r.Offset+1 > m[r.Topic][r.Partition] {
			m[r.Topic][r.Partition] = r.Offset + 1
		}
	}
	return m
}

func runPipeline(ctx context.Context, spec WorkerSpec, c *control, rec *Recorder, cnt *counters) error {
	p := &pipeline{spec: spec, c: c, rec: rec, cnt: cnt}
	if err := p.open(p.options()); err != nil {
		return err
	}
	defer p.cl.Close()
	// Close waits for a blocked rebalance: let it go first.
	defer p.release()
	if spec.Profile.Producer.Transactional {
		// Fence the previous instance of this slot now, so its open
		// transaction (and the offsets pending in it) is aborted before
		// this instance asks for stable offsets.
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, _, err := p.raw.ProducerID(ictx)
		cancel()
		if err != nil {
			return fmt.Errorf("initializing transactional id %s: %w", spec.TransactionalID, err)
		}
	}

	for !c.stop.Load() && ctx.Err() == nil {
		p.release() // the previous poll's work is done
		records, err := p.poll(ctx)
		if err != nil {
			return err
		}
		if len(records) == 0 {
			continue
		}
		cnt.polled.Add(int64(len(records)))
		b := &batch{records: records}
		ok, err := p.commit.claim(ctx, b)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		p.process(ctx, b)
		if err := p.commit.settle(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// options are the client options every commit mode shares.
func (p *pipeline) options() []kgo.Opt {
	spec, rec, cp := p.spec, p.rec, p.spec.Profile.Consumer
	parts := func(m map[string][]int32) map[string][]int32 {
		out := map[string][]int32{}
		for t, ps := range m {
			out[t] = append([]int32(nil), ps...)
		}
		return out
	}
	session := spec.SessionTimeout
	if session <= 0 {
		session = 6 * time.Second
	}
	opts := append(clientOpts(spec), producerOpts(spec.Profile.Producer, spec)...)
	opts = append(opts,
		kgo.ConsumerGroup(spec.Group),
		kgo.ConsumeTopics(spec.InTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(session),
		kgo.HeartbeatInterval(min(session/6, time.Second)),
		kgo.RebalanceTimeout(10*time.Second),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			rec.Record(Event{Type: EvAssign, Parts: parts(m)})
		}),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			rec.Record(Event{Type: EvRevoke, Parts: parts(m)})
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			rec.Record(Event{Type: EvLost, Parts: parts(m)})
		}),
	)
	if spec.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(spec.InstanceID))
	}
	if cp.ReadCommitted {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	if cp.GroupProtocol == "consumer" {
		// KIP-848: the broker assigns (kgo's cooperative-sticky default
		// balancer is an allowed client-side fallback).
		opts = append(opts, kgo.ServerSideBalancer())
	}
	return opts
}

// open makes the client and picks the committer: the one place the
// pipeline looks at its commit mode.
func (p *pipeline) open(opts []kgo.Opt) error {
	cp := p.spec.Profile.Consumer
	if cp.Commit == CommitTxn {
		s, err := kgo.NewGroupTransactSession(append(opts, kgo.DisableAutoCommit())...)
		if err != nil {
			return err
		}
		p.cl, p.raw, p.release = s, s.Client(), func() {}
		p.commit = commitInTxn{p: p, sess: s}
		return nil
	}

	var c committer
	switch cp.Commit {
	case CommitBefore:
		c = commitBefore{p}
	case CommitAfter:
		c = commitAfter{p}
	case CommitAuto:
		c = commitAuto{p}
	case CommitNone:
		c = commitNone{p}
	default:
		return fmt.Errorf("unknown commit mode %q", cp.Commit)
	}
	if p.spec.Profile.Producer.Transactional {
		c = ownTransaction{p: p, inner: c}
	}
	if cp.Commit == CommitAuto {
		opts = append(opts, kgo.AutoCommitInterval(time.Duration(max(cp.AutoCommitIntervalMs, 1))*time.Millisecond))
	} else {
		opts = append(opts, kgo.DisableAutoCommit())
	}
	// Rebalance only between one poll's work and the next poll, as the
	// Java consumer does: a commit then carries the generation its
	// records were polled in, instead of one the client joined in the
	// background meanwhile (which could hand the partition away and back
	// and let a stale batch be committed and reprocessed). The
	// transactional session aborts on a rebalance instead.
	opts = append(opts, kgo.BlockRebalanceOnPoll())
	k, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	p.cl, p.raw, p.release, p.commit = k, k, k.AllowRebalance, c
	return nil
}

// poll returns the next records, recording what each partition returned.
func (p *pipeline) poll(ctx context.Context) ([]*kgo.Record, error) {
	cp := p.spec.Profile.Consumer
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	fs := p.cl.PollRecords(pctx, max(cp.MaxPollRecords, 1))
	cancel()
	var fatal error
	fs.EachError(func(_ string, _ int32, err error) {
		if isFenced(err) {
			fatal = ErrFenced
		}
	})
	if fatal != nil {
		return nil, fatal
	}
	var records []*kgo.Record
	fs.EachPartition(func(fp kgo.FetchTopicPartition) {
		if len(fp.Records) == 0 {
			return
		}
		e := Event{Type: EvPoll, Topic: fp.Topic, Partition: fp.Partition, ReadCommitted: cp.ReadCommitted}
		for _, r := range fp.Records {
			e.Offsets = append(e.Offsets, r.Offset)
			e.Values = append(e.Values, string(r.Value))
			records = append(records, r)
		}
		p.rec.Record(e)
	})
	return records, nil
}

// process writes one output record per input, to the same partition, in
// the batch's transaction, without waiting for acknowledgements.
func (p *pipeline) process(ctx context.Context, b *batch) {
	spec := p.spec
	for _, r := range b.records {
		v := OutputValue(string(r.Value), spec.Proc, p.n)
		p.n++
		b.outs = append(b.outs, v)
		b.wg.Add(1)
		part := r.Partition
		p.cl.Produce(ctx, &kgo.Record{Topic: spec.OutTopic, Partition: part, Value: []byte(v)}, func(r *kgo.Record, err error) {
			defer b.wg.Done()
			if err != nil {
				b.fail(err)
				p.rec.Record(Event{Type: EvFail, Topic: spec.OutTopic, Partition: part, Value: v, Txn: b.txn, Error: err.Error()})
				return
			}
			p.cnt.produced.Add(1)
			off := r.Offset
			if spec.Profile.Producer.Acks == "0" {
				off = -1
			}
			p.rec.Record(Event{Type: EvAck, Topic: spec.OutTopic, Partition: part, Offset: off, Value: v, Txn: b.txn})
		})
	}
}

// commitOffsets commits the batch's offsets outside any transaction and
// records the attempt.
func (p *pipeline) commitOffsets(ctx context.Context, b *batch) error {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err := p.raw.CommitRecords(cctx, b.records...)
	cancel()
	e := Event{Type: EvCommit, Commits: b.commits(), OK: err == nil}
	if err != nil {
		e.Error = err.Error()
	} else {
		p.cnt.commits.Add(1)
	}
	p.rec.Record(e)
	return err
}

// commitBefore claims a batch before processing it: at most once, since a
// crash after the commit skips the batch.
type commitBefore struct{ p *pipeline }

func (s commitBefore) claim(ctx context.Context, b *batch) (bool, error) {
	s.p.c.at(PhaseBeforeCommit)
	if err := s.p.commitOffsets(ctx, b); err != nil {
		return false, nil // at most once: a batch we could not claim is dropped
	}
	s.p.c.at(PhaseAfterCommit)
	return true, nil
}

func (s commitBefore) settle(_ context.Context, b *batch) error {
	b.wait()
	return nil
}

// commitAfter claims a batch once every output is acknowledged: at least
// once, since a crash before the commit reprocesses the batch.
type commitAfter struct{ p *pipeline }

func (commitAfter) claim(context.Context, *batch) (bool, error) { return true, nil }

func (s commitAfter) settle(ctx context.Context, b *batch) error {
	b.wait()
	if failed := b.err(); failed != nil {
		if isFenced(failed) {
			return ErrFenced
		}
		// At least once: never commit past a record whose output may be
		// missing; a restart reprocesses it.
		return fmt.Errorf("output write failed, restarting to reprocess: %w", failed)
	}
	s.p.c.at(PhaseBeforeCommit)
	if err := s.p.commitOffsets(ctx, b); err != nil && isFenced(err) {
		return ErrFenced
	}
	s.p.c.at(PhaseAfterCommit)
	return nil
}

// commitAuto leaves commits to the client's background committer, which
// may claim a batch at any moment: crashes are offered on both sides.
type commitAuto struct{ p *pipeline }

func (s commitAuto) claim(context.Context, *batch) (bool, error) {
	s.p.c.at(PhaseAfterCommit) // the client may already have committed
	return true, nil
}

func (s commitAuto) settle(_ context.Context, b *batch) error {
	b.wait()
	s.p.c.at(PhaseBeforeCommit)
	return nil
}

// commitNone never claims anything.
type commitNone struct{ p *pipeline }

func (commitNone) claim(context.Context, *batch) (bool, error) { return true, nil }

func (s commitNone) settle(_ context.Context, b *batch) error {
	b.wait()
	s.p.c.at("any")
	return nil
}

// ownTransaction wraps each batch's outputs in a producer transaction while
// inner commits the offsets outside it: the output is atomic, the offsets
// are not.
type ownTransaction struct {
	p     *pipeline
	inner committer
}

func (s ownTransaction) claim(ctx context.Context, b *batch) (bool, error) {
	if ok, err := s.inner.claim(ctx, b); !ok || err != nil {
		return ok, err
	}
	s.p.txn++
	b.txn = s.p.txn
	if err := s.p.raw.BeginTransaction(); err != nil {
		return false, err
	}
	return true, nil
}

func (s ownTransaction) settle(ctx context.Context, b *batch) error {
	p := s.p
	b.wait()
	failed := b.err()
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := p.raw.EndTransaction(ectx, kgo.TransactionEndTry(failed == nil))
	cancel()
	switch {
	case err != nil:
		p.rec.Record(Event{Type: EvTxnUnknown, Txn: b.txn, Values: b.outs, Error: err.Error()})
		if isFenced(err) || isFenced(failed) {
			return ErrFenced
		}
		return fmt.Errorf("ending transaction %d: %w", b.txn, err)
	case failed != nil:
		p.cnt.aborts.Add(1)
		p.rec.Record(Event{Type: EvTxnAbort, Txn: b.txn, Values: b.outs})
	default:
		p.rec.Record(Event{Type: EvTxnCommit, Txn: b.txn, Values: b.outs})
	}
	return s.inner.settle(ctx, b)
}

// commitInTxn commits the offsets inside the output transaction
// (GroupTransactSession): exactly once. An aborted transaction rewinds the
// consumer to its committed offsets (EvReset).
type commitInTxn struct {
	p    *pipeline
	sess *kgo.GroupTransactSession
}

func (s commitInTxn) claim(_ context.Context, b *batch) (bool, error) {
	s.p.txn++
	b.txn = s.p.txn
	if err := s.sess.Begin(); err != nil {
		return false, err
	}
	return true, nil
}

func (s commitInTxn) settle(ctx context.Context, b *batch) error {
	p := s.p
	p.c.at(PhaseBeforeCommit)
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	b.wait()
	failed := b.err()
	try := kgo.TryCommit
	if failed != nil {
		try = kgo.TryAbort
	}
	committed, err := s.sess.End(ectx, try)
	cancel()
	if err != nil {
		p.rec.Record(Event{Type: EvTxnUnknown, Txn: b.txn, Values: b.outs, Commits: b.commits(), Error: err.Error()})
		if isFenced(err) || isFenced(failed) {
			return ErrFenced
		}
		return fmt.Errorf("ending transaction %d: %w", b.txn, err)
	}
	if committed {
		p.cnt.commits.Add(1)
		p.rec.Record(Event{Type: EvTxnCommit, Txn: b.txn, Values: b.outs, Commits: b.commits()})
	} else {
		p.cnt.aborts.Add(1)
		p.rec.Record(Event{Type: EvTxnAbort, Txn: b.txn, Values: b.outs})
		p.rec.Record(Event{Type: EvReset})
	}
	p.c.at(PhaseAfterCommit)
	return nil
}
