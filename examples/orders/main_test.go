package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
)

// The service runs end to end against PostgreSQL and the embedded broker,
// in both relay modes: 4 of 6 Go orders and 2 psql orders placed and
// published exactly once, the 2 declined ones never published, and the
// ledger consumer books each once even when it replays them all.
func TestOrdersOutboxEndToEnd(t *testing.T) {
	dsn := testenv.PostgresDSN()
	for _, mode := range []string{"poll", "cdc"} {
		t.Run(mode, func(t *testing.T) {
			var b [6]byte
			_, _ = rand.Read(b[:])
			schema := "orders_test_" + hex.EncodeToString(b[:])
			testenv.RequireTool(t, "/usr/bin/psql", "apt-get install postgresql-client")
			args := []string{"--psql", "/usr/bin/psql", "--dsn", dsn, "--schema", schema, "--orders", "6", "--decline-every", "3", "--cleanup", "--timeout", "30s"}
			if mode == "cdc" {
				db, err := sql.Open("pgx", dsn)
				if err != nil {
					t.Fatal(err)
				}
				var level string
				err = db.QueryRow("SHOW wal_level").Scan(&level)
				db.Close()
				if err != nil {
					t.Fatalf("PostgreSQL at %s: %v", dsn, err)
				}
				if level != "logical" {
					t.Fatalf("wal_level=%s; --cdc needs logical (.ci/run sets it: ALTER SYSTEM SET wal_level = logical, restart PostgreSQL)", level)
				}
				args = append(args, "--cdc")
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var out bytes.Buffer
			if err := run(ctx, args, &out); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			s := out.String()
			// 4 Go orders (2 of 6 declined) and 2 psql orders; the replay
			// books nothing twice.
			if strings.Count(s, "placed o-") != 6 || strings.Count(s, "with psql") != 2 || strings.Count(s, "declined o-") != 2 ||
				strings.Count(s, "received OrderPlaced") != 6 || !strings.Contains(s, "exactly once") ||
				!strings.Contains(s, "ledger: 6 entries, 13500 cents; replay after a consumer crash: 6 duplicates skipped") {
				t.Fatalf("unexpected output:\n%s", s)
			}
			// --cleanup dropped everything, including the CDC slot.
			db, _ := sql.Open("pgx", dsn)
			defer db.Close()
			var n int
			db.QueryRow(`SELECT count(*) FROM pg_namespace WHERE nspname = $1`, schema).Scan(&n)
			var slots int
			db.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1`, "%"+schema).Scan(&slots)
			if n != 0 || slots != 0 {
				t.Errorf("left behind: %d schemas, %d slots", n, slots)
			}
		})
	}
}
