// Package outbox is the transactional outbox: an application writes its
// business rows and an outbox row in ONE database transaction, and a relay
// publishes committed outbox rows to Kafka. Either both the business change
// and the event exist, or neither does; the relay turns "exists in the
// table" into "published exactly once".
//
// The table follows Debezium's outbox convention (id uuid, aggregatetype,
// aggregateid, type, payload bytea or jsonb, plus optional headers), so any
// writer in any language inserts into it with a plain
//
//	INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) VALUES (...)
//
// and takes no lock of its own. Table.Init (or `exactly outbox init`) adds
// what the relays need: a txid column (the writer's transaction id) and a
// BEFORE INSERT trigger that numbers each aggregate's events (the
// aggregateversion column, from a per-aggregate counter row whose lock
// orders only writers of the same aggregate) and records readyxid, the
// newest transaction id among the event and its aggregate's earlier events.
// Write is a Go convenience for the same INSERT.
//
// Two relays drain the table: Relay polls it, publishing a row only once
// every transaction up to its readyxid has ended (see Relay for why that
// neither skips a row nor breaks an aggregate's order), and CDCRelay follows
// PostgreSQL's logical replication stream (pgoutput), after an initial
// snapshot of the rows already there. Both commit their position in the same
// Kafka transaction as the events (see checkpoint.go). Events are routed to
// topic "outbox.event.<aggregatetype>" (Debezium's default), keyed by
// aggregateid (so one aggregate's events share a partition and keep their
// order), with headers "id" (the row id, for consumer-side dedup), "type"
// and "aggregateversion".
package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

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
	// Payload is the event body, published as is (a jsonb payload column
	// holds it as JSON text, which must then be valid JSON).
	Payload []byte
	// Headers are extra Kafka headers, stored as jsonb.
	Headers map[string]string
	// Version is the event's aggregate version, set by the table's trigger
	// (1, 2, ... per aggregate, gap-free, in commit order). Writers leave it
	// zero; relays fill it in and publish it as the "aggregateversion"
	// header.
	Version int64
}

// Table names an outbox table; the zero value is "outbox" in the search
// path. The name may be schema-qualified.
type Table struct {
	Name string
	// PayloadType is the payload column's type when Init creates the
	// table: "bytea" (the default) or "jsonb". An existing table keeps its
	// own; the relays read either.
	PayloadType string
}

var identRE = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]{0,47}$`)

func (t Table) name() (string, error) {
	n := t.Name
	if n == "" {
		n = "outbox"
	}
	// The name is formatted into SQL, so only plain identifiers pass; the
	// table part is short enough for its suffixed objects (…_aggregates) to
	// stay within PostgreSQL's 63-byte identifiers.
	if !identRE.MatchString(n) {
		return "", fmt.Errorf("outbox: invalid table name %q (plain identifiers, optionally schema-qualified, table part at most 48 bytes)", n)
	}
	return n, nil
}

// objectNames are the names Init gives the table's helper objects: the
// per-aggregate counter table and the trigger function (in the table's
// schema, qualified like the table), the trigger and the two indexes (named
// without a schema, as PostgreSQL wants; they live in the table's schema).
type objectNames struct {
	table, aggregates, function, trigger, versionIndex, relayIndex string
}

func (t Table) objects() (objectNames, error) {
	n, err := t.name()
	if err != nil {
		return objectNames{}, err
	}
	base := n[strings.LastIndexByte(n, '.')+1:]
	return objectNames{table: n, aggregates: n + "_aggregates", function: n + "_order", trigger: base + "_order",
		versionIndex: base + "_aggregate_version", relayIndex: base + "_relay_order"}, nil
}

// Schema returns the DDL that Init runs: it creates the table, or migrates
// an existing one (adding the txid, aggregateversion and readyxid columns,
// numbering rows already there), and (re)creates the counter table, the
// trigger and the indexes. Every statement is idempotent; Init runs them in
// one transaction. Needs PostgreSQL 14 or later.
func (t Table) Schema() (string, error) {
	o, err := t.objects()
	if err != nil {
		return "", err
	}
	payload := t.PayloadType
	switch payload {
	case "":
		payload = "bytea"
	case "bytea", "jsonb":
	default:
		return "", fmt.Errorf("outbox: payload type %q: use bytea or jsonb", payload)
	}
	r := strings.NewReplacer("{table}", o.table, "{aggregates}", o.aggregates, "{function}", o.function,
		"{trigger}", o.trigger, "{versionIndex}", o.versionIndex, "{relayIndex}", o.relayIndex, "{payload}", payload)
	return r.Replace(schemaTemplate), nil
}

// schemaTemplate is Schema's DDL with the object names left as {placeholders}.
//
// The trigger is what makes plain INSERTs from any writer safe to relay:
//   - txid is forced to the inserting (top-level) transaction's id, whatever
//     the writer supplied;
//   - the counter row's upsert takes a row lock held until the writer's
//     transaction ends, so writers of one aggregate serialise from their
//     first event to their commit, and writers of different aggregates do
//     not wait for each other; the next writer of the aggregate reads the
//     committed counter, so versions follow commit order and a rollback
//     (or a rolled-back savepoint) leaves no gap;
//   - readyxid carries the newest txid of the aggregate so far, which the
//     polling relay uses as the row's publication horizon.
const schemaTemplate = `CREATE TABLE IF NOT EXISTS {table} (
	id uuid PRIMARY KEY,
	aggregatetype varchar(255) NOT NULL,
	aggregateid varchar(255) NOT NULL,
	type varchar(255) NOT NULL,
	payload {payload},
	headers jsonb,
	txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
	aggregateversion bigint,
	readyxid xid8,
	created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS headers jsonb;
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
-- A volatile default fills rows already there with this transaction's id.
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS aggregateversion bigint;
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS readyxid xid8;
CREATE TABLE IF NOT EXISTS {aggregates} (
	aggregatetype varchar(255) NOT NULL,
	aggregateid varchar(255) NOT NULL,
	version bigint NOT NULL,
	readyxid xid8 NOT NULL,
	PRIMARY KEY (aggregatetype, aggregateid)
);
-- Rows written before the trigger existed get versions in their old order
-- (seq if the table has it) after any their aggregate already has.
DO $migrate$
DECLARE
	ord text := 'o.created_at, o.id';
	numbered bigint;
BEGIN
	IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{table}'::regclass AND attname = 'seq' AND NOT attisdropped) THEN
		ord := 'o.seq';
	END IF;
	EXECUTE format($q$
		WITH numbered AS (
			SELECT o.id, coalesce(a.version, 0) + row_number() OVER (PARTITION BY o.aggregatetype, o.aggregateid ORDER BY %s) AS v
			FROM {table} o LEFT JOIN {aggregates} a USING (aggregatetype, aggregateid)
			WHERE o.aggregateversion IS NULL)
		UPDATE {table} o SET aggregateversion = numbered.v, readyxid = pg_current_xact_id()
		FROM numbered WHERE o.id = numbered.id$q$, ord);
	GET DIAGNOSTICS numbered = ROW_COUNT;
	IF numbered > 0 THEN
		INSERT INTO {aggregates} AS a (aggregatetype, aggregateid, version, readyxid)
			SELECT aggregatetype, aggregateid, max(aggregateversion), pg_current_xact_id()
			FROM {table} GROUP BY aggregatetype, aggregateid
			ON CONFLICT (aggregatetype, aggregateid) DO UPDATE
			SET version = greatest(a.version, EXCLUDED.version), readyxid = greatest(a.readyxid, EXCLUDED.readyxid);
	END IF;
END
$migrate$;
ALTER TABLE {table} ALTER COLUMN aggregateversion SET NOT NULL, ALTER COLUMN readyxid SET NOT NULL;
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $fn$
BEGIN
	NEW.txid := pg_current_xact_id();
	INSERT INTO {aggregates} AS a (aggregatetype, aggregateid, version, readyxid)
		VALUES (NEW.aggregatetype, NEW.aggregateid, 1, NEW.txid)
		ON CONFLICT (aggregatetype, aggregateid) DO UPDATE
		SET version = a.version + 1, readyxid = greatest(a.readyxid, EXCLUDED.readyxid)
		RETURNING version, readyxid INTO NEW.aggregateversion, NEW.readyxid;
	RETURN NEW;
END
$fn$;
CREATE OR REPLACE TRIGGER {trigger} BEFORE INSERT ON {table}
	FOR EACH ROW EXECUTE FUNCTION {function}();
CREATE UNIQUE INDEX IF NOT EXISTS {versionIndex} ON {table} (aggregatetype, aggregateid, aggregateversion);
CREATE INDEX IF NOT EXISTS {relayIndex} ON {table} (readyxid, aggregatetype, aggregateid, aggregateversion);
`

// Init creates the table or migrates it to what the relays need (see
// Schema), in one transaction. Running it again changes nothing; running
// it on a table written by the old locking Write numbers the rows already
// there. It takes an ACCESS EXCLUSIVE lock on the table while it runs.
func (t Table) Init(ctx context.Context, db *sql.DB) error {
	ddl, err := t.Schema()
	if err != nil {
		return err
	}
	o, _ := t.objects()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Two Inits racing on CREATE … IF NOT EXISTS can still collide in the
	// catalog; one at a time per table.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "exactly.outbox.init:"+o.table); err != nil {
		return fmt.Errorf("outbox: init %s: %w", o.table, err)
	}
	if _, err := tx.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("outbox: init %s: %w", o.table, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("outbox: init %s: %w", o.table, err)
	}
	return nil
}

// CreateSchema is Init, kept for callers of the older name.
func (t Table) CreateSchema(ctx context.Context, db *sql.DB) error { return t.Init(ctx, db) }

// ErrNotInitialized is wrapped by the relays' errors when the table lacks
// a column, the trigger or an index that Init adds.
var ErrNotInitialized = errors.New("outbox table is not initialised")

// tableInfo is what a relay learns about the table at start.
type tableInfo struct {
	schema, relname string
	jsonPayload     bool
}

// table is the table's name, quoted, as the catalog resolved it.
func (i tableInfo) table() string { return pgx.Identifier{i.schema, i.relname}.Sanitize() }

// check verifies that the table has everything Init adds and reports the
// payload type; a table that lacks something yields an error that says
// what is missing and the command that fixes it.
func (t Table) check(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (tableInfo, error) {
	o, err := t.objects()
	if err != nil {
		return tableInfo{}, err
	}
	var info tableInfo
	var payload sql.NullString
	var cols []byte
	var trig, idx bool
	err = q.QueryRowContext(ctx, `SELECT n.nspname, c.relname,
		(SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = c.oid AND attname = 'payload' AND NOT attisdropped),
		(SELECT coalesce(json_agg(attname), '[]') FROM pg_attribute WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped),
		EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = c.oid AND tgname = $2 AND tgenabled <> 'D'),
		EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid AND ic.relname = $3)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)`,
		o.table, o.trigger, o.relayIndex).Scan(&info.schema, &info.relname, &payload, &cols, &trig, &idx)
	fix := fmt.Sprintf("run `exactly outbox init --dsn DSN --table %s` (or Table.Init; `--print` shows the DDL)", o.table)
	if errors.Is(err, sql.ErrNoRows) {
		return info, fmt.Errorf("outbox: table %s does not exist: %w; %s", o.table, ErrNotInitialized, fix)
	}
	if err != nil {
		return info, fmt.Errorf("outbox: looking up table %s: %w", o.table, err)
	}
	var have []string
	if err := json.Unmarshal(cols, &have); err != nil {
		return info, fmt.Errorf("outbox: columns of %s: %w", o.table, err)
	}
	var missing []string
	for _, c := range []string{"id", "aggregatetype", "aggregateid", "type", "payload", "headers", "txid", "aggregateversion", "readyxid", "created_at"} {
		if !slices.Contains(have, c) {
			missing = append(missing, "column "+c)
		}
	}
	if !trig {
		missing = append(missing, "trigger "+o.trigger)
	}
	if !idx {
		missing = append(missing, "index "+o.relayIndex)
	}
	if len(missing) > 0 {
		return info, fmt.Errorf("outbox: table %s lacks %s: %w; %s", o.table, strings.Join(missing, ", "), ErrNotInitialized, fix)
	}
	switch payload.String {
	case "bytea":
	case "jsonb", "json":
		info.jsonPayload = true
	default:
		return info, fmt.Errorf("outbox: %s.payload is %s; use bytea or jsonb", o.table, payload.String)
	}
	return info, nil
}

func (t Table) insert(e *Event) (ins string, args []any, err error) {
	n, err := t.name()
	if err != nil {
		return "", nil, err
	}
	if e.AggregateType == "" || e.AggregateID == "" || e.Type == "" {
		return "", nil, fmt.Errorf("outbox: aggregatetype, aggregateid and type are required")
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
			return "", nil, err
		}
		headers = string(b)
	}
	return `INSERT INTO ` + n + ` (id, aggregatetype, aggregateid, type, payload, headers)
			VALUES ($1, $2, $3, $4, $5, $6::jsonb)`,
		[]any{UUIDString(e.ID), e.AggregateType, e.AggregateID, e.Type, e.Payload, headers}, nil
}

// Write inserts e into the outbox within tx, the caller's transaction that
// also holds the business write; the caller commits. e.ID is filled in if
// zero.
//
// It is the same plain INSERT any other writer may use: the table's
// trigger (see Init) numbers the event within its aggregate. That takes the
// aggregate's counter row lock until tx ends, so concurrent transactions
// writing events of the SAME aggregate wait for each other (that is what
// makes the version order their commit order) while writers of different
// aggregates do not. Call Write late in a long transaction to hold the
// aggregate's lock briefly. A transaction that writes events of several
// aggregates locks them in the order it first writes each: write them in
// one order everywhere (say sorted), or be ready to retry on
// deadlock_detected (SQLSTATE 40P01), as with any row locks.
func (t Table) Write(ctx context.Context, tx *sql.Tx, e *Event) error {
	ins, args, err := t.insert(e)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, ins, args...); err != nil {
		return fmt.Errorf("outbox: insert: %w", err)
	}
	return nil
}

// WritePgx is Write for a pgx transaction.
func (t Table) WritePgx(ctx context.Context, tx pgx.Tx, e *Event) error {
	ins, args, err := t.insert(e)
	if err != nil {
		return err
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
