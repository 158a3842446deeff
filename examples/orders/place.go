package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/exactly/exactly/eos/outbox"
)

// orderPlaced is the event payload.
type orderPlaced struct {
	OrderID     string `json:"order_id"`
	Customer    string `json:"customer"`
	AmountCents int64  `json:"amount_cents"`
}

// setupTables creates the schema, the orders table and the outbox table
// (with what the relays need, see outbox.Table.Init). Running it again
// changes nothing.
func setupTables(ctx context.Context, db *sql.DB, schema string) (outbox.Table, error) {
	tbl := outbox.Table{Name: schema + ".outbox"}
	if _, err := db.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS `+schema); err != nil {
		return tbl, err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+schema+`.orders (
		id text PRIMARY KEY, customer text NOT NULL, amount_cents bigint NOT NULL,
		created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return tbl, err
	}
	return tbl, tbl.Init(ctx, db)
}

// writers say how orders are placed.
type writers struct {
	goOrders, psqlOrders, declineEvery int
	psql                               string
	dsn                                string
	// pause is each writer's wait between two orders.
	pause time.Duration
}

// placed is what the writers did: committed orders and rolled-back ones.
type placed struct {
	mu       sync.Mutex
	out      io.Writer
	orders   map[string]bool
	declined map[string]bool
}

func (p *placed) record(id string, committed bool, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if committed {
		p.orders[id] = true
	} else {
		p.declined[id] = true
	}
	fmt.Fprintln(p.out, line)
}

func newOrderID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "o-" + hex.EncodeToString(b[:])
}

// placeOrders runs the two writers side by side, the Go service
// (outbox.Table.Write) and a psql process with plain SQL, and reports each
// order once its transaction committed or rolled back. Every declineEvery-th
// order of each writer is declined: its transaction rolls back after both
// writes.
func placeOrders(ctx context.Context, db *sql.DB, tbl outbox.Table, schema string, w writers, out io.Writer) (*placed, error) {
	p := &placed{out: out, orders: map[string]bool{}, declined: map[string]bool{}}
	decline := func(i int) bool { return w.declineEvery > 0 && i%w.declineEvery == 0 }
	var wg sync.WaitGroup
	var goErr, psqlErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 1; i <= w.goOrders; i++ {
			ev := orderPlaced{OrderID: newOrderID(), Customer: fmt.Sprint("customer-", i%3), AmountCents: int64(1000 * i)}
			if err := placeOrder(ctx, db, tbl, schema, ev, decline(i)); err != nil {
				goErr = err
				return
			}
			if decline(i) {
				p.record(ev.OrderID, false, fmt.Sprintf("declined %s: transaction rolled back, neither the order nor its event exists", ev.OrderID))
			} else {
				p.record(ev.OrderID, true, fmt.Sprintf("placed %s for %s (%d cents)", ev.OrderID, ev.Customer, ev.AmountCents))
			}
			if !sleep(ctx, w.pause) {
				goErr = ctx.Err()
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		if w.psqlOrders > 0 {
			psqlErr = placeWithPsql(ctx, schema, w, decline, p)
		}
	}()
	wg.Wait()
	return p, errors.Join(goErr, psqlErr)
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// placeWithPsql is another language's writer: one psql process fed one
// transaction per order through a pipe, plain SQL and no library. psql
// echoes a line after each transaction, so an order is reported only once
// PostgreSQL has committed (or rolled back) it.
func placeWithPsql(ctx context.Context, schema string, w writers, decline func(int) bool, p *placed) error {
	cmd := exec.CommandContext(ctx, w.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", w.dsn)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("psql writer: %w", err)
	}
	orders := map[string]orderPlaced{}
	var mu sync.Mutex
	done := make(chan error, 1)
	go func() {
		// "committed <id>" or "rolledback <id>", one per transaction.
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			what, id, _ := strings.Cut(sc.Text(), " ")
			mu.Lock()
			ev, ok := orders[id]
			mu.Unlock()
			switch {
			case !ok:
				continue
			case what == "committed":
				p.record(id, true, fmt.Sprintf("placed %s for %s (%d cents) with psql", id, ev.Customer, ev.AmountCents))
			case what == "rolledback":
				p.record(id, false, fmt.Sprintf("declined %s with psql: transaction rolled back", id))
			}
		}
		done <- sc.Err()
	}()
	var werr error
	for i := 1; i <= w.psqlOrders && werr == nil; i++ {
		ev := orderPlaced{OrderID: newOrderID(), Customer: "customer-psql", AmountCents: int64(500 * i)}
		mu.Lock()
		orders[ev.OrderID] = ev
		mu.Unlock()
		payload, _ := json.Marshal(ev)
		end, echo := "COMMIT", "committed"
		if decline(i) {
			end, echo = "ROLLBACK", "rolledback"
		}
		_, werr = fmt.Fprintf(stdin, `BEGIN;
INSERT INTO %[1]s.orders (id, customer, amount_cents) VALUES ('%[2]s', '%[3]s', %[4]d);
INSERT INTO %[1]s.outbox (id, aggregatetype, aggregateid, type, payload)
	VALUES (gen_random_uuid(), 'order', '%[2]s', 'OrderPlaced', convert_to('%[5]s', 'UTF8'));
%[6]s;
\echo %[7]s %[2]s
`, schema, ev.OrderID, ev.Customer, ev.AmountCents, payload, end, echo)
		if werr == nil && !sleep(ctx, w.pause) {
			werr = ctx.Err()
		}
	}
	stdin.Close()
	rerr := <-done
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("psql writer: %w\n%s", err, stderr.String())
	}
	if werr != nil {
		return fmt.Errorf("psql writer: %w", werr)
	}
	return rerr
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
