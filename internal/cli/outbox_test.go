package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/eos/outbox"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func runOutbox(ctx context.Context, out *syncBuffer, args ...string) error {
	root := &cobra.Command{Use: "exactly", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(OutboxCommand())
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(out)
	return root.ExecuteContext(ctx)
}

// outboxSchema creates a schema with an outbox table for one test and drops
// it (and the test's slot and publication, which pin WAL) at the end.
func outboxSchema(t *testing.T) (*sql.DB, outbox.Table, string) {
	t.Helper()
	db, err := sql.Open("pgx", testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "cli_outbox_" + hex.EncodeToString(b[:])
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", testenv.PostgresDSN(), err, testenv.PostgresHint)
	}
	t.Cleanup(func() {
		for range 50 {
			db.Exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, schema)
			if _, err := db.Exec(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, schema); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		db.Exec("DROP PUBLICATION IF EXISTS " + schema)
		db.Exec("DROP SCHEMA " + schema + " CASCADE")
		db.Close()
	})
	tbl := outbox.Table{Name: schema + ".outbox"}
	if err := tbl.CreateSchema(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db, tbl, schema
}

// `exactly outbox relay` publishes rows written before and while it runs,
// in both modes, and stops cleanly on cancellation (SIGINT/SIGTERM in the
// binary).
func TestOutboxRelayCommand(t *testing.T) {
	for _, mode := range []string{"poll", "cdc"} {
		t.Run(mode, func(t *testing.T) {
			addr := startBroker(t)
			db, tbl, schema := outboxSchema(t)
			if mode == "cdc" {
				var level string
				db.QueryRow("SHOW wal_level").Scan(&level)
				if level != "logical" {
					t.Fatalf("PostgreSQL wal_level=%s; --cdc needs logical (.ci/run sets it: ALTER SYSTEM SET wal_level = logical, restart)", level)
				}
			}
			prefix := "cli." + mode + "."
			createTopic(t, addr, prefix+"order", 2)
			write := func(i int) {
				tx, _ := db.Begin()
				if err := tbl.Write(context.Background(), tx, &outbox.Event{AggregateType: "order", AggregateID: fmt.Sprint("o-", i%3),
					Type: "Created", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"outbox", "relay", "--dsn", testenv.PostgresDSN(), "--table", tbl.Name, "--bootstrap", addr,
				"--topic-prefix", prefix, "--name", schema, "--checkpoint-topic", "ckpt-" + schema, "--poll-interval", "20ms",
				"--metrics-listen", "127.0.0.1:0"}
			if mode == "cdc" {
				args = append(args, "--cdc", "--slot", schema)
			} else {
				for i := range 5 { // rows older than the relay: polling publishes them
					write(i)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out syncBuffer
			done := make(chan error, 1)
			go func() { done <- runOutbox(ctx, &out, args...) }()
			// Wait for the start line: a CDC relay has its slot by then.
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(out.String(), "outbox relay") {
				select {
				case err := <-done:
					t.Fatalf("relay exited: %v\n%s", err, out.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("relay did not start:\n%s", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if mode == "cdc" {
				for i := range 5 {
					write(i)
				}
			}
			for i := 5; i < 10; i++ {
				write(i)
			}
			cl, _ := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(prefix+"order"),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
			defer cl.Close()
			seen := map[string]int{}
			for n := 0; n < 10; {
				pctx, pcancel := context.WithTimeout(context.Background(), 20*time.Second)
				fs := cl.PollFetches(pctx)
				timedOut := pctx.Err() != nil
				pcancel()
				if timedOut {
					t.Fatalf("read %d of 10 events\n%s", n, out.String())
				}
				fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++; n++ })
			}
			// The metrics count what was published.
			m := regexp.MustCompile(`metrics at (http://\S+/metrics)`).FindStringSubmatch(out.String())
			if m == nil {
				t.Fatalf("no metrics line:\n%s", out.String())
			}
			wantMetric := fmt.Sprintf(`exactly_outbox_published_total{mode=%q,relay=%q} 10`, mode, schema)
			// Both relays report their lag in rows: none once all is published.
			wantLagRows := fmt.Sprintf(`exactly_outbox_lag_rows{mode=%q,relay=%q} 0`, mode, schema)
			for deadline := time.Now().Add(10 * time.Second); ; {
				resp, err := http.Get(m[1])
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), wantMetric) && strings.Contains(string(body), wantLagRows) {
					// Both relays report lag in seconds too.
					if lagSeconds := fmt.Sprintf(`exactly_outbox_lag_seconds{mode=%q,relay=%q} `, mode, schema); !strings.Contains(string(body), lagSeconds) {
						t.Fatalf("metrics lack %s:\n%s", lagSeconds, body)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("metrics lack %s or %s:\n%s", wantMetric, wantLagRows, body)
				}
				time.Sleep(100 * time.Millisecond)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("relay: %v\n%s", err, out.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatal("relay did not stop after cancellation")
			}
			for i := range 10 {
				if seen[fmt.Sprint(i)] != 1 {
					t.Errorf("event %d seen %d times", i, seen[fmt.Sprint(i)])
				}
			}
			if !strings.Contains(out.String(), "stopped") {
				t.Errorf("no stop line:\n%s", out.String())
			}
		})
	}
}

// Setup mistakes fail at once with a readable reason.
func TestOutboxRelayCommandErrors(t *testing.T) {
	addr := startBroker(t)
	db, _, schema := outboxSchema(t)
	ctx := context.Background()
	if _, err := db.Exec(`CREATE TABLE ` + schema + `.plain (id uuid PRIMARY KEY, aggregatetype text NOT NULL,
		aggregateid text NOT NULL, type text NOT NULL, payload jsonb)`); err != nil {
		t.Fatal(err)
	}
	uninit := "lacks column headers, column txid, column aggregateversion, column readyxid, column created_at, trigger plain_order, " +
		"index plain_relay_order: outbox table is not initialised; run `exactly outbox init --dsn DSN --table " + schema + ".plain`"
	for _, c := range []struct {
		want string
		args []string
	}{
		{"--dsn is required", []string{"outbox", "relay", "--bootstrap", addr}},
		{"need --cdc", []string{"outbox", "relay", "--dsn", testenv.PostgresDSN(), "--slot", "s"}},
		{"connecting to PostgreSQL", []string{"outbox", "relay", "--dsn", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2", "--bootstrap", addr}},
		{"does not exist", []string{"outbox", "relay", "--dsn", testenv.PostgresDSN(), "--table", schema + ".missing", "--bootstrap", addr}},
		{"does not exist", []string{"outbox", "relay", "--cdc", "--dsn", testenv.PostgresDSN(), "--table", schema + ".missing", "--bootstrap", addr}},
		{uninit, []string{"outbox", "relay", "--dsn", testenv.PostgresDSN(), "--table", schema + ".plain", "--bootstrap", addr}},
		{uninit, []string{"outbox", "relay", "--cdc", "--dsn", testenv.PostgresDSN(), "--table", schema + ".plain", "--bootstrap", addr}},
		{"cannot connect to broker 127.0.0.1:1", []string{"outbox", "relay", "--dsn", testenv.PostgresDSN(), "--table", schema + ".outbox", "--bootstrap", "127.0.0.1:1", "--setup-timeout", "2s"}},
	} {
		var out syncBuffer
		err := runOutbox(ctx, &out, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("exactly %s: %v; want an error containing %q\n%s", strings.Join(c.args, " "), err, c.want, out.String())
		}
	}
}

// `exactly outbox init` prints its DDL, creates a table that takes plain
// INSERTs from psql, and running it again changes nothing.
func TestOutboxInitCommand(t *testing.T) {
	testenv.RequireTool(t, "/usr/bin/psql", "apt-get install postgresql-client")
	db, _, schema := outboxSchema(t)
	ctx := context.Background()
	var out syncBuffer
	if err := runOutbox(ctx, &out, "outbox", "init", "--table", schema+".box", "--payload", "jsonb", "--print"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"CREATE TABLE IF NOT EXISTS " + schema + ".box", "payload jsonb", "CREATE OR REPLACE TRIGGER box_order"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("--print lacks %q:\n%s", want, out.String())
		}
	}
	var exists bool
	db.QueryRow(`SELECT to_regclass($1) IS NOT NULL`, schema+".box").Scan(&exists)
	if exists {
		t.Fatal("--print created the table")
	}
	for range 2 {
		if err := runOutbox(ctx, &out, "outbox", "init", "--dsn", testenv.PostgresDSN(), "--table", schema+".box", "--payload", "jsonb"); err != nil {
			t.Fatalf("init: %v\n%s", err, out.String())
		}
	}
	sqlText := "BEGIN;\n"
	for i := range 3 {
		sqlText += fmt.Sprintf("INSERT INTO %s.box (id, aggregatetype, aggregateid, type, payload) VALUES (gen_random_uuid(), 'order', 'o-1', 'Created', '{\"i\": %d}');\n", schema, i)
	}
	sqlText += "COMMIT;\n"
	cmd := exec.Command("/usr/bin/psql", "-X", "-v", "ON_ERROR_STOP=1", "-q", testenv.PostgresDSN())
	cmd.Stdin = strings.NewReader(sqlText)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("psql: %v\n%s", err, b)
	}
	var versions string
	if err := db.QueryRow(`SELECT string_agg(aggregateversion::text || '=' || (payload->>'i'), ' ' ORDER BY aggregateversion) FROM ` + schema + `.box`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != "1=0 2=1 3=2" {
		t.Fatalf("versions after plain INSERTs: %q, want 1=0 2=1 3=2", versions)
	}
}
