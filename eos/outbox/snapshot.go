package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Snapshot modes of a CDC relay's first start (Debezium's names).
const (
	// SnapshotInitial publishes the rows already in the table when the
	// relay first starts, then streams.
	SnapshotInitial = "initial"
	// SnapshotNoData only streams what commits after the slot exists.
	SnapshotNoData = "no_data"
)

// snapshotState is a CDC relay's initial snapshot in progress, as its
// checkpoint records it (JSON; a finished relay's checkpoint is a bare LSN).
//
// The snapshot is not held open: an exported snapshot dies with its
// connection, and the relay must survive SIGKILL at any moment. Instead the
// relay records the exported snapshot's visibility (pg_current_snapshot's
// xmin:xmax:xip text) and, on every read, selects the rows whose txid
// pg_visible_in_snapshot says it saw. txid is the writer's top-level
// transaction id (the trigger forces it), so that set is exactly the rows
// committed before the slot's consistent point, and it never changes: a
// later transaction's id is not visible in the recorded snapshot.
type snapshotState struct {
	// LSN is the slot's consistent point: the stream after the snapshot
	// starts there and holds exactly the transactions the snapshot lacks.
	LSN string `json:"lsn"`
	// Snapshot is the exported snapshot's pg_snapshot text.
	Snapshot string `json:"snapshot"`
	// After is the last published row, in (aggregatetype, aggregateid,
	// aggregateversion) order; empty at the start.
	AggregateType string `json:"aggregatetype,omitempty"`
	AggregateID   string `json:"aggregateid,omitempty"`
	Version       int64  `json:"version,omitempty"`
}

var snapshotNameRE = regexp.MustCompile(`^[0-9A-Fa-f-]{1,64}$`)

// beginSnapshot starts the initial snapshot of a relay that never
// committed a checkpoint: it (re)creates the slot exporting a snapshot,
// records that snapshot's visibility and commits it as the first
// checkpoint. A slot already there is dropped first: without a checkpoint
// nothing was published from it (a crash between creating it and this
// commit leaves exactly that), and the snapshot will cover everything it
// held.
func (r *CDCRelay) beginSnapshot(ctx context.Context) (*snapshotState, error) {
	if err := r.dropSlot(ctx); err != nil {
		return nil, err
	}
	if err := r.connectReplication(ctx); err != nil {
		return nil, err
	}
	defer r.closeReplication() // ends the export: its visibility is recorded by then
	res, err := pglogrepl.CreateReplicationSlot(ctx, r.repl, r.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return nil, fmt.Errorf("outbox: creating replication slot %s: %w", r.cfg.Slot, err)
	}
	if !snapshotNameRE.MatchString(res.SnapshotName) {
		return nil, fmt.Errorf("outbox: unexpected exported snapshot name %q", res.SnapshotName)
	}
	st := &snapshotState{LSN: res.ConsistentPoint}
	err = pgx.BeginTxFunc(ctx, r.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET TRANSACTION SNAPSHOT '`+res.SnapshotName+`'`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&st.Snapshot)
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: importing the slot's snapshot: %w", err)
	}
	if st.Snapshot, err = normalizeSnapshot(st.Snapshot); err != nil {
		return nil, err
	}
	ckpt, _ := json.Marshal(st)
	if err := r.k.publish(ctx, nil, ckpt); err != nil {
		return nil, fmt.Errorf("outbox: recording the snapshot: %w", err)
	}
	r.log.Info("outbox CDC relay: initial snapshot begins", "relay", r.cfg.Name, "slot", r.cfg.Slot,
		"consistent_point", st.LSN, "snapshot", st.Snapshot)
	return st, nil
}

// dropSlot drops the relay's slot if it exists, ending a walsender that
// still holds it (a fenced zombie).
func (r *CDCRelay) dropSlot(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := r.pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, r.cfg.Slot)
		if err == nil {
			_, err = r.pool.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE slot_name = $1 AND database = current_database()`, r.cfg.Slot)
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("outbox: dropping replication slot %s left without a checkpoint: %w", r.cfg.Slot, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runSnapshot publishes the snapshot's rows in chunks of BatchSize, each in
// one Kafka transaction with the checkpoint that moves past it, then
// commits the consistent point as a plain LSN checkpoint and starts
// streaming there. Memory is bounded by one chunk.
//
// Nothing is lost or published twice: the snapshot's row set is fixed (see
// snapshotState); it is read in a total order with a keyset cursor that
// commits atomically with the rows it covers; and the stream from the
// consistent point holds exactly the transactions the snapshot's
// visibility excludes. Per aggregate, snapshot rows committed before every
// streamed one, so versions stay in order.
func (r *CDCRelay) runSnapshot(ctx context.Context) error {
	st := r.snap
	if r.snapTotal.Load() < 0 {
		var total, done int64
		if err := r.pool.QueryRow(ctx, `SELECT count(*),
				count(*) FILTER (WHERE (aggregatetype, aggregateid, aggregateversion) <= ($2, $3, $4))
			FROM `+r.info.table()+` WHERE pg_visible_in_snapshot(txid, $1::text::pg_snapshot)`,
			st.Snapshot, st.AggregateType, st.AggregateID, st.Version).Scan(&total, &done); err != nil {
			return fmt.Errorf("outbox: sizing the snapshot: %w", err)
		}
		r.snapTotal.Store(total)
		r.snapDone.Store(done)
	}
	for {
		rows, err := r.pool.Query(ctx, `SELECT id::text, aggregatetype, aggregateid, type, `+r.info.payloadColumn()+`,
				headers::text, aggregateversion
			FROM `+r.info.table()+`
			WHERE pg_visible_in_snapshot(txid, $1::text::pg_snapshot)
				AND (aggregatetype, aggregateid, aggregateversion) > ($2, $3, $4)
			ORDER BY aggregatetype, aggregateid, aggregateversion
			LIMIT $5`, st.Snapshot, st.AggregateType, st.AggregateID, st.Version, r.cfg.BatchSize)
		if err != nil {
			return fmt.Errorf("outbox: reading the snapshot: %w", err)
		}
		var recs []*kgo.Record
		next := *st
		for rows.Next() {
			var e Event
			var id string
			var headers *string
			if err := rows.Scan(&id, &e.AggregateType, &e.AggregateID, &e.Type, &e.Payload, &headers, &e.Version); err != nil {
				rows.Close()
				return err
			}
			if headers != nil {
				if err := json.Unmarshal([]byte(*headers), &e.Headers); err != nil {
					rows.Close()
					return fmt.Errorf("outbox: row %s headers: %w", id, err)
				}
			}
			next.AggregateType, next.AggregateID, next.Version = e.AggregateType, e.AggregateID, e.Version
			recs = append(recs, eventRecord(r.cfg.Topic, &e, id))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("outbox: reading the snapshot: %w", err)
		}
		if len(recs) == 0 {
			break
		}
		ckpt, _ := json.Marshal(&next)
		r.cfg.hooks.waitHold()
		if err := r.k.publish(ctx, recs, ckpt); err != nil {
			return err
		}
		*st = next
		r.published.Add(int64(len(recs)))
		r.batches.Add(1)
		r.snapDone.Add(int64(len(recs)))
		if r.cfg.hooks.crashInSnapshot != nil && r.cfg.hooks.crashInSnapshot() {
			return errCrashInSnapshot
		}
	}
	lsn, err := pglogrepl.ParseLSN(st.LSN)
	if err != nil {
		return fmt.Errorf("outbox: snapshot consistent point %q: %w", st.LSN, err)
	}
	if err := r.k.publish(ctx, nil, []byte(lsn.String())); err != nil {
		return err
	}
	r.log.Info("outbox CDC relay: initial snapshot done", "relay", r.cfg.Name, "rows", r.snapDone.Load())
	r.snap = nil
	r.checkpoint.Store(uint64(lsn))
	return r.startReplication(ctx, lsn)
}

// errCrashInSnapshot is returned by runSnapshot when the crashInSnapshot
// test hook fires.
var errCrashInSnapshot = errors.New("outbox: simulated crash during the snapshot")

// SnapshotProgress reports the initial snapshot's published and total
// rows; total is -1 before the relay has sized it (and stays whatever it
// was once the snapshot is done, with done == total).
func (r *CDCRelay) SnapshotProgress() (done, total int64) {
	return r.snapDone.Load(), r.snapTotal.Load()
}

// normalizeSnapshot makes a snapshot's text one that pg_snapshot accepts
// back. A snapshot exported by creating a logical slot on a quiet server
// can print as "xmin:xmax:" with xmax = xmin-1 (seen on PostgreSQL 15:
// "65844:65843:"), which pg_snapshot's input refuses. Visibility tests
// xid < xmin first, so such a snapshot sees exactly what "xmin:xmin:"
// sees: every xid below xmin, none from it on; and it can list no
// in-progress xid (they lie in [xmin, xmax)).
func normalizeSnapshot(text string) (string, error) {
	parts := strings.SplitN(text, ":", 3)
	if len(parts) != 3 {
		return "", fmt.Errorf("outbox: unexpected snapshot %q", text)
	}
	xmin, err1 := strconv.ParseUint(parts[0], 10, 64)
	xmax, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return "", fmt.Errorf("outbox: unexpected snapshot %q", text)
	}
	if xmin <= xmax {
		return text, nil
	}
	if parts[2] != "" {
		return "", fmt.Errorf("outbox: snapshot %q has xmin above xmax and in-progress transactions", text)
	}
	return fmt.Sprintf("%d:%d:", xmin, xmin), nil
}
