package sink

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Dialect selects the SQL spoken to the offsets table. Only the placeholder
// syntax differs; both dialects support the upsert with RETURNING that fence
// acquisition needs.
type Dialect int

const (
	// Postgres is PostgreSQL through database/sql (the pgx stdlib driver,
	// "pgx"). Use READ COMMITTED (the default) or stricter isolation.
	Postgres Dialect = iota
	// SQLite is modernc.org/sqlite ("sqlite"). Open it with
	// "_txlock=immediate" and a busy timeout, so a transaction takes the
	// write lock at BEGIN and concurrent writers queue instead of failing
	// with SQLITE_BUSY when they upgrade from reading to writing.
	SQLite
)

// String names the dialect for logs.
func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case SQLite:
		return "sqlite"
	}
	return fmt.Sprintf("Dialect(%d)", int(d))
}

// DefaultTable is the offsets table's name when Table.Name is empty.
const DefaultTable = "exactly_sink_offsets"

// Table is the offsets table: one row per (consumer group, topic,
// partition) holding the next offset to consume and the fence of the sink
// instance allowed to move it. It is the source of truth for consumer
// positions; offsets committed to Kafka (if enabled) are a copy for lag
// monitoring only.
type Table struct {
	// Name of the table; may be schema-qualified for PostgreSQL. Empty:
	// DefaultTable.
	Name string
	// Dialect of the database holding it.
	Dialect Dialect
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

func (t Table) name() (string, error) {
	n := t.Name
	if n == "" {
		n = DefaultTable
	}
	// The name is formatted into SQL, so only plain identifiers pass.
	if !identRE.MatchString(n) {
		return "", fmt.Errorf("sink: invalid table name %q", n)
	}
	if t.Dialect != Postgres && t.Dialect != SQLite {
		return "", fmt.Errorf("sink: unknown dialect %v", t.Dialect)
	}
	return n, nil
}

// q adapts PostgreSQL placeholders ($1) to SQLite's numbered form (?1).
func (t Table) q(query string) string {
	if t.Dialect == SQLite {
		return strings.ReplaceAll(query, "$", "?")
	}
	return query
}

// Schema returns the DDL that creates the offsets table.
//
// next_offset is -1 until the first record is handled (the partition then
// starts at Config.StartOffset). fence grows by one every time a sink
// instance is assigned the partition; a commit succeeds only while the row
// still carries the committing instance's fence, so an instance that lost
// the partition can no longer move its offset.
func (t Table) Schema() (string, error) {
	n, err := t.name()
	if err != nil {
		return "", err
	}
	return `CREATE TABLE IF NOT EXISTS ` + n + ` (
	consumer_group TEXT NOT NULL,
	topic TEXT NOT NULL,
	partition_id INTEGER NOT NULL,
	next_offset BIGINT NOT NULL,
	fence BIGINT NOT NULL,
	owner TEXT NOT NULL,
	updated_at BIGINT NOT NULL,
	PRIMARY KEY (consumer_group, topic, partition_id)
)`, nil
}

// CreateSchema creates the offsets table if it does not exist.
func (t Table) CreateSchema(ctx context.Context, db *sql.DB) error {
	ddl, err := t.Schema()
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, ddl); err != nil {
		return fmt.Errorf("sink: creating offsets table: %w", err)
	}
	return nil
}

// Position is one partition's stored state.
type Position struct {
	Topic     string
	Partition int32
	// NextOffset is the offset of the next record to handle; -1 if the
	// partition was assigned but nothing was handled yet.
	NextOffset int64
	// Fence is the fencing token of the last instance assigned the
	// partition.
	Fence int64
	// Owner is that instance's Config.Name and group member id.
	Owner string
}

// Positions reads the stored positions of group, sorted by topic and
// partition: what a restarted sink resumes from.
func (t Table) Positions(ctx context.Context, db *sql.DB, group string) ([]Position, error) {
	n, err := t.name()
	if err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, t.q(`SELECT topic, partition_id, next_offset, fence, owner FROM `+n+
		` WHERE consumer_group = $1 ORDER BY topic, partition_id`), group)
	if err != nil {
		return nil, fmt.Errorf("sink: reading positions: %w", err)
	}
	defer rows.Close()
	var out []Position
	for rows.Next() {
		var p Position
		if err := rows.Scan(&p.Topic, &p.Partition, &p.NextOffset, &p.Fence, &p.Owner); err != nil {
			return nil, fmt.Errorf("sink: reading positions: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// tp is a topic partition.
type tp struct {
	topic     string
	partition int32
}

// claim is what fence acquisition yields for one partition.
type claim struct {
	fence int64
	next  int64 // -1: nothing handled yet
}

// acquire bumps the fence of every partition in parts in one transaction and
// returns the new fences with the stored next offsets. The upsert takes the
// row lock, so it waits for a commit in flight by the previous owner and
// then reads that commit's offset: no record the previous owner committed is
// handed out again, and no later commit of the previous owner can succeed
// (its fence no longer matches). Rows are locked in sorted order so two
// acquirers cannot deadlock.
func (t Table) acquire(ctx context.Context, db *sql.DB, group, owner string, parts []tp) (map[tp]claim, error) {
	n, err := t.name()
	if err != nil {
		return nil, err
	}
	sort.Slice(parts, func(i, j int) bool {
		if parts[i].topic != parts[j].topic {
			return parts[i].topic < parts[j].topic
		}
		return parts[i].partition < parts[j].partition
	})
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	q := t.q(`INSERT INTO ` + n + ` AS o (consumer_group, topic, partition_id, next_offset, fence, owner, updated_at)
		VALUES ($1, $2, $3, -1, 1, $4, $5)
		ON CONFLICT (consumer_group, topic, partition_id) DO UPDATE
		SET fence = o.fence + 1, owner = excluded.owner, updated_at = excluded.updated_at
		RETURNING fence, next_offset`)
	out := make(map[tp]claim, len(parts))
	now := time.Now().UnixMilli()
	for _, p := range parts {
		var c claim
		if err := tx.QueryRowContext(ctx, q, group, p.topic, p.partition, owner, now).Scan(&c.fence, &c.next); err != nil {
			return nil, err
		}
		out[p] = c
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	return out, nil
}

// errFenced means the row's fence moved on: another instance was assigned
// the partition after us.
var errFenced = errors.New("sink: fenced: the partition was assigned to another sink instance")

// errStop marks errors that retrying cannot fix: the sink stops.
var errStop = errors.New("sink: unrecoverable")

// advance moves p's offset from prev to next inside tx, only if the row still
// carries fence. Zero rows updated is either fencing (the usual case) or a
// row whose offset changed under our fence, which would mean two writers
// hold one fence: that is reported, never papered over.
func (t Table) advance(ctx context.Context, tx *sql.Tx, group string, p tp, fence, prev, next int64) error {
	n, err := t.name()
	if err != nil {
		return err
	}
	res, err := tx.ExecContext(ctx, t.q(`UPDATE `+n+` SET next_offset = $1, updated_at = $2
		WHERE consumer_group = $3 AND topic = $4 AND partition_id = $5 AND fence = $6 AND next_offset = $7`),
		next, time.Now().UnixMilli(), group, p.topic, p.partition, fence, prev)
	if err != nil {
		return err
	}
	if k, err := res.RowsAffected(); err != nil {
		return err
	} else if k == 1 {
		return nil
	}
	cur, err := t.read(ctx, tx, group, p)
	if err != nil {
		return err
	}
	if cur.fence != fence {
		return errFenced
	}
	return fmt.Errorf("%w: %s/%d: stored offset is %d under our fence %d, expected %d (two writers with one fence?)",
		errStop, p.topic, p.partition, cur.next, fence, prev)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// read returns p's current fence and next offset.
func (t Table) read(ctx context.Context, q querier, group string, p tp) (claim, error) {
	n, err := t.name()
	if err != nil {
		return claim{}, err
	}
	var c claim
	err = q.QueryRowContext(ctx, t.q(`SELECT fence, next_offset FROM `+n+
		` WHERE consumer_group = $1 AND topic = $2 AND partition_id = $3`), group, p.topic, p.partition).Scan(&c.fence, &c.next)
	return c, err
}
