package ctp

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactly/exactly/eos/preset"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures a Processor. Group, Topics, TransactionalID and
// Transform are required.
type Config struct {
	// Kafka holds client options: at least kgo.SeedBrokers, and anything
	// else the deployment needs (TLS, SASL, logger, session timeout,
	// balancers, kgo.TransactionTimeout). The options that the guarantee
	// rests on (group, topics, transactional id, read_committed, no
	// auto-commit, stable offset fetches, the revoke/lost callbacks) are
	// applied after these and win.
	Kafka []kgo.Opt
	// Group is the consumer group; its committed offsets are the
	// processor's position.
	Group string
	// Topics are the input topics.
	Topics []string
	// TransactionalID identifies this instance's producer: unique among
	// running instances, the same after a restart (see the package doc).
	TransactionalID string
	// Transform maps one input record to the records to produce. An output
	// with an empty Topic goes to OutputTopic. The record passed in is a
	// copy per attempt, so Transform may modify and return it (its Key and
	// Value bytes are shared with the original: do not modify them in
	// place). Returning an error fails the attempt and discards any outputs
	// returned with it; ctx is canceled when the processor stops.
	Transform func(ctx context.Context, r *kgo.Record) ([]*kgo.Record, error)
	// OutputTopic is the topic of outputs that name none.
	OutputTopic string
	// DeadLetterTopic receives records whose every attempt failed. Empty
	// means fail-stop: Run aborts the transaction and returns a
	// *RecordError, so the record is retried when Run is called again.
	DeadLetterTopic string
	// MaxAttempts bounds the Transform calls per record and transaction;
	// default 3.
	MaxAttempts int
	// Backoff is the pause after the first failed attempt, doubled after
	// each further one; default 100ms.
	Backoff time.Duration
	// MaxBackoff caps the pause between attempts; default 5s.
	MaxBackoff time.Duration
	// MaxPollRecords bounds the records of one transaction; default 500.
	// Smaller batches waste less work when a transaction aborts and keep a
	// slow batch inside the transaction timeout.
	MaxPollRecords int
	// RestartBackoff is the pause after an aborted transaction that was not
	// caused by a rebalance, and before a new session after a failed one,
	// so a broker outage is not hammered; default 1s.
	RestartBackoff time.Duration
	// OnError, if set, is told about every error Run recovers from
	// (aborted transactions, fetch errors, restarted sessions), for logs
	// and metrics. It is called from Run's goroutine and must not block.
	OnError func(error)
	// OnRevoked, if set, is called when partitions are revoked or lost
	// (it replaces kgo.OnPartitionsRevoked / OnPartitionsLost in Kafka,
	// which the processor needs for itself). Like those it runs in the
	// client's group goroutine and must not end transactions.
	OnRevoked func(ctx context.Context, cl *kgo.Client, partitions map[string][]int32)
}

// Headers added to a dead-letter record after the input's own headers (any
// input headers with these keys are dropped first, so a record re-driven
// from a dead-letter topic carries only the latest description).
const (
	// HeaderError holds the last attempt's error text.
	HeaderError = "ctp.error"
	// HeaderTopic holds the input record's topic.
	HeaderTopic = "ctp.source.topic"
	// HeaderPartition holds the input record's partition, in decimal.
	HeaderPartition = "ctp.source.partition"
	// HeaderOffset holds the input record's offset, in decimal.
	HeaderOffset = "ctp.source.offset"
	// HeaderTimestamp holds the input record's timestamp in Unix
	// milliseconds (the dead-letter record gets its own, so time-based
	// retention of the dead-letter topic counts from the failure).
	HeaderTimestamp = "ctp.source.timestamp"
	// HeaderGroup holds the consumer group that gave up on the record.
	HeaderGroup = "ctp.group"
	// HeaderAttempts holds the number of Transform attempts, in decimal.
	HeaderAttempts = "ctp.attempts"
)

// ErrFenced is wrapped by Run's error when another producer with the same
// TransactionalID took over: two live instances sharing an id would keep
// aborting each other's work, so the processor stops and leaves the
// decision to the operator. (A transaction that outlives its timeout is
// not fencing: the broker answers TRANSACTION_ABORTABLE under KIP-890, and
// the batch is simply consumed again.)
var ErrFenced = errors.New("ctp: producer fenced by another instance with the same transactional id")

// RecordError is returned by Run when a record failed every attempt and no
// DeadLetterTopic is configured. Its transaction was aborted, so nothing of
// the batch is committed and the record is the next to be processed.
type RecordError struct {
	Topic     string
	Partition int32
	Offset    int64
	Attempts  int
	Err       error
}

// Error describes the record and its last error.
func (e *RecordError) Error() string {
	return fmt.Sprintf("ctp: %s/%d@%d failed %d attempts: %v", e.Topic, e.Partition, e.Offset, e.Attempts, e.Err)
}

// Unwrap returns the last attempt's error.
func (e *RecordError) Unwrap() error { return e.Err }

// Permanent marks a Transform error as one that no retry can fix (a record
// that does not parse), so the record goes to the dead-letter topic without
// the remaining attempts and their backoff.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Stats counts a Processor's work. Record, output and dead-letter counts
// include only committed transactions, so they are what readers see.
type Stats struct {
	Committed    int64 // transactions committed
	Aborted      int64 // transactions aborted (rebalance, produce error, shutdown)
	Records      int64 // input records committed (transformed or dead-lettered)
	Outputs      int64 // output records committed
	DeadLettered int64 // input records committed to the dead-letter topic
	Retries      int64 // failed Transform attempts that were tried again
	Restarts     int64 // sessions replaced after an error
}

// Processor runs Config's loop. Create it with New; Run it once at a time.
type Processor struct {
	cfg Config

	running atomic.Bool
	stats   struct {
		committed, aborted, records, outputs, dead, retries, restarts atomic.Int64
	}

	// mu guards revoked and undeliverable, which the client's group
	// goroutine and produce promises touch.
	mu sync.Mutex
	// revoked is closed when the group takes partitions away during the
	// current transaction (armed again after End, as the session itself
	// does): the session will abort, so the batch stops early instead of
	// transforming records whose output is doomed.
	revoked     chan struct{}
	revokedDone bool
	// undeliverable remembers inputs whose outputs were rejected for their
	// content, so the next attempt at the batch dead-letters them instead
	// of aborting again forever.
	undeliverable map[srcKey]rejection

	// crashBeforeEnd, set by tests, is asked before each End with the
	// transaction's number; true closes the client without ending the
	// transaction and makes Run return errCrashed, as a killed process.
	crashBeforeEnd func(txn int64) bool
	txns           int64
}

type srcKey struct {
	topic     string
	partition int32
	offset    int64
}

// rejection is why an input's output was refused. The broker refuses a
// whole produce batch, which may hold other inputs' outputs too, so a
// refusal blames its input only when no other input failed with it or
// when the input's outputs were produced alone (certain). Otherwise every
// input that failed together is a suspect, and on the next attempt each
// suspect's outputs are produced in isolation to find the culprit.
type rejection struct {
	err     error
	certain bool
}

var errCrashed = errors.New("ctp: simulated crash")

// errRebalanced stops a batch whose partitions were revoked.
var errRebalanced = errors.New("ctp: partitions revoked during the transaction")

// undeliverableLimit bounds the memory of rejected outputs; entries are
// dropped when used, so only inputs that moved to another instance linger.
const undeliverableLimit = 10000

// endTimeout bounds ending a transaction, also during shutdown: End with a
// canceled context leaves the client in an unknown state.
const endTimeout = 30 * time.Second

// New validates cfg and fills its defaults. It does not connect.
func New(cfg Config) (*Processor, error) {
	switch {
	case cfg.Group == "":
		return nil, errors.New("ctp: Group is required")
	case len(cfg.Topics) == 0:
		return nil, errors.New("ctp: Topics is required")
	case cfg.TransactionalID == "":
		return nil, errors.New("ctp: TransactionalID is required")
	case cfg.Transform == nil:
		return nil, errors.New("ctp: Transform is required")
	case cfg.DeadLetterTopic != "" && slices.Contains(cfg.Topics, cfg.DeadLetterTopic):
		// Dead letters would be consumed and fail again, forever.
		return nil, errors.New("ctp: DeadLetterTopic must not be an input topic")
	case cfg.MaxAttempts < 0 || cfg.Backoff < 0 || cfg.MaxBackoff < 0 || cfg.MaxPollRecords < 0 || cfg.RestartBackoff < 0:
		return nil, errors.New("ctp: negative MaxAttempts, Backoff, MaxBackoff, MaxPollRecords or RestartBackoff")
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.MaxPollRecords == 0 {
		cfg.MaxPollRecords = 500
	}
	if cfg.RestartBackoff == 0 {
		cfg.RestartBackoff = time.Second
	}
	cfg.Topics = slices.Clone(cfg.Topics)
	return &Processor{cfg: cfg, revoked: make(chan struct{}), undeliverable: map[srcKey]rejection{}}, nil
}

// Stats returns the counters so far; safe to call concurrently with Run.
func (p *Processor) Stats() Stats {
	return Stats{
		Committed:    p.stats.committed.Load(),
		Aborted:      p.stats.aborted.Load(),
		Records:      p.stats.records.Load(),
		Outputs:      p.stats.outputs.Load(),
		DeadLettered: p.stats.dead.Load(),
		Retries:      p.stats.retries.Load(),
		Restarts:     p.stats.restarts.Load(),
	}
}

// Run processes until ctx is canceled, then ends the transaction in
// progress (committing it if every record of its batch was already
// handled, aborting it otherwise), leaves the group and returns ctx's
// error. It recovers from broker and network errors by itself and returns
// early only for a configuration error, ErrFenced, or a *RecordError when
// no DeadLetterTopic is set.
func (p *Processor) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("ctp: Run is already running")
	}
	defer p.running.Store(false)
	for {
		err := p.session(ctx)
		if ctx.Err() != nil {
			if err != nil && !errors.Is(err, ctx.Err()) {
				p.report(fmt.Errorf("ctp: stopping: %w", err))
			}
			return ctx.Err()
		}
		var re *RecordError
		var ce configError
		switch {
		case errors.Is(err, ErrFenced), errors.Is(err, errCrashed), errors.As(err, &re):
			return err
		case errors.As(err, &ce):
			return ce.err
		}
		p.stats.restarts.Add(1)
		p.report(fmt.Errorf("ctp: restarting session: %w", err))
		if sleep(ctx, p.cfg.RestartBackoff, nil) != nil {
			return ctx.Err()
		}
	}
}

// configError is an error no restart fixes.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }

func (p *Processor) report(err error) {
	if p.cfg.OnError != nil {
		p.cfg.OnError(err)
	}
}

// session runs one GroupTransactSession until it fails or ctx ends.
func (p *Processor) session(ctx context.Context) error {
	opts := append(preset.ExactlyOnceProducer(p.cfg.TransactionalID), p.cfg.Kafka...)
	opts = append(opts, preset.ExactlyOnceConsumer(p.cfg.Group)...)
	opts = append(opts,
		kgo.TransactionalID(p.cfg.TransactionalID),
		kgo.ConsumeTopics(p.cfg.Topics...),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			// A cooperative rebalance that takes nothing from us does not
			// doom the transaction; the session ignores it as well.
			if len(m) > 0 {
				p.markRevoked()
			}
			if p.cfg.OnRevoked != nil {
				p.cfg.OnRevoked(ctx, cl, m)
			}
		}),
		kgo.OnPartitionsLost(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
			p.markRevoked()
			if p.cfg.OnRevoked != nil {
				p.cfg.OnRevoked(ctx, cl, m)
			}
		}),
	)
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		return configError{fmt.Errorf("ctp: %w", err)}
	}
	crashed := false
	defer func() {
		if !crashed {
			sess.Close()
		}
	}()
	cl := sess.Client()

	// Initialise the producer id before anything is consumed: this fences
	// a predecessor with the same transactional id and aborts its open
	// transaction now, instead of letting its pending offsets make this
	// instance's offset fetch wait for the transaction timeout.
	ictx, cancel := context.WithTimeout(ctx, endTimeout)
	_, _, err = cl.ProducerID(ictx)
	cancel()
	if err != nil {
		return classify(fmt.Errorf("ctp: initializing transactional id %q: %w", p.cfg.TransactionalID, err))
	}

	for {
		fs := sess.PollRecords(ctx, p.cfg.MaxPollRecords)
		if ctx.Err() != nil {
			// Nothing began yet: the polled records are consumed again
			// by whoever owns their partitions next.
			return ctx.Err()
		}
		for _, fe := range fs.Errors() {
			if errors.Is(fe.Err, kgo.ErrClientClosed) {
				return fe.Err
			}
			if err := classify(fe.Err); errors.Is(err, ErrFenced) {
				return err
			}
			p.report(fmt.Errorf("ctp: fetching %s/%d: %w", fe.Topic, fe.Partition, fe.Err))
		}
		recs := fs.Records()
		if len(recs) == 0 {
			if len(fs.Errors()) > 0 && sleep(ctx, p.cfg.RestartBackoff, nil) != nil {
				return ctx.Err() // a persistent fetch error must not spin
			}
			continue
		}
		if err := p.transact(ctx, sess, recs); err != nil {
			if errors.Is(err, errCrashed) {
				crashed = true
			}
			return err
		}
	}
}

// classify wraps fencing errors with ErrFenced: a newer producer with our
// transactional id, or a newer group member with our static instance id.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch),
		errors.Is(err, kerr.FencedInstanceID):
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

// recordFault reports whether a produce error is caused by the output
// record's own content, so retrying the same output can never succeed.
func recordFault(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage) ||
		errors.Is(err, kerr.InvalidTimestamp)
}

// tally is one transaction's work, added to the stats only if it commits.
type tally struct {
	records, outputs, dead int64
}

// transact handles one polled batch in one transaction. It returns nil
// when the transaction ended (committed or aborted) and the session can go
// on, and an error when the session must stop.
func (p *Processor) transact(ctx context.Context, sess *kgo.GroupTransactSession, recs []*kgo.Record) error {
	if err := sess.Begin(); err != nil {
		return fmt.Errorf("ctp: beginning transaction: %w", err)
	}
	p.txns++

	// Produce promises run on the client's goroutines.
	var (
		pmu      sync.Mutex
		perr     error
		rejected = map[srcKey]error{} // inputs whose outputs were refused for their content
		isolated = map[srcKey]bool{}  // suspects whose outputs were produced alone
	)
	promise := func(src srcKey, isOutput bool) func(*kgo.Record, error) {
		return func(_ *kgo.Record, err error) {
			if err == nil {
				return
			}
			pmu.Lock()
			defer pmu.Unlock()
			if perr == nil {
				perr = err
			}
			if isOutput && recordFault(err) {
				rejected[src] = err
			}
		}
	}
	wasRejected := func(src srcKey) bool {
		pmu.Lock()
		defer pmu.Unlock()
		_, ok := rejected[src]
		return ok
	}

	// Records are produced with ctx, so a shutdown fails those not yet
	// sent (and the transaction aborts) instead of waiting on a broker that
	// may be gone; a shutdown after the last record is handled and sent
	// still commits.
	var (
		t       tally
		abandon error // why the batch cannot commit
	)
	for _, r := range recs {
		if err := p.checkRevoked(ctx); err != nil {
			abandon = err
			break
		}
		src := srcKey{r.Topic, r.Partition, r.Offset}
		outs, dead, suspect, err := p.process(ctx, r)
		if err != nil {
			abandon = err
			break
		}
		if suspect {
			// Flushing around the suspect's outputs puts them in produce
			// requests of their own.
			if err := sess.Client().Flush(ctx); err != nil {
				abandon = err
				break
			}
			isolated[src] = true
		}
		for _, o := range outs {
			sess.Produce(ctx, o, promise(src, true))
		}
		if suspect {
			if err := sess.Client().Flush(ctx); err != nil {
				abandon = err
				break
			}
			if wasRejected(src) {
				abandon = fmt.Errorf("ctp: producing: output of %s/%d@%d rejected", src.topic, src.partition, src.offset)
				break
			}
		}
		if dead != nil {
			sess.Produce(ctx, dead, promise(src, false))
			t.dead++
		}
		t.records++
		t.outputs += int64(len(outs))
	}

	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
	defer cancel()
	if abandon == nil {
		// Every promise must have run before deciding: End(TryCommit) would
		// commit around a record that failed without failing the producer.
		if err := sess.Client().Flush(ectx); err != nil {
			return fmt.Errorf("ctp: flushing: %w", err)
		}
		pmu.Lock()
		if perr != nil {
			abandon = fmt.Errorf("ctp: producing: %w", perr)
		}
		pmu.Unlock()
	}
	if p.crashBeforeEnd != nil && p.crashBeforeEnd(p.txns) {
		sess.Client().Close()
		return errCrashed
	}

	try := kgo.TryCommit
	if abandon != nil {
		try = kgo.TryAbort
	}
	committed, err := sess.End(ectx, try)
	p.rearmRevoked()
	// End flushed or aborted every buffered record, so every promise ran.
	pmu.Lock()
	for src, rerr := range rejected {
		p.rememberUndeliverable(src, rejection{rerr, len(rejected) == 1 || isolated[src]})
	}
	pmu.Unlock()
	if err != nil {
		// No End error is retryable (kgo's contract): start a new session.
		return classify(fmt.Errorf("ctp: ending transaction: %w", err))
	}
	if committed {
		p.stats.committed.Add(1)
		p.stats.records.Add(t.records)
		p.stats.outputs.Add(t.outputs)
		p.stats.dead.Add(t.dead)
		return nil
	}
	p.stats.aborted.Add(1)
	var re *RecordError
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.As(abandon, &re):
		return abandon
	case abandon == nil:
		// The session refused to commit: the group rebalanced, or the
		// offset commit failed. The batch is polled again at once.
		p.report(errors.New("ctp: transaction aborted by the session: the group rebalanced, the offset commit was refused or the transaction timed out"))
		return nil
	case errors.Is(abandon, errRebalanced):
		p.report(fmt.Errorf("ctp: transaction aborted: %w", abandon))
		return nil
	}
	if err := classify(abandon); errors.Is(err, ErrFenced) {
		return err
	}
	p.report(fmt.Errorf("ctp: transaction aborted: %w", abandon))
	if sleep(ctx, p.cfg.RestartBackoff, nil) != nil {
		return ctx.Err()
	}
	return nil
}

// process runs Transform on r with retries and returns either its routed
// outputs or a dead-letter record; suspect asks for the outputs to be
// produced in isolation (see rejection); an error means the batch must
// abort.
func (p *Processor) process(ctx context.Context, r *kgo.Record) (outs []*kgo.Record, dead *kgo.Record, suspect bool, err error) {
	rej, known := p.takeUndeliverable(srcKey{r.Topic, r.Partition, r.Offset})
	if known && rej.certain {
		cause := fmt.Errorf("ctp: output rejected: %w", rej.err)
		if p.cfg.DeadLetterTopic == "" {
			return nil, nil, false, &RecordError{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Attempts: 1, Err: cause}
		}
		return nil, p.deadLetter(r, cause, 1), false, nil
	}
	var last error
	attempt := 1
	for ; ; attempt++ {
		outs, err := p.attempt(ctx, r)
		if err == nil {
			return outs, nil, known, nil
		}
		if ctx.Err() != nil {
			// Stopping is not the record's fault.
			return nil, nil, false, ctx.Err()
		}
		last = err
		if IsPermanent(err) || attempt >= p.cfg.MaxAttempts {
			break
		}
		p.stats.retries.Add(1)
		if err := sleep(ctx, p.backoff(attempt), p.revokedCh()); err != nil {
			return nil, nil, false, err
		}
	}
	if p.cfg.DeadLetterTopic == "" {
		return nil, nil, false, &RecordError{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Attempts: attempt, Err: last}
	}
	return nil, p.deadLetter(r, last, attempt), false, nil
}

// attempt calls Transform once on a copy of r and routes its outputs.
func (p *Processor) attempt(ctx context.Context, r *kgo.Record) (outs []*kgo.Record, err error) {
	in := *r
	in.Headers = slices.Clone(r.Headers)
	func() {
		defer func() {
			if v := recover(); v != nil {
				err = Permanent(fmt.Errorf("ctp: transform panicked: %v\n%s", v, debug.Stack()))
			}
		}()
		outs, err = p.cfg.Transform(ctx, &in)
	}()
	if err != nil {
		return nil, err
	}
	routed := outs[:0:0]
	for _, o := range outs {
		if o == nil {
			continue
		}
		if o.Topic == "" {
			o.Topic = p.cfg.OutputTopic
		}
		if o.Topic == "" {
			return nil, Permanent(errors.New("ctp: output without a topic and no OutputTopic"))
		}
		routed = append(routed, o)
	}
	return routed, nil
}

func (p *Processor) backoff(failed int) time.Duration {
	d := p.cfg.Backoff
	for i := 1; i < failed && d < p.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.cfg.MaxBackoff)
}

// deadLetter builds r's dead-letter record.
func (p *Processor) deadLetter(r *kgo.Record, cause error, attempts int) *kgo.Record {
	ours := []string{HeaderError, HeaderTopic, HeaderPartition, HeaderOffset, HeaderTimestamp, HeaderGroup, HeaderAttempts}
	h := make([]kgo.RecordHeader, 0, len(r.Headers)+len(ours))
	for _, x := range r.Headers {
		if !slices.Contains(ours, x.Key) {
			h = append(h, x)
		}
	}
	h = append(h,
		kgo.RecordHeader{Key: HeaderError, Value: []byte(cause.Error())},
		kgo.RecordHeader{Key: HeaderTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		kgo.RecordHeader{Key: HeaderOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
		kgo.RecordHeader{Key: HeaderTimestamp, Value: strconv.AppendInt(nil, r.Timestamp.UnixMilli(), 10)},
		kgo.RecordHeader{Key: HeaderGroup, Value: []byte(p.cfg.Group)},
		kgo.RecordHeader{Key: HeaderAttempts, Value: strconv.AppendInt(nil, int64(attempts), 10)},
	)
	return &kgo.Record{Topic: p.cfg.DeadLetterTopic, Key: r.Key, Value: r.Value, Headers: h}
}

// sleep waits d, or until ctx ends (its error) or stop closes
// (errRebalanced).
func sleep(ctx context.Context, d time.Duration, stop <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return errRebalanced
	case <-t.C:
		return nil
	}
}

func (p *Processor) markRevoked() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.revokedDone {
		p.revokedDone = true
		close(p.revoked)
	}
}

// rearmRevoked forgets revocations once End has run, mirroring the
// session, which forgets them there too.
func (p *Processor) rearmRevoked() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.revokedDone {
		p.revokedDone = false
		p.revoked = make(chan struct{})
	}
}

func (p *Processor) revokedCh() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.revoked
}

// checkRevoked tells whether the batch must stop: the processor is
// stopping or the session will abort because of a rebalance.
func (p *Processor) checkRevoked(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-p.revokedCh():
		return errRebalanced
	default:
		return nil
	}
}

func (p *Processor) rememberUndeliverable(k srcKey, r rejection) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.undeliverable) >= undeliverableLimit {
		clear(p.undeliverable)
	}
	if old, ok := p.undeliverable[k]; !ok || !old.certain {
		p.undeliverable[k] = r
	}
}

func (p *Processor) takeUndeliverable(k srcKey) (rejection, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.undeliverable[k]
	delete(p.undeliverable, k)
	return r, ok
}
