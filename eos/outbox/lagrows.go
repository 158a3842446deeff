package outbox

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pglogrepl"
)

// The CDC relay's lag in rows: committed outbox rows not yet in Kafka.
//
// The stream cannot count rows it has not decoded, and the table does not
// record which WAL position inserted a row, so the relay counts them in
// PostgreSQL against a probe: a snapshot S (pg_current_snapshot) and the
// WAL insert position L read after it. Every transaction S sees had
// written its commit record before S was taken, so below L. Once the relay
// has handled everything below L (its checkpoint or confirmed position is
// at or past L), every row S sees is published, and
//
//	lag = (committed rows whose txid S does not see)
//	    - (rows this relay published whose txid S does not see)
//
// The first term is one index range scan (readyxid >= xmin(S), since
// readyxid >= txid); the second the relay counts as it commits Kafka
// transactions (txid is a column of every streamed row). While a probe
// waits for the relay to pass its L, the previous valid one is used; each
// scrape promotes the waiting probe if it is valid and takes a new one, so
// the scanned range stays about two scrapes of rows. During the initial
// snapshot the snapshot's own visibility is the probe, and its unpublished
// rows are added. After a (re)start from an LSN checkpoint nothing is known
// until the relay passes its first probe's L: the lag is then reported as
// unknown rather than guessed. A transaction the stream delivered before a
// probe's snapshot saw it commit (a commit still waiting for a synchronous
// standby) counts as unpublished until a newer probe is promoted.
type lagRows struct {
	mu sync.Mutex
	// active is the newest probe the relay has passed; pending the one it
	// has not passed yet.
	active, pending *lagProbe
	// gen changes at every start of the stream, making probes taken
	// before it stale.
	gen int
	// probing: a probe's query is running; the transactions published
	// meanwhile are kept in log so it can count those its snapshot does
	// not see.
	probing bool
	log     []txnRows
}

// lagProbe is one snapshot with the WAL insert position read after it.
type lagProbe struct {
	snap pgSnapshot
	lsn  pglogrepl.LSN
	// published counts the rows published since the probe was taken whose
	// transaction the snapshot does not see.
	published int64
	// initial: the probe is the initial snapshot's visibility, whose rows
	// are published by the snapshot phase (SnapshotProgress).
	initial bool
}

// txnRows is a published PostgreSQL transaction: its top-level xid (the
// rows' txid) and how many outbox rows it had.
type txnRows struct {
	txid uint64
	rows int64
}

// pgSnapshot is a pg_snapshot (xmin:xmax:xip,...) for visibility tests
// in Go, with pg_visible_in_snapshot's rule.
type pgSnapshot struct {
	text       string
	xmin, xmax uint64
	xip        map[uint64]bool
}

func parsePgSnapshot(text string) (pgSnapshot, error) {
	s := pgSnapshot{text: text}
	parts := strings.SplitN(text, ":", 3)
	if len(parts) != 3 {
		return s, fmt.Errorf("outbox: unexpected snapshot %q", text)
	}
	var err1, err2 error
	s.xmin, err1 = strconv.ParseUint(parts[0], 10, 64)
	s.xmax, err2 = strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("outbox: unexpected snapshot %q", text)
	}
	if parts[2] != "" {
		s.xip = map[uint64]bool{}
		for _, x := range strings.Split(parts[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return s, fmt.Errorf("outbox: unexpected snapshot %q", text)
			}
			s.xip[v] = true
		}
	}
	return s, nil
}

// visible reports whether the snapshot sees transaction x (as committed,
// for a committed x).
func (s pgSnapshot) visible(x uint64) bool {
	return x < s.xmin || x < s.xmax && !s.xip[x]
}

// reset forgets every probe: the stream starts anew (a relay start).
func (l *lagRows) reset(initial *lagProbe) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen++
	l.active, l.pending = initial, nil
}

// published records transactions just committed to Kafka.
func (l *lagRows) published(txns []txnRows) {
	if len(txns) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range []*lagProbe{l.active, l.pending} {
		if p == nil {
			continue
		}
		for _, t := range txns {
			if !p.snap.visible(t.txid) {
				p.published += t.rows
			}
		}
	}
	if l.probing {
		l.log = append(l.log, txns...)
	}
}

// takeProbe takes a probe and makes it the pending one (unless the stream
// restarted meanwhile).
func (r *CDCRelay) takeProbe(ctx context.Context) error {
	l := &r.lag
	l.mu.Lock()
	gen := l.gen
	l.probing, l.log = true, nil
	l.mu.Unlock()
	// One statement: its snapshot is taken before the insert position is
	// read.
	var text, lsnText string
	err := r.pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text`).Scan(&text, &lsnText)
	l.mu.Lock()
	defer l.mu.Unlock()
	published := l.log
	l.probing, l.log = false, nil
	if err != nil {
		return fmt.Errorf("outbox: lag probe: %w", err)
	}
	snap, err := parsePgSnapshot(text)
	if err != nil {
		return err
	}
	lsn, err := pglogrepl.ParseLSN(lsnText)
	if err != nil {
		return fmt.Errorf("outbox: lag probe: %w", err)
	}
	if gen != l.gen {
		return nil
	}
	p := &lagProbe{snap: snap, lsn: lsn}
	for _, t := range published {
		if !snap.visible(t.txid) {
			p.published += t.rows
		}
	}
	l.pending = p
	return nil
}

// LagRows is how many committed outbox rows the relay has not yet
// published to Kafka: rows received from the stream and not yet committed
// to Kafka, and rows committed in PostgreSQL that the stream has not
// delivered yet. known is false after a (re)start from an LSN checkpoint
// until the relay has caught up with where PostgreSQL was when it started
// (see the lagRows type for why); Lag and LagSeconds cover that time. It
// costs one or two queries: an index range scan over the rows written since
// about the previous call.
func (r *CDCRelay) LagRows(ctx context.Context) (rows int64, known bool, err error) {
	l := &r.lag
	passed := max(pglogrepl.LSN(r.checkpoint.Load()), pglogrepl.LSN(r.confirmed.Load()))
	l.mu.Lock()
	if l.pending != nil && passed >= l.pending.lsn {
		l.active, l.pending = l.pending, nil
	}
	needProbe := l.pending == nil
	var active lagProbe
	if l.active != nil {
		// A copy taken before the count: a row published after this
		// point but counted below reads as not yet published, never the
		// other way round.
		active = *l.active
	}
	haveActive := l.active != nil
	l.mu.Unlock()
	if needProbe {
		if err := r.takeProbe(ctx); err != nil {
			return 0, false, err
		}
	}
	if !haveActive {
		return 0, false, nil
	}
	var snapshotLeft int64
	if active.initial {
		done, total := r.SnapshotProgress()
		if total < 0 {
			return 0, false, nil // not sized yet
		}
		snapshotLeft = max(0, total-done)
	}
	var after int64
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM `+r.info.table()+`
		WHERE readyxid >= $1::text::xid8 AND NOT pg_visible_in_snapshot(txid, $2::text::pg_snapshot)`,
		strconv.FormatUint(active.snap.xmin, 10), active.snap.text).Scan(&after); err != nil {
		return 0, false, fmt.Errorf("outbox: counting unpublished rows: %w", err)
	}
	// Below 0 only if a transaction was published before the snapshot
	// used for counting saw it commit (a commit still waiting for a
	// synchronous standby, say).
	return max(0, snapshotLeft+after-active.published), true, nil
}
