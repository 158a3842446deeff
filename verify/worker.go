package verify

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/exactly/exactly/clientconf"

	"github.com/twmb/franz-go/pkg/kgo"
)

// WorkerSpec is everything a worker process needs. The orchestrator passes
// it as JSON (the hidden `exactly verify worker --spec` command).
type WorkerSpec struct {
	// Role is RoleProducer, RolePipeline or RoleShare.
	Role string `json:"role"`
	// Proc is this instance's unique name ("p0.2"); every value it writes
	// starts with it.
	Proc string `json:"proc"`
	// Seed drives the instance's choices (partitions, transaction sizes,
	// deliberate aborts).
	Seed int64 `json:"seed"`
	// Brokers are the bootstrap addresses (the proxy's).
	Brokers []string `json:"brokers"`
	// InTopic is the producers' topic and the pipeline's input.
	InTopic string `json:"in_topic"`
	// OutTopic is the pipeline's output.
	OutTopic string `json:"out_topic"`
	// Partitions is the partition count of both topics.
	Partitions int32 `json:"partitions"`
	// Group is the pipeline's consumer group (the share group in share
	// mode).
	Group string `json:"group,omitempty"`
	// TransactionalID is the slot's transactional id: a restarted or
	// replacement instance reuses it and so fences its predecessor.
	TransactionalID string `json:"transactional_id,omitempty"`
	// InstanceID is the static group membership id (empty: dynamic).
	InstanceID string `json:"instance_id,omitempty"`
	// Profile is the client configuration.
	Profile Profile `json:"profile"`
	// History is the file this instance appends its events to.
	History string `json:"history"`
	// Rate is the producer's records per second (0: as fast as the
	// client takes them).
	Rate float64 `json:"rate,omitempty"`
	// FenceOnly makes a producer initialize its transactional id (fencing
	// and aborting whatever its predecessor left open) and exit.
	FenceOnly bool `json:"fence_only,omitempty"`
	// SessionTimeout is the group session timeout.
	SessionTimeout time.Duration `json:"session_timeout,omitempty"`
	// TxnTimeout is the transaction timeout.
	TxnTimeout time.Duration `json:"txn_timeout,omitempty"`
	// SASL is the workers' SASL mechanism and user (TLS ends at the
	// proxy); the password comes from clientconf.PasswordEnv in the
	// worker's environment, never from the spec, which is on the command
	// line.
	SASL clientconf.Settings `json:"sasl,omitempty"`
}

// saslOpts are the worker's SASL options.
func (spec WorkerSpec) saslOpts() ([]kgo.Opt, error) {
	return spec.SASL.WithEnvPassword().Opts()
}

// WorkerStatus is what a worker reports on stdout, one JSON line at a time.
type WorkerStatus struct {
	// Proc is the reporting instance.
	Proc string `json:"proc"`
	// Sent counts input records handed to the client.
	Sent int64 `json:"sent"`
	// Acked counts input records acknowledged.
	Acked int64 `json:"acked"`
	// Failed counts input records the client gave up on.
	Failed int64 `json:"failed"`
	// Polled counts records the pipeline polled.
	Polled int64 `json:"polled"`
	// Produced counts output records acknowledged.
	Produced int64 `json:"produced"`
	// Commits counts committed transactions (or offset commits).
	Commits int64 `json:"commits"`
	// Aborts counts aborted transactions.
	Aborts int64 `json:"aborts"`
}

// Worker control commands, one per line on the worker's stdin.
const (
	// CmdStop finishes the current unit of work and exits cleanly.
	CmdStop = "stop"
	// CmdCrash is followed by a phase (or "now"): SIGKILL yourself there.
	CmdCrash = "crash"
)

// ErrFenced is returned by a worker whose identity a newer instance took.
var ErrFenced = errors.New("fenced by a newer instance")

type control struct {
	stop  atomic.Bool
	crash atomic.Value // string phase
	rec   *Recorder
}

func (c *control) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 0:
		case f[0] == CmdStop:
			c.stop.Store(true)
		case f[0] == CmdCrash && len(f) > 1:
			c.crash.Store(f[1])
		}
	}
	c.stop.Store(true)
}

// at SIGKILLs the process if a crash was requested at phase ("now" and
// "any" match every phase).
func (c *control) at(phase string) {
	want, _ := c.crash.Load().(string)
	if want == "" || (want != phase && want != "now" && phase != "any") {
		return
	}
	c.rec.Record(Event{Type: EvFault, Detail: "self-kill " + want})
	c.rec.Flush()
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

type counters struct {
	sent, acked, failed, polled, produced, commits, aborts atomic.Int64
}

func (c *counters) status(proc string) WorkerStatus {
	return WorkerStatus{Proc: proc, Sent: c.sent.Load(), Acked: c.acked.Load(), Failed: c.failed.Load(),
		Polled: c.polled.Load(), Produced: c.produced.Load(), Commits: c.commits.Load(), Aborts: c.aborts.Load()}
}

// RunWorker runs one worker until a stop command (or the end of ctl), a
// fatal client error, or a kill. Status lines go to status every 250ms.
func RunWorker(ctx context.Context, spec WorkerSpec, ctl io.Reader, status io.Writer) error {
	if _, err := spec.saslOpts(); err != nil {
		return err
	}
	rec, err := CreateRecorder(spec.History, spec.Proc)
	if err != nil {
		return err
	}
	defer rec.Close()
	c := &control{rec: rec}
	go c.read(ctl)
	var cnt counters
	stopStatus := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		enc := json.NewEncoder(status)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopStatus:
				enc.Encode(cnt.status(spec.Proc))
				return
			case <-t.C:
				enc.Encode(cnt.status(spec.Proc))
			}
		}
	}()
	defer func() { close(stopStatus); wg.Wait() }()

	rec.Record(Event{Type: EvStart, Detail: spec.Role})
	switch spec.Role {
	case RoleProducer:
		err = runProducer(ctx, spec, c, rec, &cnt)
	case RolePipeline:
		err = runPipeline(ctx, spec, c, rec, &cnt)
	case RoleShare:
		err = runShareConsumer(ctx, spec, c, rec, &cnt)
	default:
		err = fmt.Errorf("unknown worker role %q", spec.Role)
	}
	if err != nil {
		rec.Record(Event{Type: EvExit, Error: err.Error()})
	} else {
		rec.Record(Event{Type: EvExit, OK: true})
	}
	return err
}

func seedFor(spec WorkerSpec) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(spec.Proc))
	return rand.New(rand.NewPCG(uint64(spec.Seed), h.Sum64()))
}

// ClientLogEnv names the environment variable that, set to debug, info,
// warn or error, makes workers log their Kafka client at that level to
// their log file (for diagnosing a run).
const ClientLogEnv = "EXACTLY_VERIFY_CLIENT_LOG"

// clientOpts are the options every worker client shares.
func clientOpts(spec WorkerSpec) []kgo.Opt {
	var logOpt []kgo.Opt
	levels := map[string]kgo.LogLevel{"debug": kgo.LogLevelDebug, "info": kgo.LogLevelInfo, "warn": kgo.LogLevelWarn, "error": kgo.LogLevelError}
	if l, ok := levels[os.Getenv(ClientLogEnv)]; ok {
		logOpt = append(logOpt, kgo.WithLogger(kgo.BasicLogger(os.Stderr, l, func() string {
			return time.Now().Format("15:04:05.000 ") + spec.Proc + " "
		})))
	}
	sasl, _ := spec.saslOpts() // checked when the worker started
	logOpt = append(logOpt, sasl...)
	return append(logOpt,
		kgo.SeedBrokers(spec.Brokers...),
		kgo.ClientID(spec.Proc),
		kgo.DialTimeout(2*time.Second),
		// A connection the proxy or a broker kill cuts right after a
		// request is a network fault to retry, not a misconfiguration
		// (franz-go's default assumption for a first-read EOF).
		kgo.AlwaysRetryEOF(),
		kgo.MetadataMinAge(250*time.Millisecond),
		kgo.RetryBackoffFn(func(n int) time.Duration {
			return min(50*time.Millisecond*time.Duration(1<<min(n, 3)), 400*time.Millisecond)
		}),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
}

// producerOpts map a ProducerProfile to client options.
func producerOpts(p ProducerProfile, spec WorkerSpec) []kgo.Opt {
	var o []kgo.Opt
	switch p.Acks {
	case "0":
		o = append(o, kgo.RequiredAcks(kgo.NoAck()))
	case "1":
		o = append(o, kgo.RequiredAcks(kgo.LeaderAck()))
	default:
		o = append(o, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	if !p.Idempotent {
		o = append(o, kgo.DisableIdempotentWrite())
		if p.MaxInFlight > 0 {
			o = append(o, kgo.MaxProduceRequestsInflightPerBroker(p.MaxInFlight))
		}
	}
	if p.Retries >= 0 {
		o = append(o, kgo.RecordRetries(p.Retries))
	}
	o = append(o, kgo.ProducerLinger(time.Duration(p.LingerMs)*time.Millisecond))
	if p.Transactional {
		o = append(o, kgo.TransactionalID(spec.TransactionalID))
		if spec.TxnTimeout > 0 {
			o = append(o, kgo.TransactionTimeout(spec.TxnTimeout))
		}
	}
	return o
}

// isFenced says whether err means another instance took our identity.
func isFenced(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	for _, k := range []string{"PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "FENCED_INSTANCE_ID", "TRANSACTIONAL_ID_AUTHORIZATION"} {
		if strings.Contains(s, k) {
			return true
		}
	}
	return false
}

// pacer spaces out records to a rate.
type pacer struct {
	every time.Duration
	next  time.Time
}

func newPacer(rate float64) *pacer {
	p := &pacer{next: time.Now()}
	if rate > 0 {
		p.every = time.Duration(float64(time.Second) / rate)
	}
	return p
}

func (p *pacer) wait(ctx context.Context) {
	if p.every == 0 {
		return
	}
	p.next = p.next.Add(p.every)
	d := time.Until(p.next)
	if d < -time.Second {
		p.next = time.Now() // fell behind (a stall): do not burst
		return
	}
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
}

func runProducer(ctx context.Context, spec WorkerSpec, c *control, rec *Recorder, cnt *counters) error {
	pp := spec.Profile.Producer
	cl, err := kgo.NewClient(append(clientOpts(spec), producerOpts(pp, spec)...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	rng := seedFor(spec)
	if pp.Transactional {
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, _, err := cl.ProducerID(ictx)
		cancel()
		if err != nil {
			return fmt.Errorf("initializing transactional id %s: %w", spec.TransactionalID, err)
		}
	}
	if spec.FenceOnly {
		return nil
	}
	pace := newPacer(spec.Rate)
	var seq int64
	send := func(txn int64, done func(v string, err error)) string {
		pace.wait(ctx)
		p := int32(rng.IntN(int(spec.Partitions)))
		v := InputValue(spec.Proc, seq)
		seq++
		rec.Record(Event{Type: EvSend, Topic: spec.InTopic, Partition: p, Value: v, Txn: txn})
		cnt.sent.Add(1)
		cl.Produce(ctx, &kgo.Record{Topic: spec.InTopic, Partition: p, Value: []byte(v)}, func(r *kgo.Record, err error) {
			if err != nil {
				cnt.failed.Add(1)
				rec.Record(Event{Type: EvFail, Topic: spec.InTopic, Partition: p, Value: v, Txn: txn, Error: err.Error()})
			} else {
				cnt.acked.Add(1)
				off := r.Offset
				if pp.Acks == "0" {
					off = -1
				}
				rec.Record(Event{Type: EvAck, Topic: spec.InTopic, Partition: p, Offset: off, Value: v, Txn: txn})
			}
			if done != nil {
				done(v, err)
			}
		})
		return v
	}

	if !pp.Transactional {
		for !c.stop.Load() && ctx.Err() == nil {
			send(0, nil)
			c.at("any")
		}
		fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		return cl.Flush(fctx)
	}

	for txn := int64(1); !c.stop.Load() && ctx.Err() == nil; txn++ {
		n := 1 + rng.IntN(max(pp.TxnRecords, 1))
		abort := rng.Float64() < pp.AbortFraction
		if err := cl.BeginTransaction(); err != nil {
			return err
		}
		var (
			mu     sync.Mutex
			values []string
			failed error
		)
		for i := 0; i < n && ctx.Err() == nil; i++ {
			v := send(txn, func(_ string, err error) {
				if err != nil {
					mu.Lock()
					if failed == nil {
						failed = err
					}
					mu.Unlock()
				}
			})
			mu.Lock()
			values = append(values, v)
			mu.Unlock()
		}
		if err := cl.Flush(ctx); err != nil {
			return err
		}
		mu.Lock()
		if failed != nil {
			abort = true
		}
		vals := append([]string(nil), values...)
		ferr := failed
		mu.Unlock()
		if isFenced(ferr) {
			rec.Record(Event{Type: EvTxnUnknown, Txn: txn, Values: vals, Error: ferr.Error()})
			return ErrFenced
		}
		c.at(PhaseBeforeCommit)
		err := cl.EndTransaction(ctx, kgo.TransactionEndTry(!abort))
		if err != nil {
			rec.Record(Event{Type: EvTxnUnknown, Txn: txn, Values: vals, Error: err.Error()})
			if isFenced(err) {
				return ErrFenced
			}
			return fmt.Errorf("ending transaction %d: %w", txn, err)
		}
		if abort {
			cnt.aborts.Add(1)
			detail := "deliberate"
			if ferr != nil {
				detail = ferr.Error()
			}
			rec.Record(Event{Type: EvTxnAbort, Txn: txn, Values: vals, Detail: detail})
		} else {
			cnt.commits.Add(1)
			rec.Record(Event{Type: EvTxnCommit, Txn: txn, Values: vals})
		}
		c.at(PhaseAfterCommit)
	}
	return nil
}
