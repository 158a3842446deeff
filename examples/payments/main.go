// Command payments is a payments ledger fed from Kafka exactly once: each
// transfer (from, to, amount) on the "transfers" topic becomes a debit row,
// a credit row and two balance updates in PostgreSQL, committed in the same
// database transaction as the consumed offsets (package eos/sink). Kill the
// consumer at any moment and restart it: no transfer is lost or applied
// twice, and the balances always sum to zero.
//
//	payments produce --n 5000        write transfers in Kafka transactions
//	payments consume                 apply them (until killed, or --until N)
//	payments check                   compare the ledger with the topic
//	payments demo --n 1000           all three against an embedded broker
//	                                 (drops and recreates --schema first)
//
// Every command talks to --bootstrap, or starts the embedded broker
// (exactly.Start) on --data-dir. See README.md.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/eos/sink"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: payments <produce|consume|check|demo> [flags]   (payments <command> -h for flags)`

// run is main without the process: exit status 0 ok, 1 check failed or
// runtime error, 2 usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	c := &cmd{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("payments "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.common(fs)
	var do func(context.Context) error
	switch args[0] {
	case "produce":
		c.produceFlags(fs)
		do = c.produce
	case "consume":
		c.consumeFlags(fs)
		do = c.consume
	case "check":
		fs.BoolVar(&c.complete, "complete", false, "also require every committed transfer to be applied")
		do = c.check
	case "demo":
		c.produceFlags(fs)
		c.consumeFlags(fs)
		do = c.demo
	default:
		fmt.Fprintln(stderr, usage)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if c.bootstrap != "" && c.dataDir != "" {
		fmt.Fprintln(stderr, "payments: --bootstrap and --data-dir are exclusive")
		return 2
	}
	c.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := c.startBroker(args[0] == "demo"); err != nil {
		fmt.Fprintln(stderr, "payments:", err)
		return 1
	}
	defer c.closeBroker()
	if err := do(ctx); err != nil {
		if errors.Is(err, errCheckFailed) {
			return 1
		}
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return 0 // interrupted: a clean stop
		}
		fmt.Fprintln(stderr, "payments:", err)
		return 1
	}
	return 0
}

type cmd struct {
	stdout, stderr io.Writer
	log            *slog.Logger

	bootstrap, dataDir, listen, topic string
	partitions                        int
	dsn, schema, group                string

	n, accounts, txnSize, abortEvery int
	seed                             uint64

	instanceID   string
	maxBatch     int
	batchDelay   time.Duration
	until        int
	mirror       bool
	sessionLimit time.Duration
	complete     bool

	broker *exactly.Broker
}

func (c *cmd) common(fs *flag.FlagSet) {
	fs.StringVar(&c.bootstrap, "bootstrap", "", "Kafka bootstrap address (host:port); empty: start the embedded broker")
	fs.StringVar(&c.dataDir, "data-dir", "", "embedded broker data directory (default ./payments-data; demo: a temporary one)")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:0", "embedded broker listen address")
	fs.StringVar(&c.topic, "topic", "transfers", "transfers topic")
	fs.IntVar(&c.partitions, "partitions", 3, "partitions of the topic when it is created")
	dsn := os.Getenv("EXACTLY_TEST_POSTGRES")
	if dsn == "" {
		dsn = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	fs.StringVar(&c.dsn, "dsn", dsn, "PostgreSQL DSN (pgx)")
	fs.StringVar(&c.schema, "schema", "payments", "PostgreSQL schema holding accounts, ledger and sink_offsets")
	fs.StringVar(&c.group, "group", "payments", "consumer group (key of the stored offsets)")
}

func (c *cmd) produceFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.n, "n", 1000, "transfers to produce")
	fs.IntVar(&c.accounts, "accounts", 50, "number of accounts")
	fs.Uint64Var(&c.seed, "seed", 1, "transfer generator seed (same seed, same transfers)")
	fs.IntVar(&c.txnSize, "txn-size", 100, "transfers per Kafka transaction")
	fs.IntVar(&c.abortEvery, "abort-every", 0, "after every k-th committed transaction, write one transaction of bogus transfers and abort it (0: never)")
}

func (c *cmd) consumeFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.instanceID, "instance-id", "", "static group membership id: a restarted consumer with the same id takes over at once instead of waiting out the dead one's session")
	fs.IntVar(&c.maxBatch, "max-batch", 200, "max records per poll (each partition's share is one transaction)")
	fs.DurationVar(&c.batchDelay, "batch-delay", 0, "sleep inside each transaction before it commits (simulates slow work; widens the window a crash hits)")
	fs.IntVar(&c.until, "until", 0, "exit 0 once this many transfers are applied (0: run until interrupted)")
	fs.BoolVar(&c.mirror, "mirror-offsets", true, "also commit offsets to Kafka after each database commit, for lag monitoring only")
	fs.DurationVar(&c.sessionLimit, "session-timeout", 10*time.Second, "group session timeout")
}

func (c *cmd) startBroker(demo bool) error {
	if c.bootstrap != "" {
		return nil
	}
	dir := c.dataDir
	if dir == "" && !demo {
		dir = "payments-data"
	}
	b, err := exactly.Start(exactly.Options{DataDir: dir, Listen: c.listen})
	if err != nil {
		return fmt.Errorf("starting embedded broker: %w", err)
	}
	c.broker = b
	c.bootstrap = b.Addr()
	c.log.Info("embedded broker started", "addr", b.Addr(), "data_dir", dir)
	return nil
}

func (c *cmd) closeBroker() {
	if c.broker != nil {
		c.broker.Close()
	}
}

func (c *cmd) openLedger(ctx context.Context) (*ledger, error) {
	db, err := sql.Open("pgx", c.dsn)
	if err != nil {
		return nil, err
	}
	l, err := newLedger(db, c.schema)
	if err != nil {
		db.Close()
		return nil, err
	}
	if err := l.create(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return l, nil
}

// produce writes c.n transfers, c.txnSize per Kafka transaction, from an
// idempotent transactional producer: a read_committed consumer sees each
// transaction whole or not at all, and sees aborted ones never.
func (c *cmd) produce(ctx context.Context) error {
	if c.accounts < 2 || c.txnSize < 1 {
		return errors.New("need --accounts >= 2 and --txn-size >= 1")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.bootstrap), kgo.DefaultProduceTopic(c.topic),
		kgo.TransactionalID(fmt.Sprintf("payments-producer-%d", c.seed)), kgo.TransactionTimeout(time.Minute))
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := c.createTopic(ctx, cl); err != nil {
		return err
	}
	ts := generate(c.seed, c.n, c.accounts)
	txns := 0
	for start := 0; start < len(ts); start += c.txnSize {
		end := min(start+c.txnSize, len(ts))
		if err := c.txn(ctx, cl, ts[start:end], kgo.TryCommit); err != nil {
			return err
		}
		txns++
		if c.abortEvery > 0 && txns%c.abortEvery == 0 {
			bogus := make([]Transfer, 10)
			for i := range bogus {
				bogus[i] = Transfer{ID: fmt.Sprintf("aborted-%d-%d-%d", c.seed, txns, i), From: account(0), To: account(1), Amount: 1_000_000}
			}
			if err := c.txn(ctx, cl, bogus, kgo.TryAbort); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(c.stdout, "produced %d transfers in %d transactions to %s\n", len(ts), txns, c.topic)
	return nil
}

func (c *cmd) txn(ctx context.Context, cl *kgo.Client, ts []Transfer, end kgo.TransactionEndTry) error {
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	rs := make([]*kgo.Record, len(ts))
	for i, t := range ts {
		v, _ := json.Marshal(t)
		rs[i] = &kgo.Record{Key: []byte(t.From), Value: v}
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		_ = cl.EndTransaction(ctx, kgo.TryAbort)
		return fmt.Errorf("producing: %w", err)
	}
	if err := cl.EndTransaction(ctx, end); err != nil {
		return fmt.Errorf("ending transaction: %w", err)
	}
	return nil
}

func (c *cmd) createTopic(ctx context.Context, cl *kgo.Client) error {
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(c.partitions), 1, nil, c.topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %s: %w", c.topic, err)
	}
	return nil
}

// consume runs the exactly-once sink until interrupted, or until --until
// transfers are applied.
func (c *cmd) consume(ctx context.Context) error {
	l, err := c.openLedger(ctx)
	if err != nil {
		return err
	}
	defer l.db.Close()
	l.delay = c.batchDelay
	kopts := []kgo.Opt{kgo.SeedBrokers(c.bootstrap), kgo.SessionTimeout(c.sessionLimit), kgo.FetchMaxWait(200 * time.Millisecond)}
	if c.instanceID != "" {
		kopts = append(kopts, kgo.InstanceID(c.instanceID))
	}
	s, err := sink.New(sink.Config{
		DB: l.db, Table: l.offsets(), Group: c.group, Topics: []string{c.topic},
		Kafka: kopts, Handler: l.apply, MaxPollRecords: c.maxBatch,
		CommitKafkaOffsets: c.mirror, Logger: c.log,
	})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			if c.until <= 0 {
				continue
			}
			n, err := l.applied(ctx)
			if err != nil {
				c.log.Warn("counting applied transfers", "err", err)
				continue
			}
			if n >= c.until {
				cancel()
				<-done
				st := s.Stats()
				fmt.Fprintf(c.stdout, "applied %d transfers (this run: %d transactions, %d records, %d retries)\n",
					n, st.Transactions, st.Records, st.Retries)
				return nil
			}
		}
	}
}

var errCheckFailed = errors.New("check failed")

// check reads every committed transfer back from the topic and compares the
// ledger, the balances and the stored offsets with it (see ledger.verify):
// valid at any moment, --complete also wants everything applied.
func (c *cmd) check(ctx context.Context) error {
	l, err := c.openLedger(ctx)
	if err != nil {
		return err
	}
	defer l.db.Close()
	topic, err := readTransfers(ctx, c.bootstrap, c.topic)
	if err != nil {
		return err
	}
	n := 0
	for _, ts := range topic {
		n += len(ts)
	}
	applied, bad, err := l.verify(ctx, c.group, topic, c.complete)
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		for i, b := range bad {
			if i == 20 {
				fmt.Fprintf(c.stdout, "... and %d more\n", len(bad)-i)
				break
			}
			fmt.Fprintln(c.stdout, "VIOLATION:", b)
		}
		return errCheckFailed
	}
	fmt.Fprintf(c.stdout, "ok: %d of %d committed transfers applied, each exactly once (%d ledger rows), exactly those below the stored offsets; every balance as expected, sum 0\n",
		applied, n, 2*applied)
	return nil
}

// readTransfers reads the topic read_committed from the start up to its
// last stable offset, returning each partition's transfers in order.
func readTransfers(ctx context.Context, bootstrap, topic string) (map[int32][]placed, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	offsets := map[int32]kgo.Offset{}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		offsets[o.Partition] = kgo.NewOffset().AtStart()
		want[o.Partition] = o.Offset
	})
	rd, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.KeepControlRecords(), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out := map[int32][]placed{}
	pos := map[int32]int64{}
	for {
		done := true
		for p, end := range want {
			if pos[p] < end {
				done = false
			}
		}
		if done {
			return out, nil
		}
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading %s: %w (at %v, want %v)", topic, err, pos, want)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, ferr
		}
		for _, r := range fs.Records() {
			pos[r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() || r.Offset >= want[r.Partition] {
				continue
			}
			var t Transfer
			if err := json.Unmarshal(r.Value, &t); err != nil {
				return nil, fmt.Errorf("record %d/%d: %w", r.Partition, r.Offset, err)
			}
			out[r.Partition] = append(out[r.Partition], placed{t, r.Offset})
		}
	}
}

// demo drops and recreates --schema, then produces, consumes and checks in
// one process against the embedded broker (a temporary data directory
// unless --data-dir is given).
func (c *cmd) demo(ctx context.Context) error {
	// A fresh topic needs a fresh ledger: stored offsets and rows of an
	// earlier demo would not match it.
	db, err := sql.Open("pgx", c.dsn)
	if err != nil {
		return err
	}
	if _, err := newLedger(db, c.schema); err != nil {
		db.Close()
		return err
	}
	_, err = db.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+c.schema+` CASCADE`)
	db.Close()
	if err != nil {
		return err
	}
	if err := c.produce(ctx); err != nil {
		return err
	}
	if c.until == 0 {
		c.until = c.n
	}
	if err := c.consume(ctx); err != nil {
		return err
	}
	c.complete = true
	return c.check(ctx)
}
