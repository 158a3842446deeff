package cli

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/exactly/exactly/eos/outbox"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx" for the polling relay
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kgo"
)

// OutboxCommand returns the "outbox" command. Its "relay" subcommand
// publishes a transactional outbox table (package eos/outbox) to Kafka
// exactly once, by polling the table or, with --cdc, by following
// PostgreSQL's logical replication stream.
func OutboxCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "outbox",
		Short: "Publish a transactional outbox table to Kafka exactly once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(outboxInitCommand(), outboxRelayCommand())
	return cmd
}

// outboxRelayFlags are the flags of "outbox relay".
type outboxRelayFlags struct {
	connFlags
	dsn, table, prefix, name           string
	cdc                                bool
	slot, publication, checkpointTopic string
	snapshot                           string
	batchSize                          int
	pollInterval, setupTimeout         time.Duration
	deletePublished                    bool
	noLock                             bool
	lockPoll                           time.Duration
	metricsListen                      string
}

// relayRunner is what both relays offer the command.
type relayRunner interface {
	Run(context.Context) error
	Close()
	Collector() prometheus.Collector
}

func outboxRelayCommand() *cobra.Command {
	f := &outboxRelayFlags{}
	cmd := &cobra.Command{
		Use:   "relay --dsn DSN --bootstrap HOST:PORT [--table T] [--cdc] [--topic-prefix P] [--name N] [--slot S]",
		Short: "Relay committed outbox rows to Kafka until SIGINT/SIGTERM",
		Long: `Relay committed outbox rows to Kafka, exactly once, until SIGINT or SIGTERM.

Each row of the outbox table (Debezium's convention: id, aggregatetype, aggregateid, type,
payload, headers) becomes one record on topic <topic-prefix><aggregatetype>, keyed by
aggregateid, with headers id and type plus the row's own. The relay's position is committed
in the same Kafka transaction as the records, so a relay killed at any moment and restarted
with the same --name neither loses nor duplicates a row.

The table must have what "exactly outbox init" adds (txid, aggregateversion, readyxid and
a trigger); writers then use plain INSERTs and take no lock. Polling (default) publishes a row
once every transaction up to its readyxid has ended, each aggregate in version (= commit)
order. --cdc follows PostgreSQL's logical replication stream instead (needs wal_level=logical and a role with REPLICATION); the slot is created if
missing, so start the CDC relay once before writing rows it should publish.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOutboxRelay(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dsn, "dsn", "", "PostgreSQL connection string (URL or key=value), e.g. postgres://user@host:5432/db")
	fl.StringVar(&f.table, "table", "outbox", "the outbox table, optionally schema-qualified")
	fl.StringVarP(&f.bootstrap, "bootstrap", "b", DefaultBootstrapServer, "comma-separated host:port list of brokers to bootstrap from")
	fl.StringVar(&f.bootstrap, "bootstrap-server", DefaultBootstrapServer, "same as --bootstrap")
	_ = fl.MarkHidden("bootstrap-server")
	f.bootstrapFlags = []*pflag.Flag{fl.Lookup("bootstrap"), fl.Lookup("bootstrap-server")}
	f.registerSecurity(fl)
	fl.BoolVar(&f.cdc, "cdc", false, "follow the logical replication stream instead of polling")
	fl.StringVar(&f.prefix, "topic-prefix", "outbox.event.", "events go to <prefix><aggregatetype>")
	fl.StringVar(&f.name, "name", "default", "relay name: keep it across restarts (transactional id and checkpoint key)")
	fl.StringVar(&f.slot, "slot", "", "replication slot for --cdc (default exactly_outbox_<name>)")
	fl.StringVar(&f.snapshot, "snapshot", outbox.SnapshotInitial, "--cdc first start: initial (publish the rows already in the table, then stream) or no_data")
	fl.StringVar(&f.publication, "publication", "", "publication for --cdc (default: the slot name)")
	fl.StringVar(&f.checkpointTopic, "checkpoint-topic", outbox.DefaultCheckpointTopic, "topic holding the relay positions")
	fl.IntVar(&f.batchSize, "batch-size", 500, "events per Kafka transaction (a PostgreSQL transaction is never split)")
	fl.DurationVar(&f.pollInterval, "poll-interval", 200*time.Millisecond, "wait after an empty poll (polling relay)")
	fl.BoolVar(&f.deletePublished, "delete-published", false, "delete rows once their Kafka transaction committed (polling relay)")
	fl.StringVar(&f.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (lag, published, batches, horizon, snapshot progress)")
	fl.BoolVar(&f.noLock, "no-lock", false, "do not take the relay's PostgreSQL advisory lock (instances of one --name then fence each other in turn)")
	fl.DurationVar(&f.lockPoll, "lock-poll", 500*time.Millisecond, "how often a standby tries the relay lock and the active one checks it")
	fl.DurationVar(&f.setupTimeout, "setup-timeout", 30*time.Second, "give up starting after this long")
	return cmd
}

func runOutboxRelay(cmd *cobra.Command, f *outboxRelayFlags) error {
	if f.dsn == "" {
		return errors.New("--dsn is required")
	}
	if !f.cdc && (f.slot != "" || f.publication != "" || cmd.Flags().Changed("snapshot")) {
		return errors.New("--slot, --publication and --snapshot need --cdc")
	}
	if f.cdc && f.deletePublished {
		return errors.New("--delete-published works with the polling relay only")
	}
	conn, err := f.settings()
	if err != nil {
		return err
	}
	kafka, err := conn.Opts()
	if err != nil {
		return err
	}
	silenceUsageOnRun(cmd)
	ctx, stop := signal.NotifyContext(commandContext(cmd), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	kafka = append([]kgo.Opt{kgo.ClientID("exactly-outbox-relay"), kgo.DialTimeout(5 * time.Second)}, kafka...)
	prefix := f.prefix
	topic := func(e *outbox.Event) string { return prefix + e.AggregateType }
	table := outbox.Table{Name: f.table}

	// One active instance per name: the others wait for its lock.
	if !f.noLock {
		key := outbox.LeaderKey(f.cdc, f.name)
		lead, err := outbox.AcquireLeadership(ctx, f.dsn, key, f.lockPoll, func() {
			fmt.Fprintf(cmd.ErrOrStderr(), "outbox relay %q: standby, waiting for the active instance (lock %s)\n", f.name, key)
		})
		if err != nil {
			if ctx.Err() != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "outbox relay %q: stopped\n", f.name)
				return nil
			}
			return fmt.Errorf("connecting to PostgreSQL: %w", err)
		}
		defer lead.Release()
		lostCtx, cancelLost := context.WithCancelCause(ctx)
		defer cancelLost(nil)
		go func() {
			select {
			case <-lead.Lost():
				cancelLost(errLockLost)
			case <-lostCtx.Done():
			}
		}()
		ctx = lostCtx
	}

	setupCtx, cancel := context.WithTimeout(ctx, f.setupTimeout)
	defer cancel()
	var r relayRunner
	var what string
	if f.cdc {
		cr, err := outbox.NewCDCRelay(setupCtx, outbox.CDCConfig{DSN: f.dsn, Table: table, Name: f.name,
			Slot: f.slot, Publication: f.publication, Kafka: kafka, CheckpointTopic: f.checkpointTopic,
			Topic: topic, BatchSize: f.batchSize, Snapshot: f.snapshot, Logger: logger})
		if err != nil {
			return setupError(ctx, "starting the CDC relay", f.bootstrap, err)
		}
		r = cr
		slot := f.slot
		if slot == "" {
			slot = outbox.DefaultSlot(f.name)
		}
		what = fmt.Sprintf("CDC from slot %s, checkpoint %s", slot, cr.Checkpoint())
		go snapshotProgress(ctx, cmd.ErrOrStderr(), cr)
	} else {
		db, err := sql.Open("pgx", f.dsn)
		if err != nil {
			return fmt.Errorf("--dsn: %w", err)
		}
		defer db.Close()
		if err := db.PingContext(setupCtx); err != nil {
			return fmt.Errorf("connecting to PostgreSQL: %w", err)
		}
		pr, err := outbox.NewRelay(setupCtx, outbox.RelayConfig{DB: db, Table: table, Name: f.name, Kafka: kafka,
			CheckpointTopic: f.checkpointTopic, Topic: topic, BatchSize: f.batchSize, PollInterval: f.pollInterval,
			DeletePublished: f.deletePublished, Logger: logger})
		if err != nil {
			return setupError(ctx, "starting the relay", f.bootstrap, err)
		}
		r = pr
		what = fmt.Sprintf("polling, position %s", pr.Position())
	}
	defer r.Close()
	if f.metricsListen != "" {
		stopMetrics, addr, err := serveRelayMetrics(f.metricsListen, r.Collector())
		if err != nil {
			return err
		}
		defer stopMetrics()
		fmt.Fprintf(cmd.ErrOrStderr(), "outbox relay %q: metrics at http://%s/metrics\n", f.name, addr)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "outbox relay %q: %s -> %s<aggregatetype> (%s)\n", f.name, f.table, prefix, what)
	if err := r.Run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	if errors.Is(context.Cause(ctx), errLockLost) {
		return errLockLost
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "outbox relay %q: stopped\n", f.name)
	return nil
}

// errLockLost ends a relay whose lock connection failed: another instance
// may be active now, so this one exits (a supervisor restarts it as a
// standby).
var errLockLost = errors.New("lost the relay's PostgreSQL lock; exiting so another instance can take over")

// setupError makes a start failure readable: a timeout during start is
// most often an unreachable broker (PostgreSQL is checked first).
func setupError(ctx context.Context, what, bootstrap string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%s: interrupted", what)
	}
	return requestError(what, bootstrap, err)
}

// outboxInitFlags are the flags of "outbox init".
type outboxInitFlags struct {
	dsn, table, payload string
	print               bool
}

func outboxInitCommand() *cobra.Command {
	f := &outboxInitFlags{}
	cmd := &cobra.Command{
		Use:   "init --dsn DSN [--table T] [--payload bytea|jsonb] [--print]",
		Short: "Create or migrate an outbox table so any writer can use plain INSERTs",
		Long: `Create the outbox table, or migrate an existing one, for the relays.

It adds the columns txid (the writer's transaction id), aggregateversion and readyxid, a
per-aggregate counter table <table>_aggregates, a BEFORE INSERT trigger that fills them in,
and two indexes. Writers in any language then insert with a plain

  INSERT INTO <table> (id, aggregatetype, aggregateid, type, payload) VALUES (...)

and take no lock: only writers of the same aggregate wait for each other. Rows already in
the table are numbered in their existing order. Running init again changes nothing.
--print shows the DDL instead of running it (--dsn is then not needed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tbl := outbox.Table{Name: f.table, PayloadType: f.payload}
			ddl, err := tbl.Schema()
			if err != nil {
				return err
			}
			if f.print {
				fmt.Fprint(cmd.OutOrStdout(), ddl)
				return nil
			}
			if f.dsn == "" {
				return errors.New("--dsn is required (or --print to see the DDL)")
			}
			silenceUsageOnRun(cmd)
			db, err := sql.Open("pgx", f.dsn)
			if err != nil {
				return fmt.Errorf("--dsn: %w", err)
			}
			defer db.Close()
			ctx, cancel := context.WithTimeout(commandContext(cmd), 5*time.Minute)
			defer cancel()
			if err := tbl.Init(ctx, db); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "outbox table %s is ready\n", f.table)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dsn, "dsn", "", "PostgreSQL connection string (URL or key=value)")
	fl.StringVar(&f.table, "table", "outbox", "the outbox table, optionally schema-qualified")
	fl.StringVar(&f.payload, "payload", "bytea", "payload column type when the table is created: bytea or jsonb")
	fl.BoolVar(&f.print, "print", false, "print the DDL instead of running it")
	return cmd
}

// snapshotProgress shows the initial snapshot's progress until it is done
// (or there is none): a progress bar when w is a terminal, otherwise a
// line every few seconds (a log file should not fill with bar redraws).
func snapshotProgress(ctx context.Context, w io.Writer, r *outbox.CDCRelay) {
	var bar *progressbar.ProgressBar
	every := 2 * time.Second
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(w), progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(150*time.Millisecond), progressbar.OptionSetDescription("initial snapshot"),
			progressbar.OptionShowCount())
		every = 200 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		done, total := r.SnapshotProgress()
		switch {
		case total == 0 && done == 0:
			return // no snapshot
		case total < 0:
			if bar == nil {
				fmt.Fprintf(w, "initial snapshot: sizing\n")
			}
			continue
		}
		if bar != nil {
			bar.ChangeMax64(total)
			_ = bar.Set64(done)
			if done >= total {
				_ = bar.Finish()
				fmt.Fprintln(w)
				return
			}
			continue
		}
		if done >= total {
			fmt.Fprintf(w, "initial snapshot: %d/%d rows, done\n", done, total)
			return
		}
		fmt.Fprintf(w, "initial snapshot: %d/%d rows (%.0f%%)\n", done, total, 100*float64(done)/float64(total))
	}
}

// serveRelayMetrics serves c at http://listen/metrics until stopped.
func serveRelayMetrics(listen string, c prometheus.Collector) (stop func(), addr string, err error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, "", fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, ln.Addr().String(), nil
}
