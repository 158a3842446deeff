package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
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
}

// DefaultCheckpointTopic is RelayConfig.CheckpointTopic's default.
const DefaultCheckpointTopic = "exactly.outbox.relay.checkpoints"

// Relay publishes committed outbox rows to Kafka exactly once.
//
// Position: the relay's cursor is the last published seq, stored as a
// record (key Name, value seq) in the checkpoint topic and produced INSIDE
// the same Kafka transaction as the events it covers. Events and position
// therefore commit or abort together. On start the relay:
//  1. commits a transaction holding a marker record: this initialises its
//     producer id, which fences any older instance with the same Name (its
//     open transaction is aborted, its later commits fail), and gives a
//     known offset below which every checkpoint is decided;
//  2. reads the checkpoint topic read_committed up to that marker and takes
//     the last position for Name.
//
// So a crash at any point either committed events+position (skipped on
// restart) or neither (republished in a fresh transaction); a zombie cannot
// commit after its replacement started. Rows are read in seq order, which
// Write makes commit order, so no late-committing row is skipped; events of
// one aggregate share a key, hence a partition, and are produced in seq order
// by one idempotent producer, so per-aggregate order holds.
//
// The checkpoint topic is created with infinite retention (losing the last
// checkpoint would republish everything) and is read from its start on each
// restart: it grows by one record per batch until compaction exists.
type Relay struct {
	cfg RelayConfig
	cl  *kgo.Client
	pos int64

	// crashBeforeCommit, set by tests, makes PublishBatch produce a batch
	// and return without ending the transaction, as a crash would.
	crashBeforeCommit bool
}

// NewRelay connects, fences older instances of the relay and recovers its
// position.
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
		cfg.Topic = func(e *Event) string { return "outbox.event." + e.AggregateType }
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	r := &Relay{cfg: cfg}
	if err := r.start(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Relay) start(ctx context.Context) error {
	cl, err := kgo.NewClient(append(append([]kgo.Opt{}, r.cfg.Kafka...),
		kgo.TransactionalID("exactly-outbox-relay-"+r.cfg.Name),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.TransactionTimeout(time.Minute),
		// Keys must pick partitions the same way every time so one
		// aggregate stays on one partition.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)...)
	if err != nil {
		return err
	}
	r.cl = cl
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, 1, -1, map[string]*string{"retention.ms": ptr("-1")}, r.cfg.CheckpointTopic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		cl.Close()
		return fmt.Errorf("outbox: creating checkpoint topic: %w", err)
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	marker := "marker:" + hex.EncodeToString(nonce[:])
	if err := cl.BeginTransaction(); err != nil {
		cl.Close()
		return err
	}
	res := cl.ProduceSync(ctx, &kgo.Record{Topic: r.cfg.CheckpointTopic, Partition: 0, Key: []byte(r.cfg.Name), Value: []byte(marker)})
	if err := res.FirstErr(); err != nil {
		_ = cl.EndTransaction(ctx, kgo.TryAbort)
		cl.Close()
		return fmt.Errorf("outbox: writing start marker: %w", err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		cl.Close()
		return fmt.Errorf("outbox: committing start marker: %w", err)
	}
	pos, err := r.readPosition(ctx, res[0].Record.Offset, marker)
	if err != nil {
		cl.Close()
		return err
	}
	r.pos = pos
	return nil
}

func ptr[T any](v T) *T { return &v }

// readPosition scans the checkpoint topic read_committed up to the marker.
func (r *Relay) readPosition(ctx context.Context, markerOffset int64, marker string) (int64, error) {
	rd, err := kgo.NewClient(append(append([]kgo.Opt{}, r.cfg.Kafka...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{r.cfg.CheckpointTopic: {0: kgo.NewOffset().AtStart()}}),
	)...)
	if err != nil {
		return 0, err
	}
	defer rd.Close()
	var pos int64
	for {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return 0, fmt.Errorf("outbox: reading checkpoints: %w", ferr)
		}
		for _, rec := range fs.Records() {
			if rec.Offset > markerOffset {
				return pos, nil
			}
			if string(rec.Key) != r.cfg.Name {
				continue
			}
			if string(rec.Value) == marker {
				return pos, nil
			}
			if v, err := strconv.ParseInt(string(rec.Value), 10, 64); err == nil {
				pos = v
			}
		}
	}
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
		rec := &kgo.Record{Topic: r.cfg.Topic(&e), Key: []byte(e.AggregateID), Value: e.Payload,
			Headers: []kgo.RecordHeader{{Key: "id", Value: []byte(id)}, {Key: "type", Value: []byte(e.Type)}}}
		for k, v := range e.Headers {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		recs = append(recs, rec)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	recs = append(recs, &kgo.Record{Topic: r.cfg.CheckpointTopic, Partition: 0,
		Key: []byte(r.cfg.Name), Value: strconv.AppendInt(nil, last, 10)})

	if err := r.cl.BeginTransaction(); err != nil {
		return 0, err
	}
	var mu sync.Mutex
	var perr error
	for _, rec := range recs {
		r.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil && perr == nil {
				perr = err
			}
		})
	}
	if err := r.cl.Flush(ctx); err != nil {
		return 0, err
	}
	if r.crashBeforeCommit {
		return len(recs) - 1, errors.New("outbox: simulated crash before commit")
	}
	if perr != nil {
		_ = r.cl.EndTransaction(ctx, kgo.TryAbort)
		return 0, fmt.Errorf("outbox: producing: %w", perr)
	}
	if err := r.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return 0, fmt.Errorf("outbox: committing: %w", err)
	}
	r.pos = last
	return len(recs) - 1, nil
}

// Run publishes until ctx ends. On an error it closes the Kafka client and
// starts afresh (fence, recover position) after a pause, so a transient
// failure costs a republish-free restart, never a duplicate.
func (r *Relay) Run(ctx context.Context) error {
	for {
		n, err := r.PublishBatch(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			r.cl.Close()
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second):
				}
				if err = r.start(ctx); err == nil {
					break
				}
			}
			continue
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
func (r *Relay) Close() { r.cl.Close() }
