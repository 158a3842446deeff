// Command orders is a small orders service that shows the transactional
// outbox at work: placing an order inserts the order row AND its
// OrderPlaced event (an outbox row) in ONE PostgreSQL transaction, and a
// relay publishes committed events to Kafka exactly once. An order whose
// transaction rolls back leaves neither row behind, so no event is ever
// published for an order that does not exist, and no existing order misses
// its event — the dual-write problem, solved without distributed
// transactions.
//
// Orders come from two writers side by side: this Go service (outbox.Write)
// and a psql process with plain SQL, as a service in another language
// would. A downstream consumer applies each event to a ledger table,
// claiming the event's outbox id (eos/dedup) in the same PostgreSQL
// transaction, so a replay after a consumer crash changes nothing.
//
//	orders [flags]          the demo: writers, relay and consumer in one
//	                        process, against an embedded exactly broker
//	                        unless --bootstrap names a cluster
//	orders init             create the tables
//	orders place            the writers: place orders, some declined
//	orders consume          the consumer: book events into the ledger
//	                        until stopped (or --until N entries)
//
// As separate processes the relay is `exactly outbox relay --table
// <schema>.outbox`. See README.md.
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
	"regexp"
	"syscall"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/eos/outbox"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return // interrupted: a clean stop
		}
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// options are the command line flags.
type options struct {
	dsn, bootstrap, schema string
	orders, declineEvery   int
	psqlOrders             int
	psql                   string
	pause                  time.Duration
	cdc, cleanup           bool
	timeout                time.Duration
	consumer               consumer
}

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,40}$`)

// commonFlags are the flags every command takes.
func (o *options) commonFlags(fs *flag.FlagSet) {
	defaultDSN := os.Getenv("EXACTLY_TEST_POSTGRES")
	if defaultDSN == "" {
		defaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	fs.StringVar(&o.dsn, "dsn", defaultDSN, "PostgreSQL connection string")
	fs.StringVar(&o.schema, "schema", "orders_demo", "PostgreSQL schema holding the orders, outbox and ledger tables")
}

// writerFlags are the flags of the writers (demo and place).
func (o *options) writerFlags(fs *flag.FlagSet, orders int, pause time.Duration) {
	fs.IntVar(&o.orders, "orders", orders, "how many orders the Go writer places")
	fs.IntVar(&o.psqlOrders, "psql-orders", 2, "orders placed by a psql process with plain SQL, beside the Go writer (0: none)")
	fs.StringVar(&o.psql, "psql", "psql", "the psql program for --psql-orders")
	fs.IntVar(&o.declineEvery, "decline-every", 3, "roll back every Nth order of each writer after writing it and its event (0: never)")
	fs.DurationVar(&o.pause, "pause", pause, "each writer's pause between two orders")
}

func (o *options) writers() writers {
	return writers{goOrders: o.orders, psqlOrders: o.psqlOrders, declineEvery: o.declineEvery, psql: o.psql, dsn: o.dsn, pause: o.pause}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	var o options
	cmd := "demo"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("orders "+cmd, flag.ContinueOnError)
	fs.SetOutput(out)
	o.commonFlags(fs)
	switch cmd {
	case "demo":
		o.writerFlags(fs, 6, 0)
		fs.StringVar(&o.bootstrap, "bootstrap", "", "Kafka bootstrap host:port; empty: start an embedded exactly broker")
		fs.BoolVar(&o.cdc, "cdc", false, "relay through logical replication (needs wal_level=logical) instead of polling")
		fs.BoolVar(&o.cleanup, "cleanup", false, "drop the schema (and the CDC slot and publication) at exit")
		fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "give up waiting for the events after this long")
	case "init":
	case "place":
		o.writerFlags(fs, 100, 20*time.Millisecond)
	case "consume":
		fs.StringVar(&o.consumer.bootstrap, "bootstrap", "127.0.0.1:9092", "Kafka bootstrap host:port")
		fs.StringVar(&o.consumer.group, "group", "", "consumer group (default orders-ledger-<schema>)")
		fs.StringVar(&o.consumer.instanceID, "instance-id", "", "static group membership id: a restart takes the place of the killed process at once")
		fs.IntVar(&o.consumer.until, "until", 0, "exit once the ledger holds this many entries (0: run until stopped)")
		fs.DurationVar(&o.consumer.commitInterval, "commit-interval", 5*time.Second, "how often to commit the Kafka offsets of booked events")
	default:
		return fmt.Errorf("unknown command %q: use init, place, consume, or flags alone for the demo", cmd)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if !schemaRE.MatchString(o.schema) {
		return fmt.Errorf("--schema %q: use a-z, 0-9 and _", o.schema)
	}
	db, err := sql.Open("pgx", o.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	switch cmd {
	case "init":
		if _, err := setupTables(ctx, db, o.schema); err != nil {
			return fmt.Errorf("PostgreSQL at %s: %w", o.dsn, err)
		}
		if _, err := newLedger(ctx, db, o.schema); err != nil {
			return err
		}
		fmt.Fprintf(out, "tables ready in schema %s; relay them with: exactly outbox relay --dsn DSN --table %s.outbox --bootstrap HOST:PORT\n", o.schema, o.schema)
		return nil
	case "place":
		tbl, err := setupTables(ctx, db, o.schema)
		if err != nil {
			return fmt.Errorf("PostgreSQL at %s: %w", o.dsn, err)
		}
		p, err := placeOrders(ctx, db, tbl, o.schema, o.writers(), out)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%d orders placed, %d declined\n", len(p.orders), len(p.declined))
		return nil
	case "consume":
		if o.consumer.commitInterval <= 0 {
			return errors.New("--commit-interval must be positive")
		}
		if o.consumer.group == "" {
			o.consumer.group = "orders-ledger-" + o.schema
		}
		return o.consumer.run(ctx, db, o.schema, out)
	}
	return demo(ctx, db, o, out)
}

// demo runs writers, relay and consumer in one process and checks the
// outcome: every placed order published and booked once, no declined one.
func demo(ctx context.Context, db *sql.DB, o options, out io.Writer) error {
	// Kafka: an embedded broker unless told otherwise.
	bootstrap := o.bootstrap
	if bootstrap == "" {
		b, err := exactly.Start(exactly.Options{})
		if err != nil {
			return fmt.Errorf("starting the embedded broker: %w", err)
		}
		defer b.Close()
		bootstrap = b.Addr()
		fmt.Fprintf(out, "embedded exactly broker on %s\n", bootstrap)
	}

	// PostgreSQL: the business table and the outbox, side by side.
	tbl, err := setupTables(ctx, db, o.schema)
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w", o.dsn, err)
	}
	name := "orders-" + o.schema
	slot := outbox.DefaultSlot(name)
	if o.cleanup {
		defer func() {
			// Run after the relay stopped (defers run in reverse): a slot
			// left behind would make PostgreSQL keep WAL forever.
			if o.cdc {
				// The relay's walsender may take a moment to exit after
				// the relay closed; a slot still active cannot be dropped.
				for range 50 {
					db.Exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
					if _, err := db.Exec(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				db.Exec(`DROP PUBLICATION IF EXISTS ` + slot)
			}
			db.Exec(`DROP SCHEMA ` + o.schema + ` CASCADE`)
		}()
	}

	// The relay. Started before any order is placed: a CDC relay streams
	// what commits after its slot exists (a polling relay would also
	// publish older rows).
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	kafka := []kgo.Opt{kgo.SeedBrokers(bootstrap)}
	var relay interface {
		Run(context.Context) error
		Close()
	}
	if o.cdc {
		r, err := outbox.NewCDCRelay(ctx, outbox.CDCConfig{DSN: o.dsn, Table: tbl, Name: name, Kafka: kafka, Logger: logger})
		if err != nil {
			return err
		}
		relay = r
		fmt.Fprintf(out, "CDC relay streaming from slot %s\n", slot)
	} else {
		r, err := outbox.NewRelay(ctx, outbox.RelayConfig{DB: db, Table: tbl, Name: name, Kafka: kafka,
			PollInterval: 50 * time.Millisecond, DeletePublished: true, Logger: logger})
		if err != nil {
			return err
		}
		relay = r
		fmt.Fprintf(out, "polling relay from %s\n", r.Position())
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(relayCtx) }()
	defer func() {
		stopRelay()
		<-relayDone
		relay.Close()
	}()

	// Place the orders: order row + event in one transaction, from the Go
	// service and from psql (another language's writer: plain SQL, no
	// library).
	p, err := placeOrders(ctx, db, tbl, o.schema, o.writers(), out)
	if err != nil {
		return err
	}
	placed, declined := p.orders, p.declined

	// Read what the relay published, as a downstream service would:
	// read_committed, each event applied to the ledger at most once.
	ledger, err := newLedger(ctx, db, o.schema)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics(ordersTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return err
	}
	defer cl.Close()
	waitCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	got := map[string]bool{}
	for len(got) < len(placed) {
		fs := cl.PollFetches(waitCtx)
		if waitCtx.Err() != nil {
			return fmt.Errorf("received %d of %d OrderPlaced events: %w", len(got), len(placed), waitCtx.Err())
		}
		for _, rec := range fs.Records() {
			var ev orderPlaced
			if err := json.Unmarshal(rec.Value, &ev); err != nil {
				continue // not ours (a shared broker)
			}
			if declined[ev.OrderID] {
				return fmt.Errorf("event for declined order %s was published", ev.OrderID)
			}
			if !placed[ev.OrderID] {
				continue // an earlier run's order
			}
			if got[ev.OrderID] {
				return fmt.Errorf("event for order %s published twice", ev.OrderID)
			}
			got[ev.OrderID] = true
			if _, err := ledger.apply(ctx, rec, ev); err != nil {
				return err
			}
			fmt.Fprintf(out, "received OrderPlaced %s key=%s partition=%d offset=%d id=%s version=%s\n",
				ev.OrderID, rec.Key, rec.Partition, rec.Offset, header(rec, "id"), header(rec, "aggregateversion"))
		}
	}
	fmt.Fprintf(out, "all %d placed orders published exactly once; %d declined orders published none\n", len(placed), len(declined))

	// A consumer that crashed before committing its offsets gets every
	// event again; the ledger's dedup claims make the replay a no-op.
	dups, err := ledger.replay(waitCtx, bootstrap, placed)
	if err != nil {
		return err
	}
	total, entries, err := ledger.totals(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "ledger: %d entries, %d cents; replay after a consumer crash: %d duplicates skipped\n", entries, total, dups)
	if entries != len(placed) {
		return fmt.Errorf("ledger has %d entries for %d placed orders", entries, len(placed))
	}
	return nil
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
