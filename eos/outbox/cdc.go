package outbox

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/twmb/franz-go/pkg/kgo"
)

// CDCConfig configures a CDCRelay.
type CDCConfig struct {
	// DSN is the PostgreSQL connection string (URL or key=value). The relay
	// opens a replication connection with it (adding replication=database)
	// and a small pool of regular ones; the role needs the REPLICATION
	// attribute and the right to create a publication on Table.
	DSN string
	// Table is the outbox table.
	Table Table
	// Name identifies the relay: its Kafka transactional id is
	// "exactly-outbox-cdc-<Name>" and its checkpoints are keyed
	// "cdc:<Name>". A restarted relay must keep its Name (and Slot).
	Name string
	// Slot is the logical replication slot; default
	// "exactly_outbox_<Name>" (lower-cased, other characters as '_').
	// Created if missing, resumed otherwise.
	Slot string
	// Publication publishes Table's INSERTs to the slot; default the slot
	// name. Created if missing.
	Publication string
	// Kafka holds the client options: at least kgo.SeedBrokers.
	Kafka []kgo.Opt
	// CheckpointTopic holds the relay positions; default
	// DefaultCheckpointTopic.
	CheckpointTopic string
	// Topic routes an event; default DefaultTopic.
	Topic func(e *Event) string
	// BatchSize: committed PostgreSQL transactions are grouped into one
	// Kafka transaction until it holds at least this many events; default
	// 500. A PostgreSQL transaction is never split, however large.
	BatchSize int
	// MaxTxnBuffer bounds the events of one PostgreSQL transaction held in
	// memory: a larger transaction is streamed into an open Kafka
	// transaction as it arrives (still one Kafka transaction, committed with
	// its end LSN at its COMMIT), so memory stays bounded by this and the
	// Kafka client's buffer; default 10000.
	MaxTxnBuffer int
	// BatchWait bounds how long a committed PostgreSQL transaction waits
	// for others to share its Kafka transaction; default 20ms.
	BatchWait time.Duration
	// StatusInterval is how often the relay reports its position to
	// PostgreSQL when nothing else makes it; default 10s. It must stay
	// well below the server's wal_sender_timeout (default 60s).
	StatusInterval time.Duration
	// Snapshot is what a relay without a checkpoint does first:
	// SnapshotInitial (the default) publishes the rows already in the
	// table, then streams; SnapshotNoData only streams what commits after
	// its slot exists.
	Snapshot string
	// Logger receives Run's errors and restarts; nil discards them.
	Logger *slog.Logger

	hooks cdcHooks
}

// cdcHooks are test hooks: crashAfterCommit returns from the stream right
// after a Kafka commit, before telling PostgreSQL; startFromSlot starts
// replication at 0/0 so PostgreSQL resends from its own position and the
// relay's checkpoint filter must skip what is already published.
type cdcHooks struct {
	crashAfterCommit bool
	startFromSlot    bool
	// crashInSnapshot, asked after each snapshot chunk's commit, makes the
	// snapshot fail as a crash would.
	crashInSnapshot func() bool
	// crashWhileStreaming makes the stream fail, as a crash would, at the
	// next event of a transaction being streamed into Kafka.
	crashWhileStreaming bool
	// holdPublish, read-locked before every Kafka commit of events, holds
	// the relay back while a test write-locks it.
	holdPublish *sync.RWMutex
}

// waitHold waits while a test holds publishing back.
func (h *cdcHooks) waitHold() {
	if h.holdPublish != nil {
		h.holdPublish.RLock()
		h.holdPublish.RUnlock()
	}
}

// CDCRelay publishes outbox rows to Kafka exactly once from PostgreSQL's
// logical replication stream (pgoutput), instead of polling the table.
//
// The stream delivers each committed transaction whole (BEGIN, its
// INSERTs, COMMIT), in commit order, and only after it committed; rolled
// back rows never appear. The relay buffers a transaction until its COMMIT,
// then publishes it, possibly with more transactions that committed right
// after it, in ONE Kafka transaction that also holds the checkpoint: the
// end LSN of the last PostgreSQL transaction it contains. So a PostgreSQL
// transaction is in Kafka entirely or not at all.
//
// LSN flow:
//  1. Start: fence older instances and read the checkpoint C from Kafka
//     (the same marker/backward-read protocol as Relay), then take over
//     the slot (terminating a zombie's walsender, which can no longer
//     commit anyway) and START_REPLICATION at C.
//  2. PostgreSQL resends every transaction it was not told is done, so
//     after a crash it may resend transactions already in Kafka; the
//     relay skips every transaction whose end LSN is <= C.
//  3. Kafka commit first, then StandbyStatusUpdate(flush = C'): PostgreSQL
//     may drop WAL up to C' only once C' is durable in Kafka. A crash
//     between the two costs a resend that step 2 skips, never a loss.
//
// While nothing is buffered, the relay also confirms the positions of
// transactions without outbox rows and of keepalives (everything before
// them has been received and published), so an idle relay does not pin WAL.
//
// Rows must be inserted by transactions that commit after the slot was
// created; rows already in the table when the relay first creates its slot
// are not published (drain them with a polling Relay first). Run one CDC
// relay per table, and never a polling Relay on the same table: they do
// not know each other's positions.
type CDCRelay struct {
	cfg  CDCConfig
	log  *slog.Logger
	pool *pgxpool.Pool
	k    *txnPublisher
	repl *pgconn.PgConn
	// schema and relname are Table resolved in the catalog: relation
	// messages name them so.
	schema, relname string
	info            tableInfo

	// checkpoint is the end LSN of the last PostgreSQL transaction
	// committed to Kafka; confirmed is the flush position last reported
	// to PostgreSQL. Read by Checkpoint and Lag from other goroutines.
	checkpoint atomic.Uint64
	confirmed  atomic.Uint64

	// Stream state, reset at each start.
	rels         map[uint32]*pglogrepl.RelationMessage
	inTxn        bool
	cur          []*kgo.Record // the open transaction's events
	curTxid      uint64        // the open transaction's xid (its rows' txid)
	pending      []*kgo.Record // committed, not yet in Kafka
	pendingTxns  []txnRows     // the transactions of pending
	pendingEnd   pglogrepl.LSN // end LSN of the last pending transaction; 0: none
	pendingSince time.Time
	idle         pglogrepl.LSN // confirmable without a Kafka commit (no events before it)

	// streaming: the open PostgreSQL transaction outgrew MaxTxnBuffer and
	// its events go straight into an open Kafka transaction; skipTxn: the
	// open PostgreSQL transaction is already published (a resend).
	streaming, skipTxn bool
	streamedEvents     int          // events in the open streamed transaction
	streamedTxns       atomic.Int64 // transactions published by streaming
	maxBuffered        int          // most events ever buffered (tests)

	// snap is the initial snapshot still to publish (nil: streaming).
	snap                *snapshotState
	snapDone, snapTotal atomic.Int64

	// behindSince (unix nanoseconds, 0: not behind or not known) is the
	// PostgreSQL commit time the relay's lag in seconds counts from: that
	// of the oldest received transaction whose events are not yet in
	// Kafka; with none held, that of the last transaction handled, until a
	// keepalive shows the relay has received all WAL. Written by the
	// stream, read by LagSeconds.
	behindSince atomic.Int64
	// Stream-side inputs of behindSince.
	curCommit, pendingCommit, lastPendingCommit, lastHandled time.Time
	caughtUp                                                 bool

	// lag counts committed rows not yet published (LagRows).
	lag lagRows

	published atomic.Int64 // events committed to Kafka by this relay
	batches   atomic.Int64 // Kafka transactions with events
	skipped   atomic.Int64 // resent transactions skipped as already published
}

// errCrashAfterCommit is returned by the stream when the crashAfterCommit
// test hook fires.
var errCrashAfterCommit = errors.New("outbox: simulated crash after Kafka commit")

// slotRE is what PostgreSQL accepts as a slot name; publication names are
// held to the same rule because they are quoted into replication commands.
var slotRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// DefaultSlot is the slot name a CDC relay called name uses by default.
func DefaultSlot(name string) string {
	var b strings.Builder
	b.WriteString("exactly_outbox_")
	for _, c := range strings.ToLower(name) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	return s[:min(len(s), 63)]
}

// NewCDCRelay checks that PostgreSQL runs with wal_level=logical, creates
// the publication and slot if missing, fences older instances, recovers
// the checkpoint and starts replication from it.
func NewCDCRelay(ctx context.Context, cfg CDCConfig) (*CDCRelay, error) {
	if cfg.DSN == "" || cfg.Name == "" {
		return nil, errors.New("outbox: CDC relay needs DSN and Name")
	}
	if _, err := cfg.Table.name(); err != nil {
		return nil, err
	}
	if cfg.Slot == "" {
		cfg.Slot = DefaultSlot(cfg.Name)
	}
	if cfg.Publication == "" {
		cfg.Publication = cfg.Slot
	}
	if !slotRE.MatchString(cfg.Slot) || !slotRE.MatchString(cfg.Publication) {
		return nil, fmt.Errorf("outbox: slot %q / publication %q: use 1-63 of a-z, 0-9, _", cfg.Slot, cfg.Publication)
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
	if cfg.MaxTxnBuffer <= 0 {
		cfg.MaxTxnBuffer = 10000
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = 20 * time.Millisecond
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	switch cfg.Snapshot {
	case "":
		cfg.Snapshot = SnapshotInitial
	case SnapshotInitial, SnapshotNoData:
	default:
		return nil, fmt.Errorf("outbox: snapshot mode %q: use %s or %s", cfg.Snapshot, SnapshotInitial, SnapshotNoData)
	}
	r := &CDCRelay{cfg: cfg, log: cfg.Logger}
	if r.log == nil {
		r.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("outbox: DSN: %w", err)
	}
	pcfg.MaxConns = 2
	if r.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return nil, fmt.Errorf("outbox: connecting: %w", err)
	}
	if err := r.setup(ctx); err != nil {
		r.pool.Close()
		return nil, err
	}
	r.k = newTxnPublisher(cfg.Kafka, "exactly-outbox-cdc-"+cfg.Name, cfg.CheckpointTopic, "cdc:"+cfg.Name)
	if err := r.start(ctx); err != nil {
		r.pool.Close()
		return nil, err
	}
	return r, nil
}

// CheckLogical reports an error unless the PostgreSQL server behind q runs
// with wal_level=logical, which logical replication needs.
func CheckLogical(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) error {
	var level string
	if err := q.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("outbox: reading wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("outbox: PostgreSQL runs with wal_level=%s; CDC needs wal_level=logical "+
			"(ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL)", level)
	}
	return nil
}

// setup checks the server, resolves the table and makes sure the
// publication exists and publishes the table's inserts.
func (r *CDCRelay) setup(ctx context.Context) error {
	if err := CheckLogical(ctx, r.pool); err != nil {
		return err
	}
	// The stream needs no trigger, but the table should be the one Init
	// makes: the same writers feed both relays, and the snapshot filters
	// rows by txid.
	db := stdlib.OpenDBFromPool(r.pool)
	info, err := r.cfg.Table.check(ctx, db)
	db.Close()
	if err != nil {
		return err
	}
	r.schema, r.relname, r.info = info.schema, info.relname, info
	pub := pgx.Identifier{r.cfg.Publication}.Sanitize()
	tbl := pgx.Identifier{r.schema, r.relname}.Sanitize()
	var exists bool
	if err := r.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, r.cfg.Publication).Scan(&exists); err != nil {
		return fmt.Errorf("outbox: looking up publication: %w", err)
	}
	if !exists {
		// Inserts only: the relay ignores updates and deletes anyway, and
		// this way deleting published rows needs no replica identity.
		_, err := r.pool.Exec(ctx, `CREATE PUBLICATION `+pub+` FOR TABLE `+tbl+` WITH (publish = 'insert')`)
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42710") { // duplicate_object: a racing relay made it
			return fmt.Errorf("outbox: creating publication %s: %w", r.cfg.Publication, err)
		}
	}
	var ok bool
	err = r.pool.QueryRow(ctx, `SELECT p.pubinsert AND EXISTS (SELECT 1 FROM pg_publication_tables t
		WHERE t.pubname = p.pubname AND t.schemaname = $2 AND t.tablename = $3)
		FROM pg_publication p WHERE p.pubname = $1`, r.cfg.Publication, r.schema, r.relname).Scan(&ok)
	if err != nil {
		return fmt.Errorf("outbox: checking publication %s: %w", r.cfg.Publication, err)
	}
	if !ok {
		return fmt.Errorf("outbox: publication %s exists but does not publish inserts into %s", r.cfg.Publication, tbl)
	}
	return nil
}

// start fences and recovers the checkpoint in Kafka, then takes the slot
// (creating it if missing) and starts replication at the checkpoint.
func (r *CDCRelay) start(ctx context.Context) error {
	v, err := r.k.open(ctx)
	if err != nil {
		return err
	}
	var ckpt pglogrepl.LSN
	r.snap = nil
	switch {
	case v == nil && r.cfg.Snapshot == SnapshotInitial:
		if r.snap, err = r.beginSnapshot(ctx); err != nil {
			r.k.close()
			return err
		}
	case len(v) > 0 && v[0] == '{':
		r.snap = &snapshotState{}
		if err := json.Unmarshal(v, r.snap); err != nil {
			r.k.close()
			return fmt.Errorf("outbox: snapshot checkpoint %q of CDC relay %s: %w", v, r.cfg.Name, err)
		}
	case v != nil:
		if ckpt, err = pglogrepl.ParseLSN(string(v)); err != nil {
			r.k.close()
			return fmt.Errorf("outbox: checkpoint %q of CDC relay %s is not an LSN", v, r.cfg.Name)
		}
	}
	r.checkpoint.Store(uint64(ckpt))
	r.rels = map[uint32]*pglogrepl.RelationMessage{}
	r.inTxn, r.cur, r.pending, r.pendingTxns, r.pendingEnd, r.idle = false, nil, nil, nil, 0, 0
	r.streaming, r.skipTxn = false, false
	r.caughtUp = false
	r.noteBehind()
	if r.snap != nil {
		// Run publishes the snapshot, then starts replication. The
		// snapshot's visibility is the first lag probe.
		r.snapTotal.Store(-1)
		var initial *lagProbe
		snap, err1 := parsePgSnapshot(r.snap.Snapshot)
		lsn, err2 := pglogrepl.ParseLSN(r.snap.LSN)
		if err1 == nil && err2 == nil {
			initial = &lagProbe{snap: snap, lsn: lsn, initial: true}
		}
		r.lag.reset(initial)
		return nil
	}
	r.lag.reset(nil)
	if err := r.startReplication(ctx, ckpt); err != nil {
		r.k.close()
		return err
	}
	// The first lag probe, once the slot exists: the relay knows its lag
	// in rows as soon as it has caught up with this moment.
	if err := r.takeProbe(ctx); err != nil {
		r.log.Warn("outbox CDC relay: lag probe failed; LagRows unknown until the next", "relay", r.cfg.Name, "err", err)
	}
	return nil
}

func (r *CDCRelay) connectReplication(ctx context.Context) error {
	cfg, err := pgconn.ParseConfig(r.cfg.DSN)
	if err != nil {
		return fmt.Errorf("outbox: DSN: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	if r.repl, err = pgconn.ConnectConfig(ctx, cfg); err != nil {
		return fmt.Errorf("outbox: replication connection: %w", err)
	}
	return nil
}

func (r *CDCRelay) closeReplication() {
	if r.repl != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = r.repl.Close(ctx)
		cancel()
		r.repl = nil
	}
}

// startReplication takes the slot (creating it if missing) and starts
// streaming at ckpt. A slot seen in the catalog can vanish before
// START_REPLICATION: one still being created by a relay that was killed
// (or whose walsender was just ended) is dropped with its backend; then
// it starts over and creates the slot.
func (r *CDCRelay) startReplication(ctx context.Context, ckpt pglogrepl.LSN) error {
	for attempt := 0; ; attempt++ {
		err := r.startReplicationOnce(ctx, ckpt)
		var pgErr *pgconn.PgError
		if err == nil || attempt >= 3 || !errors.As(err, &pgErr) || pgErr.Code != "42704" { // undefined_object
			return err
		}
		r.log.Info("outbox CDC relay: replication slot vanished while starting; again", "slot", r.cfg.Slot)
	}
}

func (r *CDCRelay) startReplicationOnce(ctx context.Context, ckpt pglogrepl.LSN) error {
	if err := r.connectReplication(ctx); err != nil {
		return err
	}
	var plugin string
	var flushed *string
	err := r.pool.QueryRow(ctx, `SELECT plugin, confirmed_flush_lsn::text FROM pg_replication_slots
		WHERE slot_name = $1 AND database = current_database()`, r.cfg.Slot).Scan(&plugin, &flushed)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		res, err := pglogrepl.CreateReplicationSlot(ctx, r.repl, r.cfg.Slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		var pgErr *pgconn.PgError
		if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42710") {
			r.closeReplication()
			return fmt.Errorf("outbox: creating replication slot %s: %w", r.cfg.Slot, err)
		}
		if err == nil {
			r.log.Info("outbox CDC relay: created replication slot", "slot", r.cfg.Slot, "at", res.ConsistentPoint)
			flushed = &res.ConsistentPoint
		}
	case err != nil:
		r.closeReplication()
		return fmt.Errorf("outbox: looking up replication slot %s: %w", r.cfg.Slot, err)
	case plugin != "pgoutput":
		r.closeReplication()
		return fmt.Errorf("outbox: replication slot %s uses plugin %s, not pgoutput", r.cfg.Slot, plugin)
	}
	confirmed := ckpt
	if flushed != nil {
		if l, err := pglogrepl.ParseLSN(*flushed); err == nil {
			confirmed = max(confirmed, l)
		}
	}
	r.confirmed.Store(uint64(confirmed))

	start := ckpt
	if r.cfg.hooks.startFromSlot {
		start = 0
	}
	opts := pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names '" + r.cfg.Publication + "'"}}
	// A slot serves one connection at a time. Fencing in Kafka already
	// made any other holder (a zombie of this relay) unable to commit, so
	// it is safe to end its walsender rather than wait for its timeout.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := r.pool.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, r.cfg.Slot); err != nil {
			r.closeReplication()
			return fmt.Errorf("outbox: taking over replication slot %s: %w", r.cfg.Slot, err)
		}
		err := pglogrepl.StartReplication(ctx, r.repl, r.cfg.Slot, start, opts)
		if err == nil {
			break
		}
		r.closeReplication()
		var pgErr *pgconn.PgError
		if !(errors.As(err, &pgErr) && pgErr.Code == "55006") || time.Now().After(deadline) { // object_in_use
			return fmt.Errorf("outbox: starting replication from slot %s: %w", r.cfg.Slot, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if err := r.connectReplication(ctx); err != nil {
			return err
		}
	}
	r.log.Info("outbox CDC relay: streaming", "relay", r.cfg.Name, "slot", r.cfg.Slot, "checkpoint", ckpt, "confirmed", confirmed)
	return nil
}

// Checkpoint is the end LSN of the last PostgreSQL transaction this relay
// knows to be committed to Kafka (0/0: none yet).
func (r *CDCRelay) Checkpoint() pglogrepl.LSN { return pglogrepl.LSN(r.checkpoint.Load()) }

// Published is the number of events this relay committed to Kafka since
// it was created.
func (r *CDCRelay) Published() int64 { return r.published.Load() }

// Lag is how many bytes of WAL PostgreSQL has written past the position
// the relay last confirmed: what the slot makes the server keep, and an
// upper bound of what is still to be published.
func (r *CDCRelay) Lag(ctx context.Context) (int64, error) {
	var lag int64
	err := r.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint`,
		pglogrepl.LSN(r.confirmed.Load()).String()).Scan(&lag)
	return lag, err
}

// noteBehind recomputes behindSince from the stream state.
func (r *CDCRelay) noteBehind() {
	var from time.Time
	switch {
	case r.pendingEnd != 0:
		from = r.pendingCommit
	case r.streaming || len(r.cur) > 0:
		from = r.curCommit
	case !r.caughtUp:
		from = r.lastHandled
	}
	if from.IsZero() {
		r.behindSince.Store(0)
	} else {
		r.behindSince.Store(from.UnixNano())
	}
}

// LagSeconds is how far behind PostgreSQL the relay is, in seconds of
// commit time: now minus the commit time of the oldest transaction the
// relay received whose events are not yet in Kafka; with none held, minus
// the commit time of the last transaction it handled, until the server
// shows it has sent all its WAL (a keepalive with nothing open here), or
// the relay confirmed the server's whole WAL (Lag 0). It is 0 when caught
// up and before the first transaction since the relay started. Commit
// times come from the server's clock, so clock skew between the hosts
// shifts it; it never goes below 0.
func (r *CDCRelay) LagSeconds(ctx context.Context) (float64, error) {
	from := r.behindSince.Load()
	if from == 0 {
		return 0, nil
	}
	if bytes, err := r.Lag(ctx); err != nil {
		return 0, err
	} else if bytes <= 0 {
		return 0, nil
	}
	return max(0, time.Since(time.Unix(0, from)).Seconds()), nil
}

// Run streams and publishes until ctx ends. On an error it closes both
// connections and starts afresh (fence, recover the checkpoint, resume the
// slot) after a pause: the restart may resend transactions, which the
// checkpoint skips, so it never duplicates.
func (r *CDCRelay) Run(ctx context.Context) error {
	for {
		err := r.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.log.Error("outbox CDC relay: streaming failed; restarting", "relay", r.cfg.Name, "err", err)
		if r.streaming {
			r.k.abort()
		}
		r.closeReplication()
		r.k.close()
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			if err = r.start(ctx); err == nil {
				break
			}
			r.log.Error("outbox CDC relay: restart failed", "relay", r.cfg.Name, "err", err)
		}
	}
}

// Close closes the connections. Unconfirmed transactions are resent to the
// next instance; an open Kafka transaction is aborted by its fencing.
func (r *CDCRelay) Close() {
	r.closeReplication()
	r.k.close()
	r.pool.Close()
}

// stream publishes what is left of the initial snapshot, then receives
// replication messages, publishes committed transactions and reports
// positions, until an error or ctx ends.
func (r *CDCRelay) stream(ctx context.Context) error {
	if r.snap != nil {
		if err := r.runSnapshot(ctx); err != nil {
			return err
		}
	}
	if r.repl == nil {
		// The snapshot finished but starting replication after it did
		// not (say ctx ended in between): start from the checkpoint.
		if err := r.startReplication(ctx, pglogrepl.LSN(r.checkpoint.Load())); err != nil {
			return err
		}
	}
	nextStatus := time.Now().Add(r.cfg.StatusInterval)
	for {
		now := time.Now()
		if r.pendingEnd != 0 && !now.Before(r.pendingSince.Add(r.cfg.BatchWait)) {
			if err := r.flush(ctx); err != nil {
				return err
			}
		}
		if !now.Before(nextStatus) {
			if err := r.sendStatus(ctx); err != nil {
				return err
			}
			nextStatus = now.Add(r.cfg.StatusInterval)
		}
		deadline := nextStatus
		if t := r.pendingSince.Add(r.cfg.BatchWait); r.pendingEnd != 0 && t.Before(deadline) {
			deadline = t
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		msg, err := r.repl.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue // a deadline of ours, checked at the top
			}
			return fmt.Errorf("outbox: replication stream: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := r.handleCopyData(ctx, msg.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("outbox: replication stream: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("outbox: the server ended replication")
		}
	}
}

func (r *CDCRelay) handleCopyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("outbox: keepalive: %w", err)
		}
		// The server sends a keepalive after everything up to
		// ServerWALEnd: with nothing open or buffered here, every outbox
		// row before it is in Kafka.
		if !r.inTxn && r.pendingEnd == 0 {
			r.idle = max(r.idle, ka.ServerWALEnd)
			r.caughtUp = true
			r.noteBehind()
		}
		// Answer at once when asked, or when the keepalive lets the slot
		// advance: the server sends one such keepalive per WAL advance
		// while it thinks we are behind, so this is not a busy loop, and
		// it keeps Lag near zero for an idle relay.
		if ka.ReplyRequested || r.idle > pglogrepl.LSN(r.confirmed.Load()) {
			return r.sendStatus(ctx)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("outbox: XLogData: %w", err)
		}
		return r.handleWAL(ctx, xld.WALData)
	}
	return nil
}

// handleWAL handles one pgoutput message.
func (r *CDCRelay) handleWAL(ctx context.Context, data []byte) error {
	m, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("outbox: decoding pgoutput: %w", err)
	}
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		r.rels[m.RelationID] = m
	case *pglogrepl.BeginMessage:
		r.inTxn, r.cur, r.curTxid = true, nil, 0
		r.curCommit, r.caughtUp = m.CommitTime, false
		// Already published iff it committed before the checkpoint: the
		// checkpoint is a transaction's end (or the snapshot's consistent
		// point), and a later transaction's commit record starts at or
		// after it. Skipping now keeps a resent large transaction out of
		// memory.
		r.skipTxn = m.FinalLSN < pglogrepl.LSN(r.checkpoint.Load())
	case *pglogrepl.InsertMessage:
		rel, ok := r.rels[m.RelationID]
		if !ok {
			return fmt.Errorf("outbox: insert into unknown relation %d", m.RelationID)
		}
		if rel.Namespace != r.schema || rel.RelationName != r.relname {
			return nil // another table in a shared publication
		}
		if r.skipTxn {
			return nil
		}
		rec, txid, err := r.decodeInsert(rel, m.Tuple)
		if err != nil {
			return err
		}
		r.curTxid = txid
		if r.streaming {
			if r.cfg.hooks.crashWhileStreaming {
				_ = r.k.cl.Flush(ctx)
				return errCrashWhileStreaming
			}
			r.k.produce(ctx, rec)
			r.streamedEvents++
			return nil
		}
		r.cur = append(r.cur, rec)
		r.maxBuffered = max(r.maxBuffered, len(r.cur))
		if len(r.cur) >= r.cfg.MaxTxnBuffer {
			return r.startStreaming(ctx)
		}
	case *pglogrepl.CommitMessage:
		r.inTxn = false
		cur := r.cur
		r.cur = nil
		end := m.TransactionEndLSN
		if r.streaming {
			return r.commitStreamed(ctx, end)
		}
		defer r.noteBehind()
		switch {
		case end <= pglogrepl.LSN(r.checkpoint.Load()):
			// Resent after a crash between a Kafka commit and its
			// confirmation: already published. (Compare end LSNs: the next
			// transaction's commit record may start exactly where the
			// checkpointed one ended.)
			r.skipped.Add(1)
			r.lastHandled = m.CommitTime
		case len(cur) == 0 && r.pendingEnd == 0:
			r.idle = max(r.idle, end)
			r.lastHandled = m.CommitTime
		default:
			if r.pendingEnd == 0 {
				r.pendingSince = time.Now()
				r.pendingCommit = m.CommitTime
			}
			r.lastPendingCommit = m.CommitTime
			r.pending = append(r.pending, cur...)
			r.pendingTxns = append(r.pendingTxns, txnRows{txid: r.curTxid, rows: int64(len(cur))})
			r.pendingEnd = end
			if len(r.pending) >= r.cfg.BatchSize {
				return r.flush(ctx)
			}
		}
	}
	// Updates, deletes, truncates, types and origins are not events.
	return nil
}

// startStreaming switches the open PostgreSQL transaction, grown to
// MaxTxnBuffer events, to streaming: the committed transactions pending
// before it are published first (their order), then a Kafka transaction is
// opened with the events so far, and later events go straight into it.
func (r *CDCRelay) startStreaming(ctx context.Context) error {
	if r.pendingEnd != 0 {
		if err := r.flush(ctx); err != nil {
			return err
		}
	}
	if err := r.k.begin(); err != nil {
		return err
	}
	r.streaming = true
	for _, rec := range r.cur {
		r.k.produce(ctx, rec)
	}
	r.streamedEvents = len(r.cur)
	r.cur = nil
	return nil
}

// commitStreamed commits a streamed transaction with its end LSN as the
// checkpoint, then confirms it to PostgreSQL.
func (r *CDCRelay) commitStreamed(ctx context.Context, end pglogrepl.LSN) error {
	r.cfg.hooks.waitHold()
	if err := r.k.commit(ctx, []byte(end.String())); err != nil {
		return err
	}
	r.lag.published([]txnRows{{txid: r.curTxid, rows: int64(r.streamedEvents)}})
	r.streaming = false
	r.checkpoint.Store(uint64(end))
	r.lastHandled = r.curCommit
	r.noteBehind()
	r.published.Add(int64(r.streamedEvents))
	r.batches.Add(1)
	r.streamedTxns.Add(1)
	return r.sendStatus(ctx)
}

// errCrashWhileStreaming is returned by the stream when the
// crashWhileStreaming test hook fires.
var errCrashWhileStreaming = errors.New("outbox: simulated crash while streaming a transaction")

// flush publishes the pending transactions and their checkpoint in one
// Kafka transaction, then confirms the checkpoint to PostgreSQL.
func (r *CDCRelay) flush(ctx context.Context) error {
	end := r.pendingEnd
	r.cfg.hooks.waitHold()
	if err := r.k.publish(ctx, r.pending, []byte(end.String())); err != nil {
		return err
	}
	r.lag.published(r.pendingTxns)
	r.pendingTxns = nil
	r.checkpoint.Store(uint64(end))
	r.published.Add(int64(len(r.pending)))
	r.batches.Add(1)
	r.pending, r.pendingEnd = nil, 0
	r.lastHandled = r.lastPendingCommit
	r.noteBehind()
	if r.cfg.hooks.crashAfterCommit {
		return errCrashAfterCommit
	}
	return r.sendStatus(ctx)
}

// sendStatus tells PostgreSQL the position it may forget WAL up to: the
// Kafka checkpoint, or a later position with no events before it.
func (r *CDCRelay) sendStatus(ctx context.Context) error {
	pos := max(pglogrepl.LSN(r.confirmed.Load()), pglogrepl.LSN(r.checkpoint.Load()), r.idle)
	if err := pglogrepl.SendStandbyStatusUpdate(ctx, r.repl, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos}); err != nil {
		return fmt.Errorf("outbox: standby status update: %w", err)
	}
	r.confirmed.Store(uint64(pos))
	return nil
}

// decodeInsert turns an INSERT into the outbox table (text format
// columns) into its Kafka record, and returns the row's txid too.
func (r *CDCRelay) decodeInsert(rel *pglogrepl.RelationMessage, t *pglogrepl.TupleData) (rec *kgo.Record, txid uint64, err error) {
	if t == nil || len(t.Columns) != len(rel.Columns) {
		return nil, 0, fmt.Errorf("outbox: insert into %s.%s: tuple does not match its relation", rel.Namespace, rel.RelationName)
	}
	var e Event
	var id string
	for i, c := range t.Columns {
		name := rel.Columns[i].Name
		switch c.DataType {
		case pglogrepl.TupleDataTypeNull:
			continue
		case pglogrepl.TupleDataTypeText:
		default:
			return nil, 0, fmt.Errorf("outbox: column %s: unexpected tuple data kind %q", name, c.DataType)
		}
		switch name {
		case "id":
			id = string(c.Data)
		case "aggregatetype":
			e.AggregateType = string(c.Data)
		case "aggregateid":
			e.AggregateID = string(c.Data)
		case "type":
			e.Type = string(c.Data)
		case "payload":
			if rel.Columns[i].DataType != byteaOID {
				// jsonb, json or text: the text form is the payload.
				e.Payload = append([]byte(nil), c.Data...)
				break
			}
			p, err := decodeBytea(c.Data)
			if err != nil {
				return nil, 0, fmt.Errorf("outbox: row %s payload: %w", id, err)
			}
			e.Payload = p
		case "aggregateversion":
			v, err := strconv.ParseInt(string(c.Data), 10, 64)
			if err != nil {
				return nil, 0, fmt.Errorf("outbox: row %s aggregateversion: %w", id, err)
			}
			e.Version = v
		case "txid":
			if txid, err = strconv.ParseUint(string(c.Data), 10, 64); err != nil {
				return nil, 0, fmt.Errorf("outbox: row %s txid: %w", id, err)
			}
		case "headers":
			if err := json.Unmarshal(c.Data, &e.Headers); err != nil {
				return nil, 0, fmt.Errorf("outbox: row %s headers: %w", id, err)
			}
		}
	}
	if id == "" || e.AggregateType == "" || e.AggregateID == "" || e.Type == "" {
		return nil, 0, fmt.Errorf("outbox: insert into %s.%s lacks id, aggregatetype, aggregateid or type", rel.Namespace, rel.RelationName)
	}
	return eventRecord(r.cfg.Topic, &e, id), txid, nil
}

// byteaOID is bytea's type oid; a payload column of another type (jsonb)
// is published as its text form.
const byteaOID = 17

// decodeBytea decodes bytea's text output: hex ("\x0a1b", the default) or
// escape format (bytea_output = escape), whichever the server uses.
func decodeBytea(s []byte) ([]byte, error) {
	if len(s) >= 2 && s[0] == '\\' && s[1] == 'x' {
		out := make([]byte, hex.DecodedLen(len(s)-2))
		_, err := hex.Decode(out, s[2:])
		return out, err
	}
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			out = append(out, s[i])
			continue
		}
		switch {
		case i+1 < len(s) && s[i+1] == '\\':
			out = append(out, '\\')
			i++
		case i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]):
			out = append(out, (s[i+1]-'0')<<6|(s[i+2]-'0')<<3|(s[i+3]-'0'))
			i += 3
		default:
			return nil, fmt.Errorf("invalid bytea escape at %d", i)
		}
	}
	return out, nil
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
