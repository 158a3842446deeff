package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/exactly/exactly/eos/dedup"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ledger is the downstream consumer's state: one entry per order, written
// in the same PostgreSQL transaction as the event's dedup claim (keyed by
// the outbox id header), so an event redelivered after a crash is skipped
// and an event whose transaction rolled back is applied on redelivery.
type ledger struct {
	db     *sql.DB
	schema string
	seen   *dedup.SQLStore
}

func newLedger(ctx context.Context, db *sql.DB, schema string) (*ledger, error) {
	// No unique key on order_id on purpose: only the dedup claim keeps a
	// redelivered event from being booked twice.
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+schema+`.ledger (
		entry bigint GENERATED ALWAYS AS IDENTITY, order_id text NOT NULL, customer text NOT NULL,
		amount_cents bigint NOT NULL)`); err != nil {
		return nil, err
	}
	seen, err := dedup.NewPostgres(ctx, db, dedup.Options{Table: schema + ".ledger_processed"})
	if err != nil {
		return nil, err
	}
	return &ledger{db: db, schema: schema, seen: seen}, nil
}

// apply books the event unless its outbox id was already booked; it
// reports whether it booked it.
func (l *ledger) apply(ctx context.Context, rec *kgo.Record, ev orderPlaced) (bool, error) {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	st, err := l.seen.ClaimOutboxTx(ctx, tx, rec)
	if err != nil {
		return false, err
	}
	if st != dedup.Claimed {
		return false, nil // Duplicate (InFlight cannot last: claims here commit with the entry)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+l.schema+`.ledger (order_id, customer, amount_cents) VALUES ($1, $2, $3)`,
		ev.OrderID, ev.Customer, ev.AmountCents); err != nil {
		return false, err
	}
	return true, tx.Commit()
}

// replay reads the topic from the start again, as a consumer restarted
// without its offsets would, applies every event of placed, and reports
// how many the dedup claims skipped.
func (l *ledger) replay(ctx context.Context, bootstrap string, placed map[string]bool) (dups int, err error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics(ordersTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	seen := map[string]bool{}
	for len(seen) < len(placed) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return dups, fmt.Errorf("replay read %d of %d events: %w", len(seen), len(placed), ctx.Err())
		}
		for _, rec := range fs.Records() {
			var ev orderPlaced
			if json.Unmarshal(rec.Value, &ev) != nil || !placed[ev.OrderID] {
				continue
			}
			seen[ev.OrderID] = true
			booked, err := l.apply(ctx, rec, ev)
			if err != nil {
				return dups, err
			}
			if !booked {
				dups++
			}
		}
	}
	return dups, nil
}

// totals sums the ledger.
func (l *ledger) totals(ctx context.Context) (cents int64, entries int, err error) {
	err = l.db.QueryRowContext(ctx, `SELECT coalesce(sum(amount_cents), 0), count(*) FROM `+l.schema+`.ledger`).Scan(&cents, &entries)
	return cents, entries, err
}
