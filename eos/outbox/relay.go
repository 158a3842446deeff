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
	// DeletePublished makes Run delete published rows (seq up to the
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
// Position: the relay's cursor is the last published seq, stored as a
// record (key Name, value seq) in the checkpoint topic and produced INSIDE
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
// commit after its replacement started. Rows are read in seq order, which
// Write makes commit order, so no late-committing row is skipped; events of
// one aggregate share a key, hence a partition, and are produced in seq order
// by one idempotent producer, so per-aggregate order holds.
//
// The checkpoint topic is created with infinite retention: losing the last
// checkpoint would republish everything.
type Relay struct {
	cfg RelayConfig
	k   *txnPublisher
	pos int64
	// deleted is the seq up to which published rows are known deleted.
	deleted int64
	log     *slog.Logger
}

// NewRelay connects, fences older instances of the relay and recovers its
// position.
func NewRelay(ctx context.Context, cfg RelayConfig) (*Relay, error) {
	if cfg.DB == nil || cfg.Name == "" {
		return nil, errors.New("outbox: relay needs DB and Name")
	}
	n, err := cfg.Table.name()
	if err != nil {
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
	// Fail at start, not at the first poll, when the table is missing.
	if _, err := cfg.DB.ExecContext(ctx, `SELECT seq, id, aggregatetype, aggregateid, type, payload, headers FROM `+n+` LIMIT 0`); err != nil {
		return nil, fmt.Errorf("outbox: table %s: %w", n, err)
	}
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
	pos := int64(0)
	if v != nil {
		if pos, err = strconv.ParseInt(string(v), 10, 64); err != nil {
			r.k.close()
			return fmt.Errorf("outbox: checkpoint %q of relay %s is not a seq (is a CDC relay using the same name?)", v, r.cfg.Name)
		}
	}
	r.pos = pos
	return nil
}

// Position is the last seq this relay knows to be published.
func (r *Relay) Position() int64 { return r.pos }

// PublishBatch publishes up to BatchSize rows after the position in one
// Kafka transaction together with the new position, and reports how many it
// published. After an error the relay's state is unknown: Close it and
// start a new one (Run does this), which recovers the committed position.
func (r *Relay) PublishBatch(ctx context.Context) (int, error) {
	n, _ := r.cfg.Table.name()
	rows, err := r.cfg.DB.QueryContext(ctx, `SELECT seq, id::text, aggregatetype, aggregateid, type, payload, headers::text
		FROM `+n+` WHERE seq > $1 ORDER BY seq LIMIT $2`, r.pos, r.cfg.BatchSize)
	if err != nil {
		return 0, fmt.Errorf("outbox: polling: %w", err)
	}
	var recs []*kgo.Record
	var last int64
	for rows.Next() {
		var e Event
		var id string
		var headers sql.NullString
		if err := rows.Scan(&last, &id, &e.AggregateType, &e.AggregateID, &e.Type, &e.Payload, &headers); err != nil {
			rows.Close()
			return 0, err
		}
		if headers.Valid {
			if err := json.Unmarshal([]byte(headers.String), &e.Headers); err != nil {
				rows.Close()
				return 0, fmt.Errorf("outbox: row %s headers: %w", id, err)
			}
		}
		recs = append(recs, eventRecord(r.cfg.Topic, &e, id))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	if err := r.k.publish(ctx, recs, strconv.AppendInt(nil, last, 10)); err != nil {
		if r.k.crashBeforeCommit {
			// Tests count what a crashed relay left in its open
			// transaction.
			return len(recs), err
		}
		return 0, err
	}
	r.pos = last
	return len(recs), nil
}

// DeletePublished deletes the rows up to the committed position, at most
// DeleteBatch per statement, and reports how many it deleted.
//
// It is safe because Write makes seq order commit order: once the relay's
// checkpoint (committed with the events in Kafka) says seq N, every row
// with seq <= N has been published, and no transaction can still commit a
// row with a smaller seq. It never runs ahead of a Kafka commit: the
// position only moves after EndTransaction succeeded.
func (r *Relay) DeletePublished(ctx context.Context) (int64, error) {
	n, _ := r.cfg.Table.name()
	var total int64
	for r.deleted < r.pos {
		res, err := r.cfg.DB.ExecContext(ctx, `DELETE FROM `+n+` WHERE seq IN
			(SELECT seq FROM `+n+` WHERE seq <= $1 ORDER BY seq LIMIT $2)`, r.pos, r.cfg.DeleteBatch)
		if err != nil {
			return total, fmt.Errorf("outbox: deleting published rows: %w", err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return total, err
		}
		total += k
		if k < int64(r.cfg.DeleteBatch) {
			r.deleted = r.pos
		}
	}
	return total, nil
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
