package dedup_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/eos/dedup"
	"github.com/exactly/exactly/eos/dedup/storetest"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
)

func randName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// pgSchema opens the test database and gives the test its own schema,
// dropped at the end.
func pgSchema(t *testing.T) (*sql.DB, string) {
	t.Helper()
	db, err := sql.Open("pgx", testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(40)
	schema := randName("dedup_")
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", testenv.PostgresDSN(), err, testenv.PostgresHint)
	}
	t.Cleanup(func() {
		db.Exec("DROP SCHEMA " + schema + " CASCADE")
		db.Close()
	})
	return db, schema
}

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention time.Duration) dedup.Store {
		s, err := dedup.OpenSQLite(t.TempDir(), dedup.Options{Retention: retention})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}, storetest.Features{Leases: true, Cleanup: true})
}

func TestPostgresConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention time.Duration) dedup.Store {
		db, schema := pgSchema(t)
		s, err := dedup.NewPostgres(context.Background(), db, dedup.Options{Table: schema + ".processed", Retention: retention})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storetest.Features{Leases: true, Cleanup: true})
}

func TestRedisConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention time.Duration) dedup.Store {
		c := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr()})
		prefix := randName("exactly-test:") + ":"
		if err := c.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("Redis at %s: %v\n%s", testenv.RedisAddr(), err, testenv.RedisHint)
		}
		t.Cleanup(func() {
			ctx := context.Background()
			keys, _ := c.Keys(ctx, prefix+"*").Result()
			if len(keys) > 0 {
				c.Del(ctx, keys...)
			}
			c.Close()
		})
		return dedup.NewRedis(c, dedup.RedisOptions{Prefix: prefix, Retention: retention})
	}, storetest.Features{Leases: true, Cleanup: false})
}

// txStore runs the conformance suite through the atomic variant: Claim
// opens a transaction and marks the id in it, Confirm commits, Release rolls
// back, exactly what an application's own transaction does around its
// business write.
type txStore struct {
	s   *dedup.SQLStore
	db  *sql.DB
	mu  sync.Mutex
	txs map[string]*sql.Tx
	n   int
}

func (s *txStore) Claim(ctx context.Context, id string, _ time.Duration) (dedup.Status, dedup.Claim, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, dedup.Claim{}, err
	}
	st, err := s.s.ClaimTx(ctx, tx, id)
	if err != nil || st != dedup.Claimed {
		tx.Rollback()
		return st, dedup.Claim{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	c := dedup.Claim{ID: id, Token: string(rune(s.n))}
	s.txs[c.Token] = tx
	return st, c, nil
}

func (s *txStore) take(c dedup.Claim) *sql.Tx {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.txs[c.Token]
	delete(s.txs, c.Token)
	return tx
}

func (s *txStore) Confirm(_ context.Context, c dedup.Claim) error { return s.take(c).Commit() }
func (s *txStore) Release(_ context.Context, c dedup.Claim) error { return s.take(c).Rollback() }
func (s *txStore) Cleanup(ctx context.Context, limit int) (int, error) {
	return s.s.Cleanup(ctx, limit)
}
func (s *txStore) Close() error { return nil }

func TestPostgresTxConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, retention time.Duration) dedup.Store {
		db, schema := pgSchema(t)
		s, err := dedup.NewPostgres(context.Background(), db, dedup.Options{Table: schema + ".processed", Retention: retention})
		if err != nil {
			t.Fatal(err)
		}
		ts := &txStore{s: s, db: db, txs: map[string]*sql.Tx{}}
		t.Cleanup(func() { // before the schema drop, which open transactions would block
			for _, tx := range ts.txs {
				tx.Rollback()
			}
		})
		return ts
	}, storetest.Features{Leases: false, Cleanup: true})
}

// The point of the atomic variant: the business write and the processed-id
// row commit or vanish together, with pgx as the driver.
func TestPostgresPgxTxAtomicWithBusinessWrite(t *testing.T) {
	ctx := context.Background()
	db, schema := pgSchema(t)
	s, err := dedup.NewPostgres(ctx, db, dedup.Options{Table: schema + ".processed"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE " + schema + ".balance (n int)"); err != nil {
		t.Fatal(err)
	}
	db.Exec("INSERT INTO " + schema + ".balance VALUES (0)")
	conn, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	deliver := func(fail bool) (dedup.Status, error) {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return 0, err
		}
		defer tx.Rollback(ctx)
		st, err := s.ClaimPgxTx(ctx, tx, "pay-1")
		if err != nil || st != dedup.Claimed {
			return st, err
		}
		if _, err := tx.Exec(ctx, "UPDATE "+schema+".balance SET n = n + 10"); err != nil {
			return 0, err
		}
		if fail {
			return st, errors.New("crash before commit")
		}
		return st, tx.Commit(ctx)
	}
	if _, err := deliver(true); err == nil {
		t.Fatal("want failure")
	}
	for i, want := range []dedup.Status{dedup.Claimed, dedup.Duplicate, dedup.Duplicate} {
		if st, err := deliver(false); err != nil || st != want {
			t.Fatalf("delivery %d = %v, %v; want %v", i, st, err, want)
		}
	}
	var n int
	if err := db.QueryRow("SELECT n FROM " + schema + ".balance").Scan(&n); err != nil || n != 10 {
		t.Fatalf("balance = %d, %v; want 10 (applied exactly once)", n, err)
	}
}
