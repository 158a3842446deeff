package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// RelayConfig configures a polling Relay.
type RelayConfig struct {
	// DB is the database holding the outbox (pgx stdlib driver).
	DB *sql.DB
	// Table is the outbox table.
	Table Table
	// Name identifies the relay: its Kafka transactional id is
	// "exactly-outbox-relay-<Name>" and its checkpoint records are keyed by
	// Name. A restarted relay must keep its Name; two relays with the same
	// Name fence each other (only the newest can commit).
	Name string
	// Kafka holds the client options: at least kgo.SeedBrokers.
	Kafka []kgo.Opt
	// CheckpointTopic holds the relay positions. Default
	// "exactly.outbox.relay.checkpoints".
	CheckpointTopic string
	// Topic routes an event; default "outbox.event.<aggregatetype>".
	Topic func(e *Event) string
	// BatchSize bounds the rows published per Kafka transaction; default 500.
	BatchSize int
	// PollInterval is the wait after an empty poll; default 200ms.
	PollInterval time.Duration
	// DeletePublished makes Run delete published rows (those up to the
	// committed position) after each Kafka commit, so the table does not
	// grow forever. Off by default: some want the rows as an audit log.
	DeletePublished bool
	// DeleteBatch bounds the rows one DELETE statement removes, so cleanup
	// never holds many row locks or one long transaction; default 1000.
	DeleteBatch int
	// Logger receives Run's errors and restarts; nil discards them.
	Logger *slog.Logger
}

// DefaultCheckpointTopic is RelayConfig.CheckpointTopic's default.
const DefaultCheckpointTopic = "exactly.outbox.relay.checkpoints"

// Relay publishes committed outbox rows to Kafka exactly once by polling.
//
// Rows come from any writer (plain INSERTs; Table.Init's trigger fills in
// txid, aggregateversion and readyxid). Two properties make polling safe
// without any lock on the writer side (docs/DESIGN.md proves them):
//
//   - No skipped row. A row is read only once readyxid < H, where H is
//     pg_snapshot_xmin of the reading statement's own snapshot: every
//     transaction with an id below H has ended, so every row with
//     readyxid < H (its writer's txid <= readyxid) is committed and visible
//     or rolled back, and no row with readyxid < H can appear later (a
//     running or future transaction has txid >= H, and readyxid >= txid).
//     Rows are published in the total order (readyxid, aggregatetype,
//     aggregateid, aggregateversion), whose prefix below H is frozen, so a
//     keyset cursor in that order never passes a row that appears later.
//   - Per-aggregate commit order. The trigger gives an aggregate's events
//     versions 1, 2, ... in commit order (the counter row's lock) and
//     readyxid non-decreasing with the version, so within an aggregate the
//     relay order is version order, and a version becomes publishable only
//     with (or after) all lower ones: the relay never publishes past a gap.
//
// Position: the relay's cursor (the last published row in that order) is
// stored as a record (key Name) in the checkpoint topic and produced INSIDE
// the same Kafka transaction as the events it covers. Events and position
// therefore commit or abort together. On start the relay:
//  1. commits a transaction holding a marker record: this initialises its
//     producer id, which fences any older instance with the same Name (its
//     open transaction is aborted, its later commits fail), and gives a
//     known offset below which every checkpoint is decided;
//  2. reads the checkpoint topic read_committed backwards from that marker,
//     in growing chunks, until it finds its own newest position (so a
//     start reads about as far back as its last checkpoint, not the whole
//     topic; a position found far back is rewritten to keep it so).
//
// So a crash at any point either committed events+position (skipped on
// restart) or neither (republished in a fresh transaction); a zombie cannot
// commit after its replacement started. Events of one aggregate share a
// key, hence a partition, and are produced in version order by one
// idempotent producer, so per-aggregate order holds in Kafka too.
//
// A transaction that stays open anywhere in the cluster (any database, or
// a prepared transaction) holds H back, and with it every row written
// after it started; Stats reports how far.
//
// The checkpoint topic is created with infinite retention: losing the last
// checkpoint would republish everything.
type Relay struct {
	cfg  RelayConfig
	info tableInfo
	k    *txnPublisher
	// pos is written by the goroutine that publishes and read by Stats
	// from others (metrics scrapes), hence posMu.
	posMu sync.Mutex
	pos   Cursor
	// clean: every row up to pos is known deleted (DeletePublished).
	clean bool
	log   *slog.Logger

	published, batches atomic.Int64
}

// Cursor is a polling relay's position: the last published row in relay
// order (ReadyXID, AggregateType, AggregateID, Version). The zero Cursor
// is before every row.
type Cursor struct {
	ReadyXID      uint64 `json:"readyxid"`
	AggregateType string `json:"aggregatetype"`
	AggregateID   string `json:"aggregateid"`
	Version       int64  `json:"version"`
}

// String formats c for logs.
func (c Cursor) String() string {
	if c == (Cursor{}) {
		return "start"
	}
	return fmt.Sprintf("readyxid %d, %s/%s v%d", c.ReadyXID, c.AggregateType, c.AggregateID, c.Version)
}

// NewRelay connects, checks the table (see Table.Init), fences older
// instances of the relay and recovers its position.
func NewRelay(ctx context.Context, cfg RelayConfig) (*Relay, error) {
	if cfg.DB == nil || cfg.Name == "" {
		return nil, errors.New("outbox: relay needs DB and Name")
	}
	if _, err := cfg.Table.name(); err != nil {
		return nil, err
	}
	if cfg.CheckpointTopic == "" {
		cfg.CheckpointTopic = DefaultCheckpointTopic
	}
	if cfg.Topic == nil {
		cfg.Topic = DefaultTopic
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	if cfg.DeleteBatch <= 0 {
		cfg.DeleteBatch = 1000
	}
	r := &Relay{cfg: cfg, log: cfg.Logger}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// Fail at start, not at the first poll, when the table is not ready.
	info, err := cfg.Table.check(ctx, cfg.DB)
	if err != nil {
		return nil, err
	}
	r.info = info
	r.k = newTxnPublisher(cfg.Kafka, "exactly-outbox-relay-"+cfg.Name, cfg.CheckpointTopic, cfg.Name)
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// DefaultTopic is the default route: "outbox.event.<aggregatetype>", as
// Debezium's outbox event router.
func DefaultTopic(e *Event) string { return "outbox.event." + e.AggregateType }

func (r *Relay) start(ctx context.Context) error {
	v, err := r.k.open(ctx)
	if err != nil {
		return err
	}
	var pos Cursor
	if v != nil {
		if len(v) > 0 && v[0] != '{' {
			r.k.close()
			return fmt.Errorf("outbox: checkpoint %q of relay %s is not a polling cursor: it is a CDC LSN (a CDC relay with the same name?) "+
				"or a seq of the relay before `exactly outbox init` (let that relay drain the table, then start this one under a new --name "+
				"and delete the published rows)", v, r.cfg.Name)
		}
		if err := json.Unmarshal(v, &pos); err != nil {
			r.k.close()
			return fmt.Errorf("outbox: checkpoint %q of relay %s: %w", v, r.cfg.Name, err)
		}
	}
	r.setPosition(pos)
	r.clean = false
	return nil
}

// Position is the last row this relay knows to be published.
func (r *Relay) Position() Cursor {
	r.posMu.Lock()
	defer r.posMu.Unlock()
	return r.pos
}

func (r *Relay) setPosition(c Cursor) {
	r.posMu.Lock()
	r.pos = c
	r.posMu.Unlock()
}

// payloadColumn reads the payload as bytes whatever its column type.
func (i tableInfo) payloadColumn() string {
	if i.jsonPayload {
		return "convert_to(payload::text, 'UTF8')"
	}
	return "payload"
}

// PublishBatch publishes up to BatchSize publishable rows after the
// position in one Kafka transaction together with the new position, and
// reports how many it published. After an error the relay's state is
// unknown: Close it and start a new one (Run does this), which recovers the
// committed position.
func (r *Relay) PublishBatch(ctx context.Context) (int, error) {
	n, _ := r.cfg.Table.name()
	// One statement, so the horizon and the rows come from one snapshot.
	// ORDER BY names the table's columns (o.): a bare name would mean
	// the output column of that name, here readyxid::text, and text
	// order puts "1000000" before "999999", so a batch taken at a
	// change in the xid's digit count would skip every row before it.
	rows, err := r.cfg.DB.QueryContext(ctx, `SELECT o.id::text, o.aggregatetype, o.aggregateid, o.type, `+r.info.payloadColumn()+`,
			o.headers::text, o.aggregateversion, o.readyxid::text
		FROM `+n+` o
		WHERE o.readyxid < pg_snapshot_xmin(pg_current_snapshot())
			AND (o.readyxid, o.aggregatetype, o.aggregateid, o.aggregateversion) > ($1::text::xid8, $2, $3, $4)
		ORDER BY o.readyxid, o.aggregatetype, o.aggregateid, o.aggregateversion
		LIMIT $5`, fmt.Sprint(r.pos.ReadyXID), r.pos.AggregateType, r.pos.AggregateID, r.pos.Version, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("outbox: polling: %w", err)
	}
	var recs []*kgo.Record
	var last Cursor
	for rows.Next() {
		var e Event
		var id, ready string
		var headers sql.NullString
		if err := rows.Scan(&id, &e.AggregateType, &e.AggregateID, &e.Type, &e.Payload, &headers, &e.Version, &ready); err != nil {
			rows.Close()
			return 0, err
		}
		if headers.Valid {
			if err := json.Unmarshal([]byte(headers.String), &e.Headers); err != nil {
				rows.Close()
				return 0, fmt.Errorf("outbox: row %s headers: %w", id, err)
			}
		}
		x, err := strconv.ParseUint(ready, 10, 64)
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("outbox: row %s readyxid %q: %w", id, ready, err)
		}
		last = Cursor{ReadyXID: x, AggregateType: e.AggregateType, AggregateID: e.AggregateID, Version: e.Version}
		recs = append(recs, eventRecord(r.cfg.Topic, &e, id))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	ckpt, _ := json.Marshal(last)
	if err := r.k.publish(ctx, recs, ckpt); err != nil {
		if r.k.crashBeforeCommit {
			// Tests count what a crashed relay left in its open
			// transaction.
			return len(recs), err
		}
		return 0, err
	}
	r.setPosition(last)
	r.clean = false
	r.published.Add(int64(len(recs)))
	r.batches.Add(1)
	return len(recs), nil
}

// cursorArgs are the query arguments that compare a row with c.
func cursorArgs(c Cursor) []any {
	return []any{fmt.Sprint(c.ReadyXID), c.AggregateType, c.AggregateID, c.Version}
}

// DeletePublished deletes the rows up to the committed position, at most
// DeleteBatch per statement, and reports how many it deleted.
//
// It is safe because the rows at or before the position in relay order are
// exactly the published ones, and no row can still appear there (see
// Relay). It never runs ahead of a Kafka commit: the position only moves
// after EndTransaction succeeded. The per-aggregate counters stay, so
// versions keep counting up.
func (r *Relay) DeletePublished(ctx context.Context) (int64, error) {
	n, _ := r.cfg.Table.name()
	var total int64
	for !r.clean && r.pos != (Cursor{}) {
		res, err := r.cfg.DB.ExecContext(ctx, `DELETE FROM `+n+` WHERE id IN
			(SELECT id FROM `+n+` WHERE (readyxid, aggregatetype, aggregateid, aggregateversion) <= ($1::text::xid8, $2, $3, $4)
			ORDER BY readyxid, aggregatetype, aggregateid, aggregateversion LIMIT $5)`,
			append(cursorArgs(r.pos), r.cfg.DeleteBatch)...)
		if err != nil {
			return total, fmt.Errorf("outbox: deleting published rows: %w", err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += k
		if k < int64(r.cfg.DeleteBatch) {
			r.clean = true
		}
	}
	return total, nil
}

// RelayStats is a polling relay's progress, for metrics.
type RelayStats struct {
	// Published and Batches count events and Kafka transactions this relay
	// committed since it was created.
	Published, Batches int64
	// LagRows counts committed rows after the position (publishable now or
	// held back by the horizon); LagSeconds is the age of the oldest of
	// them (from its created_at, the writer's transaction start).
	LagRows    int64
	LagSeconds float64
	// HeldBackRows counts committed rows the horizon still holds back;
	// HeldBackSeconds is the age of the oldest. HorizonXIDs is how many
	// transaction ids the horizon trails the next one: a large, growing
	// value means a long-open transaction somewhere in the cluster.
	HeldBackRows    int64
	HeldBackSeconds float64
	HorizonXIDs     int64
}

// Stats queries the table for the relay's lag and the horizon; it costs
// one index range scan over the unpublished rows.
func (r *Relay) Stats(ctx context.Context) (RelayStats, error) {
	n, _ := r.cfg.Table.name()
	st := RelayStats{Published: r.published.Load(), Batches: r.batches.Load()}
	pos := r.Position()
	err := r.cfg.DB.QueryRowContext(ctx, `WITH s AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin,
			pg_snapshot_xmax(pg_current_snapshot()) AS xmax)
		SELECT count(p.readyxid),
			coalesce(extract(epoch FROM now() - min(p.created_at)), 0)::float8,
			count(p.readyxid) FILTER (WHERE p.readyxid >= s.xmin),
			coalesce(extract(epoch FROM now() - min(p.created_at) FILTER (WHERE p.readyxid >= s.xmin)), 0)::float8,
			(s.xmax::text::numeric - s.xmin::text::numeric)::int8
		FROM s LEFT JOIN `+n+` p
			ON (p.readyxid, p.aggregatetype, p.aggregateid, p.aggregateversion) > ($1::text::xid8, $2, $3, $4)
		GROUP BY s.xmin, s.xmax`, cursorArgs(pos)...).Scan(
		&st.LagRows, &st.LagSeconds, &st.HeldBackRows, &st.HeldBackSeconds, &st.HorizonXIDs)
	if err != nil {
		return st, fmt.Errorf("outbox: relay stats: %w", err)
	}
	return st, nil
}

// Run publishes until ctx ends, deleting published rows if configured. On
// an error it closes the Kafka client and starts afresh (fence, recover
// position) after a pause, so a transient failure costs a republish-free
// restart, never a duplicate. A failed cleanup is only logged: the rows
// stay published and are deleted by a later pass.
func (r *Relay) Run(ctx context.Context) error {
	for {
		n, err := r.PublishBatch(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.log.Error("outbox relay: publishing failed; restarting", "relay", r.cfg.Name, "err", err)
			r.k.close()
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second):
				}
				if err = r.start(ctx); err == nil {
					r.log.Info("outbox relay: restarted", "relay", r.cfg.Name, "position", r.pos)
					break
				}
				r.log.Error("outbox relay: restart failed", "relay", r.cfg.Name, "err", err)
			}
			continue
		}
		if r.cfg.DeletePublished {
			if _, err := r.DeletePublished(ctx); err != nil && ctx.Err() == nil {
				r.log.Warn("outbox relay: cleanup failed; will retry", "relay", r.cfg.Name, "err", err)
			}
		}
		if n == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(r.cfg.PollInterval):
			}
		}
	}
}

// Close closes the Kafka client. An open transaction is left to be fenced
// by the next instance, exactly as a crash would.
func (r *Relay) Close() { r.k.close() }
