package dedup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // the embedded default store's driver
)

// Options configure the SQL stores (SQLite and PostgreSQL).
type Options struct {
	// Table holds the processed ids; for PostgreSQL it may be
	// schema-qualified. Default "exactly_dedup".
	Table string
	// Retention is how long confirmed ids are remembered. Default
	// DefaultRetention.
	Retention time.Duration
	// Now is the clock used for leases and retention; default time.Now. All
	// processes sharing a table should have roughly synchronised clocks,
	// since expiry compares their timestamps.
	Now func() time.Time
}

func (o Options) withDefaults() (Options, error) {
	if o.Table == "" {
		o.Table = "exactly_dedup"
	}
	if !identRE.MatchString(o.Table) {
		// The name is formatted into SQL, so only plain identifiers pass.
		return o, fmt.Errorf("dedup: invalid table name %q", o.Table)
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// SQLStore is a Store in a SQL table: the embedded default (SQLite, see
// OpenSQLite) or PostgreSQL (see NewPostgres). One row per id: done=0 is a
// claim whose expires_at is the lease end, done=1 a confirmed id whose
// expires_at is the retention end. The claim is a single upsert that only
// overwrites an expired row, so the database's unique-key check is what
// makes exactly one concurrent claimer win.
type SQLStore struct {
	db      *sql.DB
	ownsDB  bool
	opts    Options
	sqlite  bool
	qClaim  string
	qState  string
	qConf   string
	qRel    string
	qClean  string
	qTxMark string
}

// OpenSQLite opens (creating if needed) the embedded store in dir/dedup.db:
// no server to run, durable across restarts, shared safely by the
// goroutines of one process. It is the default for single-instance
// consumers; use Redis or PostgreSQL when several processes share the ids.
func OpenSQLite(dir string, opts Options) (*SQLStore, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	dsn := "file:" + filepath.Join(dir, "dedup.db") +
		"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(FULL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// One connection: SQLite serialises writers anyway, and a single
	// connection turns "database is locked" retries into plain queueing.
	db.SetMaxOpenConns(1)
	s, err := newSQLStore(context.Background(), db, opts, true)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.ownsDB = true
	return s, nil
}

// NewPostgres creates the table if needed in db (opened with the pgx
// stdlib driver, "pgx") and returns a store on it. Close does not close db.
// For effects written to the same database prefer ClaimTx / ClaimPgxTx.
func NewPostgres(ctx context.Context, db *sql.DB, opts Options) (*SQLStore, error) {
	return newSQLStore(ctx, db, opts, false)
}

func newSQLStore(ctx context.Context, db *sql.DB, opts Options, sqlite bool) (*SQLStore, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &SQLStore{db: db, opts: opts, sqlite: sqlite}
	t := opts.Table
	s.qClaim = s.q(`INSERT INTO ` + t + ` AS d (id, token, done, expires_at) VALUES ($1, $2, 0, $3)
		ON CONFLICT (id) DO UPDATE SET token = excluded.token, done = 0, expires_at = excluded.expires_at
		WHERE d.expires_at <= $4`)
	s.qTxMark = s.q(`INSERT INTO ` + t + ` AS d (id, token, done, expires_at) VALUES ($1, $2, 1, $3)
		ON CONFLICT (id) DO UPDATE SET token = excluded.token, done = 1, expires_at = excluded.expires_at
		WHERE d.expires_at <= $4`)
	s.qState = s.q(`SELECT done, expires_at FROM ` + t + ` WHERE id = $1`)
	s.qConf = s.q(`UPDATE ` + t + ` SET done = 1, expires_at = $3 WHERE id = $1 AND token = $2 AND done = 0`)
	s.qRel = s.q(`DELETE FROM ` + t + ` WHERE id = $1 AND token = $2 AND done = 0`)
	// The outer expires_at check re-applies to a row re-claimed between the
	// subquery and the delete, so cleanup never deletes a live claim.
	s.qClean = s.q(`DELETE FROM ` + t + ` WHERE expires_at <= $1 AND id IN
		(SELECT id FROM ` + t + ` WHERE expires_at <= $1 LIMIT $2)`)
	// An index name is never schema-qualified: it lives in its table's schema.
	idx := t[strings.LastIndex(t, ".")+1:] + "_expires"
	ddl := []string{
		`CREATE TABLE IF NOT EXISTS ` + t + ` (id TEXT PRIMARY KEY, token TEXT NOT NULL,
			done SMALLINT NOT NULL, expires_at BIGINT NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS ` + idx + ` ON ` + t + ` (expires_at)`,
	}
	for _, q := range ddl {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("dedup: creating table: %w", err)
		}
	}
	return s, nil
}

// q adapts PostgreSQL placeholders to SQLite's numbered form.
func (s *SQLStore) q(query string) string {
	if s.sqlite {
		return strings.ReplaceAll(query, "$", "?")
	}
	return query
}

func (s *SQLStore) ms(t time.Time) int64 { return t.UnixMilli() }

// Claim implements Store.
func (s *SQLStore) Claim(ctx context.Context, id string, lease time.Duration) (Status, Claim, error) {
	if lease <= 0 {
		lease = DefaultLease
	}
	for {
		now := s.opts.Now()
		c := Claim{ID: id, Token: newToken()}
		res, err := s.db.ExecContext(ctx, s.qClaim, id, c.Token, s.ms(now.Add(lease)), s.ms(now))
		if err != nil {
			return 0, Claim{}, fmt.Errorf("dedup: claim: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return Claimed, c, nil
		}
		st, ok, err := s.state(ctx, s.db.QueryRowContext(ctx, s.qState, id))
		if err != nil {
			return 0, Claim{}, err
		}
		if ok {
			return st, Claim{}, nil
		}
		// The row vanished or expired between the two statements (cleanup,
		// release): claim again.
	}
}

// state reads a row's status; ok is false if the row is gone or expired.
func (s *SQLStore) state(ctx context.Context, row interface{ Scan(...any) error }) (Status, bool, error) {
	var done int
	var exp int64
	switch err := row.Scan(&done, &exp); {
	case errors.Is(err, sql.ErrNoRows), errors.Is(err, pgx.ErrNoRows):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("dedup: reading claim: %w", err)
	}
	if exp <= s.ms(s.opts.Now()) {
		return 0, false, nil
	}
	if done == 1 {
		return Duplicate, true, nil
	}
	return InFlight, true, nil
}

// Confirm implements Store.
func (s *SQLStore) Confirm(ctx context.Context, c Claim) error {
	return s.one(s.db.ExecContext(ctx, s.qConf, c.ID, c.Token, s.ms(s.opts.Now().Add(s.opts.Retention))))
}

// Release implements Store.
func (s *SQLStore) Release(ctx context.Context, c Claim) error {
	return s.one(s.db.ExecContext(ctx, s.qRel, c.ID, c.Token))
}

func (s *SQLStore) one(res sql.Result, err error) error {
	if err != nil {
		return fmt.Errorf("dedup: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrClaimLost
	}
	return nil
}

// Cleanup implements Store.
func (s *SQLStore) Cleanup(ctx context.Context, limit int) (int, error) {
	res, err := s.db.ExecContext(ctx, s.qClean, s.ms(s.opts.Now()), limit)
	if err != nil {
		return 0, fmt.Errorf("dedup: cleanup: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// Close implements Store; it closes the database only if the store opened it.
func (s *SQLStore) Close() error {
	if s.ownsDB {
		return s.db.Close()
	}
	return nil
}

// ClaimTx is the atomic variant: it writes id as processed inside the
// caller's transaction tx, to be committed together with the business write.
// Claimed means "apply the effect in tx and commit": the commit is the
// confirm, a rollback (or a crash) is the release, so there is no window
// where the effect exists without the mark or the reverse. A concurrent
// transaction claiming the same id blocks on the unique key until this one
// ends, then gets Duplicate (committed) or Claimed (rolled back). Use READ
// COMMITTED: under REPEATABLE READ or SERIALIZABLE the loser gets a
// serialization error instead of Duplicate, which is safe but must be retried.
func (s *SQLStore) ClaimTx(ctx context.Context, tx *sql.Tx, id string) (Status, error) {
	now := s.opts.Now()
	res, err := tx.ExecContext(ctx, s.qTxMark, id, newToken(), s.ms(now.Add(s.opts.Retention)), s.ms(now))
	if err != nil {
		return 0, fmt.Errorf("dedup: claim: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return Claimed, nil
	}
	return s.txState(s.state(ctx, tx.QueryRowContext(ctx, s.qState, id)))
}

// ClaimPgxTx is ClaimTx for a pgx transaction.
func (s *SQLStore) ClaimPgxTx(ctx context.Context, tx pgx.Tx, id string) (Status, error) {
	now := s.opts.Now()
	tag, err := tx.Exec(ctx, s.qTxMark, id, newToken(), s.ms(now.Add(s.opts.Retention)), s.ms(now))
	if err != nil {
		return 0, fmt.Errorf("dedup: claim: %w", err)
	}
	if tag.RowsAffected() == 1 {
		return Claimed, nil
	}
	return s.txState(s.state(ctx, tx.QueryRow(ctx, s.qState, id)))
}

func (s *SQLStore) txState(st Status, ok bool, err error) (Status, error) {
	if err != nil {
		return 0, err
	}
	if !ok {
		// Expired between the upsert and the read: treat as busy and let the
		// caller retry rather than loop inside its transaction.
		return InFlight, nil
	}
	return st, nil
}
