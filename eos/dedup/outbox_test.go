package dedup_test

import (
	"context"
	"errors"
	"testing"

	"github.com/exactly/exactly/eos/dedup"
	"github.com/twmb/franz-go/pkg/kgo"
)

func outboxRecord(id string) *kgo.Record {
	return &kgo.Record{Key: []byte("order-1"), Value: []byte("{}"),
		Headers: []kgo.RecordHeader{{Key: "type", Value: []byte("Placed")}, {Key: dedup.OutboxIDHeader, Value: []byte(id)}}}
}

// A redelivered outbox event (same id header) is Duplicate in the
// consumer's own transaction, so its ledger effect commits once; an event
// without the header is refused rather than deduped on a guess.
func TestClaimOutboxTx(t *testing.T) {
	ctx := context.Background()
	db, schema := pgSchema(t)
	s, err := dedup.NewPostgres(ctx, db, dedup.Options{Table: schema + ".processed"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE ` + schema + `.ledger (id text)`); err != nil {
		t.Fatal(err)
	}
	apply := func(rec *kgo.Record) dedup.Status {
		t.Helper()
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		st, err := s.ClaimOutboxTx(ctx, tx, rec)
		if err != nil {
			t.Fatal(err)
		}
		if st == dedup.Claimed {
			id, _ := dedup.OutboxID(rec)
			if _, err := tx.Exec(`INSERT INTO `+schema+`.ledger VALUES ($1)`, id); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		return st
	}
	a, b := outboxRecord("0b6f3c1e-0000-4000-8000-000000000001"), outboxRecord("0b6f3c1e-0000-4000-8000-000000000002")
	for i, c := range []struct {
		rec  *kgo.Record
		want dedup.Status
	}{{a, dedup.Claimed}, {a, dedup.Duplicate}, {b, dedup.Claimed}, {a, dedup.Duplicate}, {b, dedup.Duplicate}} {
		if st := apply(c.rec); st != c.want {
			t.Fatalf("delivery %d: %v, want %v", i, st, c.want)
		}
	}
	var n int
	db.QueryRow(`SELECT count(*) FROM ` + schema + `.ledger`).Scan(&n)
	if n != 2 {
		t.Fatalf("%d ledger rows after 5 deliveries of 2 events, want 2", n)
	}
	tx, _ := db.BeginTx(ctx, nil)
	defer tx.Rollback()
	if _, err := s.ClaimOutboxTx(ctx, tx, &kgo.Record{Value: []byte("x")}); !errors.Is(err, dedup.ErrNoOutboxID) {
		t.Fatalf("record without an id header: %v, want ErrNoOutboxID", err)
	}
}

// ProcessOutbox applies an event once however often it is delivered.
func TestProcessOutbox(t *testing.T) {
	ctx := context.Background()
	s, err := dedup.OpenSQLite(t.TempDir(), dedup.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	applied := 0
	rec := outboxRecord("0b6f3c1e-0000-4000-8000-000000000003")
	for range 3 {
		if _, err := dedup.ProcessOutbox(ctx, s, rec, dedup.DefaultLease, func(context.Context) error { applied++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if applied != 1 {
		t.Fatalf("applied %d times over 3 deliveries, want 1", applied)
	}
	if _, err := dedup.ProcessOutbox(ctx, s, &kgo.Record{}, dedup.DefaultLease, func(context.Context) error { return nil }); !errors.Is(err, dedup.ErrNoOutboxID) {
		t.Fatalf("record without an id header: %v, want ErrNoOutboxID", err)
	}
}
