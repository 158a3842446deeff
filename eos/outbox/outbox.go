// Package outbox is the transactional outbox: an application writes its
// business rows and an outbox row in ONE database transaction (Write), and a
// relay publishes committed outbox rows to Kafka (Relay). Either both the
// business change and the event exist, or neither does; the relay turns
// "exists in the table" into "published exactly once".
//
// The table follows Debezium's outbox convention (id uuid, aggregatetype,
// aggregateid, type, payload, plus optional headers), and two relays drain
// it: Relay polls it, CDCRelay follows PostgreSQL's logical replication
// stream (pgoutput). Both commit their position in the same Kafka
// transaction as the events (see checkpoint.go). Events are routed to topic
// "outbox.event.<aggregatetype>" (Debezium's default), keyed by aggregateid
// (so one aggregate's events share a partition and keep their order), with
// headers "id" (the row id, for consumer-side dedup) and "type".
//
// One extra column, seq, gives the relay a commit-ordered cursor: Write
// takes a transaction-scoped advisory lock before drawing seq, so seq order
// is commit order (see Write). This is what lets a polling relay never skip a
// row whose transaction commits late.
package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

// Event is one outbox row.
type Event struct {
	// ID identifies the event; consumers dedup on it. Zero: a random
	// (version 4) UUID is generated.
	ID [16]byte
	// AggregateType names the kind of entity ("order"); it picks the topic.
	AggregateType string
	// AggregateID identifies the entity ("order-42"); it is the Kafka key.
	AggregateID string
	// Type names the event ("OrderCreated"); it becomes the "type" header.
	Type string
	// Payload is the event body, stored as bytea and published as is.
	Payload []byte
	// Headers are extra Kafka headers, stored as jsonb.
	Headers map[string]string
}

// Table names an outbox table; the zero value is "outbox" in the search
// path. The name may be schema-qualified.
type Table struct {
	Name string
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

func (t Table) name() (string, error) {
	n := t.Name
	if n == "" {
		n = "outbox"
	}
	// The name is formatted into SQL, so only plain identifiers pass.
	if !identRE.MatchString(n) {
		return "", fmt.Errorf("outbox: invalid table name %q", n)
	}
	return n, nil
}

// lockKey is the advisory lock that orders outbox writers; it is derived
// from the table name so separate outboxes do not serialise each other.
func (t Table) lockKey() int64 {
	n, _ := t.name()
	var h uint64 = 1469598103934665603
	for i := 0; i < len(n); i++ {
		h = (h ^ uint64(n[i])) * 1099511628211
	}
	return int64(h)
}

// Schema returns the DDL that creates the table and its sequence.
func (t Table) Schema() (string, error) {
	n, err := t.name()
	if err != nil {
		return "", err
	}
	return `CREATE TABLE IF NOT EXISTS ` + n + ` (
	id uuid PRIMARY KEY,
	aggregatetype varchar(255) NOT NULL,
	aggregateid varchar(255) NOT NULL,
	type varchar(255) NOT NULL,
	payload bytea,
	headers jsonb,
	-- commit-ordered relay cursor: drawn under the outbox advisory lock
	seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
	created_at timestamptz NOT NULL DEFAULT now()
)`, nil
}

// CreateSchema creates the table if it does not exist.
func (t Table) CreateSchema(ctx context.Context, db *sql.DB) error {
	ddl, err := t.Schema()
	if err != nil {
		return err
	}
	_, err = db.ExecContext(ctx, ddl)
	return err
}

func (t Table) insert(e *Event) (lock, ins string, args []any, err error) {
	n, err := t.name()
	if err != nil {
		return "", "", nil, err
	}
	if e.AggregateType == "" || e.AggregateID == "" || e.Type == "" {
		return "", "", nil, fmt.Errorf("outbox: aggregatetype, aggregateid and type are required")
	}
	if e.ID == [16]byte{} {
		_, _ = rand.Read(e.ID[:])
		e.ID[6] = e.ID[6]&0x0f | 0x40
		e.ID[8] = e.ID[8]&0x3f | 0x80
	}
	var headers any
	if len(e.Headers) > 0 {
		b, err := json.Marshal(e.Headers)
		if err != nil {
			return "", "", nil, err
		}
		headers = string(b)
	}
	return fmt.Sprintf("SELECT pg_advisory_xact_lock(%d)", t.lockKey()),
		`INSERT INTO ` + n + ` (id, aggregatetype, aggregateid, type, payload, headers)
			VALUES ($1, $2, $3, $4, $5, $6::jsonb)`,
		[]any{UUIDString(e.ID), e.AggregateType, e.AggregateID, e.Type, e.Payload, headers}, nil
}

// Write inserts e into the outbox within tx, the caller's transaction that
// also holds the business write; the caller commits. e.ID is filled in if
// zero.
//
// Write first takes a transaction-scoped advisory lock, held until tx ends,
// and only then draws seq. Two outbox writers therefore cannot interleave
// between "draw seq" and "commit", so seq order is commit order and a relay
// reading "seq > last published" never skips a row that commits late. The
// price: outbox writers serialise from their first Write to their commit, so
// call Write as the last statement before Commit.
func (t Table) Write(ctx context.Context, tx *sql.Tx, e *Event) error {
	lock, ins, args, err := t.insert(e)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, lock); err != nil {
		return fmt.Errorf("outbox: lock: %w", err)
	}
	if _, err := tx.ExecContext(ctx, ins, args...); err != nil {
		return fmt.Errorf("outbox: insert: %w", err)
	}
	return nil
}

// WritePgx is Write for a pgx transaction.
func (t Table) WritePgx(ctx context.Context, tx pgx.Tx, e *Event) error {
	lock, ins, args, err := t.insert(e)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, lock); err != nil {
		return fmt.Errorf("outbox: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, ins, args...); err != nil {
		return fmt.Errorf("outbox: insert: %w", err)
	}
	return nil
}

// Write is Table{}.Write: the default "outbox" table.
func Write(ctx context.Context, tx *sql.Tx, e *Event) error { return Table{}.Write(ctx, tx, e) }

// WritePgx is Table{}.WritePgx: the default "outbox" table.
func WritePgx(ctx context.Context, tx pgx.Tx, e *Event) error { return Table{}.WritePgx(ctx, tx, e) }

// UUIDString formats a UUID in its canonical 8-4-4-4-12 form.
func UUIDString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
