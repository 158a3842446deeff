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
// It runs against an embedded exactly broker (exactly.Start) unless
// --bootstrap names a Kafka-compatible cluster; see README.md.
package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
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
	cdc, cleanup           bool
	timeout                time.Duration
}

// orderPlaced is the event payload.
type orderPlaced struct {
	OrderID     string `json:"order_id"`
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
}

var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,40}$`)

func run(ctx context.Context, args []string, out io.Writer) error {
	var o options
	fs := flag.NewFlagSet("orders", flag.ContinueOnError)
	fs.SetOutput(out)
	defaultDSN := os.Getenv("EXACTLY_TEST_POSTGRES")
	if defaultDSN == "" {
		defaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	fs.StringVar(&o.dsn, "dsn", defaultDSN, "PostgreSQL connection string")
	fs.StringVar(&o.bootstrap, "bootstrap", "", "Kafka bootstrap host:port; empty: start an embedded exactly broker")
	fs.StringVar(&o.schema, "schema", "orders_demo", "PostgreSQL schema holding the orders and outbox tables")
	fs.IntVar(&o.orders, "orders", 6, "how many orders to place")
	fs.IntVar(&o.psqlOrders, "psql-orders", 2, "orders placed by a psql process with plain SQL, beside the Go writer (0: none)")
	fs.StringVar(&o.psql, "psql", "psql", "the psql program for --psql-orders")
	fs.IntVar(&o.declineEvery, "decline-every", 3, "roll back every Nth order after writing it and its event (0: never)")
	fs.BoolVar(&o.cdc, "cdc", false, "relay through logical replication (needs wal_level=logical) instead of polling")
	fs.BoolVar(&o.cleanup, "cleanup", false, "drop the schema (and the CDC slot and publication) at exit")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "give up waiting for the events after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !schemaRE.MatchString(o.schema) {
		return fmt.Errorf("--schema %q: use a-z, 0-9 and _", o.schema)
	}

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
	db, err := sql.Open("pgx", o.dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+o.schema); err != nil {
		return fmt.Errorf("PostgreSQL at %s: %w", o.dsn, err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+o.schema+`.orders (
		id text PRIMARY KEY, customer text NOT NULL, amount_cents bigint NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return err
	}
	tbl := outbox.Table{Name: o.schema + ".outbox"}
	if err := tbl.Init(ctx, db); err != nil {
		return err
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

	// Place the orders: order row + event in one transaction.
	placed := map[string]bool{}
	declined := map[string]bool{}
	for i := 1; i <= o.orders; i++ {
		var b [4]byte
		_, _ = rand.Read(b[:])
		ev := orderPlaced{OrderID: "o-" + hex.EncodeToString(b[:]), Customer: fmt.Sprint("customer-", i%3), AmountCents: int64(1000 * i)}
		decline := o.declineEvery > 0 && i%o.declineEvery == 0
		if err := placeOrder(ctx, db, tbl, o.schema, ev, decline); err != nil {
			return err
		}
		if decline {
			declined[ev.OrderID] = true
			fmt.Fprintf(out, "declined %s: transaction rolled back, neither the order nor its event exists\n", ev.OrderID)
		} else {
			placed[ev.OrderID] = true
			fmt.Fprintf(out, "placed %s for %s (%d cents)\n", ev.OrderID, ev.Customer, ev.AmountCents)
		}
	}

	// Another language's writer: plain SQL in one transaction, no library.
	if o.psqlOrders > 0 {
		var script strings.Builder
		for i := 1; i <= o.psqlOrders; i++ {
			var b [4]byte
			_, _ = rand.Read(b[:])
			ev := orderPlaced{OrderID: "o-" + hex.EncodeToString(b[:]), Customer: "customer-psql", AmountCents: int64(500 * i)}
			payload, _ := json.Marshal(ev)
			fmt.Fprintf(&script, `BEGIN;
INSERT INTO %[1]s.orders (id, customer, amount_cents) VALUES ('%[2]s', '%[3]s', %[4]d);
INSERT INTO %[1]s.outbox (id, aggregatetype, aggregateid, type, payload)
	VALUES (gen_random_uuid(), 'order', '%[2]s', 'OrderPlaced', convert_to('%[5]s', 'UTF8'));
COMMIT;
`, o.schema, ev.OrderID, ev.Customer, ev.AmountCents, payload)
			placed[ev.OrderID] = true
			fmt.Fprintf(out, "placed %s for %s (%d cents) with psql\n", ev.OrderID, ev.Customer, ev.AmountCents)
		}
		cmd := exec.CommandContext(ctx, o.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", o.dsn)
		cmd.Stdin = strings.NewReader(script.String())
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("psql writer: %w\n%s", err, b)
		}
	}

	// Read what the relay published, as a downstream service would:
	// read_committed, each event applied to the ledger at most once.
	ledger, err := newLedger(ctx, db, o.schema)
	if err != nil {
		return err
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics(outbox.DefaultTopic(&outbox.Event{AggregateType: "order"})),
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

// placeOrder writes the order and its event in one transaction and commits
// it, or rolls it back when decline is set (a payment check failing after
// both writes, say).
func placeOrder(ctx context.Context, db *sql.DB, tbl outbox.Table, schema string, ev orderPlaced, decline bool) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // no-op after Commit
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+schema+`.orders (id, customer, amount_cents) VALUES ($1, $2, $3)`,
		ev.OrderID, ev.Customer, ev.AmountCents); err != nil {
		return err
	}
	payload, _ := json.Marshal(ev)
	// Write is a plain INSERT: the table's trigger numbers the event within
	// its aggregate, so only writers of the same order wait for each other.
	if err := tbl.Write(ctx, tx, &outbox.Event{AggregateType: "order", AggregateID: ev.OrderID, Type: "OrderPlaced",
		Payload: payload, Headers: map[string]string{"customer": ev.Customer}}); err != nil {
		return err
	}
	if decline {
		return tx.Rollback()
	}
	if err := tx.Commit(); err != nil {
		return errors.Join(errors.New("committing the order"), err)
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
