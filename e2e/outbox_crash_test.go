package e2e

// SIGKILL crash test for the outbox relay process: `exactly outbox relay`
// is killed at random moments while psql processes commit outbox rows with
// plain INSERTs, and restarted; every committed row must reach Kafka exactly
// once and in commit order per aggregate, in polling and in CDC mode.

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// startRelay runs `exactly outbox relay` with args, logging to logPath.
func startRelay(t *testing.T, logPath string, args ...string) *childProc {
	t.Helper()
	return startChild(t, logPath, exactlyBinary(t), append([]string{"outbox", "relay"}, args...)...)
}

// TestOutboxRelaySIGKILL: after `exactly outbox init`, 40 concurrent writer
// transactions of 100 rows each, written by real psql processes with plain
// INSERTs (no lock taken by the writer) over 10 aggregates of two aggregate
// types; 8 of them hold their transaction open for seconds mid-way and
// commit late. The relay process starts together with the writers (its
// first start races them; in CDC mode rows committed before its slot exists
// come from the initial snapshot) and is SIGKILLed 3 times at random
// moments and restarted. Reading every outbox topic read_committed
// afterwards:
//   - every row is there exactly once (by its id header);
//   - per aggregate, the aggregateversion headers are 1..n, gap-free and
//     increasing, and match the table;
//   - per aggregate, the events of one writer transaction form one
//     contiguous run, in the transaction's insert order.
func TestOutboxRelaySIGKILL(t *testing.T) {
	testenv.RequireTool(t, "/usr/bin/psql", "apt-get install postgresql-client")
	for _, mode := range []string{"poll", "cdc"} {
		t.Run(mode, func(t *testing.T) { outboxRelaySIGKILL(t, mode) })
	}
}

// psqlWriter is one writer transaction in a psql process fed through a
// pipe, so the test decides when it commits.
type psqlWriter struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   strings.Builder
}

func startPsql(t *testing.T) *psqlWriter {
	t.Helper()
	w := &psqlWriter{cmd: exec.Command("/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", testenv.PostgresDSN())}
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return w
}

// rowID is the id of writer transaction w's i-th row, so the test can tell
// a record's transaction and insert position from its id header.
func rowID(w, i int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", w*1000+i) }

func parseRowID(id string) (w, i int, ok bool) {
	var n int
	if _, err := fmt.Sscanf(id[24:], "%012d", &n); err != nil || len(id) != 36 {
		return 0, 0, false
	}
	return n / 1000, n % 1000, true
}

func outboxRelaySIGKILL(t *testing.T, mode string) {
	const writers, rowsPerWriter, aggregates, lateWriters, kills = 40, 100, 10, 8, 3
	ctx := context.Background()
	broker := startBroker(t, t.TempDir(), freePort(t))

	db, err := sql.Open("pgx", testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	schema := outboxSchema(t, db, "e2e_outbox_")
	var relay *childProc
	t.Cleanup(func() {
		if relay != nil {
			relay.kill()
		}
	})
	if mode == "cdc" {
		requireLogical(t, db)
	}
	table := schema + ".outbox"
	if code, out := runExactly(t, "outbox", "init", "--dsn", testenv.PostgresDSN(), "--table", table, "--payload", "jsonb"); code != 0 {
		t.Fatalf("exactly outbox init: exit %d\n%s", code, out)
	}
	prefix := "crash." + mode + "."
	aggTypes := []string{"order", "payment"}
	{
		cl, err := kgo.NewClient(kgo.SeedBrokers(broker.addr))
		if err != nil {
			t.Fatal(err)
		}
		for _, at := range aggTypes {
			resp, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, prefix+at)
			if err == nil {
				err = resp.Err
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		cl.Close()
	}

	logPath := filepath.Join(t.TempDir(), "relay.log")
	args := []string{"--dsn", testenv.PostgresDSN(), "--table", table, "--bootstrap", broker.addr, "--topic-prefix", prefix,
		"--name", schema, "--checkpoint-topic", "ckpt-" + schema, "--batch-size", "50", "--poll-interval", "20ms",
		"--setup-timeout", "2m"}
	if mode == "cdc" {
		args = append(args, "--cdc", "--slot", schema)
	}
	relayLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }

	// The writers and the relay's first start race. Each transaction
	// writes 100 rows over 1-3 aggregates, interleaved, first touching its
	// aggregates in ascending order (each aggregate's counter row stays
	// locked until commit, so any other order could deadlock). The late
	// writers stop half-way, hold their transaction open for seconds and
	// then finish and commit.
	var wg sync.WaitGroup
	writeErr := make(chan error, writers)
	// The last writers start only once the relay has begun its work (in
	// CDC mode: its slot exists and the snapshot began), so that mode
	// publishes rows from both the snapshot and the stream: creating a
	// slot waits for the transactions running meanwhile, and with all 40
	// overlapping the snapshot would hold every row.
	const gatedWriters = 10
	gate := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), 11))
			subset := rng.Perm(aggregates)[:1+rng.IntN(3)]
			slices.Sort(subset)
			var stmts []string
			for i := range rowsPerWriter {
				a := subset[rng.IntN(len(subset))]
				if i < len(subset) {
					a = subset[i]
				}
				stmts = append(stmts, fmt.Sprintf("INSERT INTO %s (id, aggregatetype, aggregateid, type, payload) "+
					"VALUES ('%s', '%s', 'agg-%d', 'T', '{\"w\": %d, \"i\": %d}');\n", table, rowID(w, i), aggTypes[a%2], a, w, i))
			}
			if w >= writers-gatedWriters {
				<-gate
			}
			if w >= lateWriters+4 {
				time.Sleep(time.Duration(rng.IntN(10000)) * time.Millisecond)
			}
			p := startPsql(t)
			io.WriteString(p.stdin, "BEGIN;\n"+strings.Join(stmts[:rowsPerWriter/2], ""))
			if w < lateWriters {
				time.Sleep(time.Duration(3000+rng.IntN(4000)) * time.Millisecond)
			}
			io.WriteString(p.stdin, strings.Join(stmts[rowsPerWriter/2:], "")+"COMMIT;\n")
			p.stdin.Close()
			if err := p.cmd.Wait(); err != nil {
				writeErr <- fmt.Errorf("psql writer %d: %v\n%s", w, err, p.out.String())
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()
	// The relay starts once a few transactions committed, while the late
	// ones are open and the rest have not begun: in CDC mode the slot is
	// created amid them and the snapshot must hold the committed ones.
	for n := 0; n < 200; {
		db.QueryRow("SELECT count(*) FROM " + table).Scan(&n)
		time.Sleep(20 * time.Millisecond)
	}
	relay = startRelay(t, logPath, args...)
	lastStart := 0
	go func() {
		defer close(gate)
		for deadline := time.Now().Add(2 * time.Minute); mode == "cdc" && time.Now().Before(deadline); {
			if strings.Contains(relayLog(), "initial snapshot begins") {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// Kill the relay at random moments while the writers run.
	for i := range kills {
		time.Sleep(time.Duration(1000+mrand.IntN(1500)) * time.Millisecond)
		select {
		case <-relay.done:
			t.Fatalf("relay exited by itself: %v\n%s", relay.err, relayLog())
		default:
		}
		relay.kill()
		var n int
		db.QueryRow("SELECT count(*) FROM " + table).Scan(&n)
		t.Logf("SIGKILL %d with %d of %d rows committed", i+1, n, writers*rowsPerWriter)
		time.Sleep(time.Duration(mrand.IntN(300)) * time.Millisecond)
		lastStart = len(relayLog())
		relay = startRelay(t, logPath, args...)
	}
	select {
	case <-writersDone:
	case <-time.After(3 * time.Minute):
		t.Fatal("writers did not finish in 3 minutes")
	}
	close(writeErr)
	for err := range writeErr {
		t.Fatal(err)
	}

	want := tableRows(t, db, table)
	if len(want) != writers*rowsPerWriter {
		t.Fatalf("%d rows committed, want %d", len(want), writers*rowsPerWriter)
	}
	topics := []string{prefix + aggTypes[0], prefix + aggTypes[1]}
	waitPublished(t, broker.addr, topics, len(want), relay, relayLog)
	deadline := time.Now().Add(time.Minute)
	// Stop it only once it is up: a relay interrupted while starting exits
	// with an error.
	for !strings.Contains(relayLog()[lastStart:], " -> "+prefix) {
		select {
		case <-relay.done:
			t.Fatalf("relay exited: %v\n%s", relay.err, relayLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the last relay did not start\n%s", relayLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
	relay.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-relay.done:
		if relay.err != nil {
			t.Fatalf("relay exited with %v after SIGTERM\n%s", relay.err, relayLog())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("relay did not stop within 30s of SIGTERM\n%s", relayLog())
	}
	relay = nil

	byAgg := checkPublished(t, broker.addr, topics, want)
	// Per aggregate, one writer transaction's events form one run, in its
	// insert order (ids encode transaction and position).
	runs := 0
	for agg, recs := range byAgg {
		done := map[int]bool{} // writer transactions whose run in agg ended
		lastW, lastI := -1, -1
		for _, r := range recs {
			w, i, ok := parseRowID(header(r, "id"))
			if !ok {
				t.Errorf("unexpected row id %q", header(r, "id"))
				break
			}
			if w != lastW {
				if done[w] {
					t.Errorf("aggregate %s: writer transaction %d's events are not one contiguous run (again at version %s)",
						agg, w, header(r, "aggregateversion"))
					break
				}
				if lastW >= 0 {
					done[lastW] = true
				}
				lastW, lastI = w, -1
				runs++
			}
			if i <= lastI {
				t.Errorf("aggregate %s: writer transaction %d's row %d after its row %d: not insert order", agg, w, i, lastI)
				break
			}
			lastI = i
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("relay log:\n%s", relayLog())
	} else {
		t.Logf("%d rows in %d aggregates (%d transaction runs), %d restarts after SIGKILL: published exactly once, "+
			"versions gap-free, transactions contiguous (%d relay log lines)",
			len(want), len(byAgg), runs, kills, strings.Count(relayLog(), "\n"))
	}
	if mode == "cdc" {
		m := regexp.MustCompile(`initial snapshot done.* rows=(\d+)`).FindStringSubmatch(relayLog())
		n := -1
		if m != nil {
			n, _ = strconv.Atoi(m[1])
		}
		if n <= 0 || n > writers*rowsPerWriter-gatedWriters*rowsPerWriter {
			t.Errorf("the CDC relay's initial snapshot published %d rows; the test meant it to race committed writers "+
				"and leave at least the %d gated writers' rows to the stream", n, gatedWriters)
		} else {
			t.Logf("the initial snapshot published %d rows, the stream %d", n, writers*rowsPerWriter-n)
		}
	}
}

// header returns r's header key, or "".
func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// requireLogical fails the test with the fix when PostgreSQL cannot serve
// logical replication.
func requireLogical(t *testing.T, db *sql.DB) {
	t.Helper()
	var level string
	if err := db.QueryRow("SHOW wal_level").Scan(&level); err != nil {
		t.Fatal(err)
	}
	if level != "logical" {
		t.Fatalf("PostgreSQL wal_level=%s; the CDC relay needs logical. .ci/run sets it; by hand: "+
			`psql -h 127.0.0.1 -U postgres -c "ALTER SYSTEM SET wal_level = logical" and restart PostgreSQL`, level)
	}
}

// outboxSchema creates a schema named prefix and a random suffix, and
// drops it (with its replication slot) and closes db when the test ends.
func outboxSchema(t *testing.T, db *sql.DB, prefix string) string {
	t.Helper()
	schema := testenv.RandName(prefix)
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", testenv.PostgresDSN(), err, testenv.PostgresHint)
	}
	dropOutboxAtEnd(t, db, schema)
	return schema
}

// dropOutboxAtEnd drops schema and its replication slot and closes db
// when the test ends, after the cleanups registered later (the relays
// that use them).
func dropOutboxAtEnd(t *testing.T, db *sql.DB, schema string) {
	t.Cleanup(func() {
		dropSlot(db, schema)
		db.Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE")
		db.Close()
	})
}

// insertOutboxRows inserts one outbox row of type typ per aggregate in
// aggs (agg-N), in one transaction, as a writer in any language would.
func insertOutboxRows(ctx context.Context, db *sql.DB, table, typ string, aggs []int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for _, a := range aggs {
		if _, err := tx.Exec(`INSERT INTO `+table+` (id, aggregatetype, aggregateid, type, payload)
			VALUES (gen_random_uuid(), 'order', $1, $2, 'x')`, fmt.Sprint("agg-", a), typ); err != nil {
			tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// dropSlot drops a test's replication slot and publication (both named
// name): a slot left behind pins WAL forever.
func dropSlot(db *sql.DB, name string) {
	for range 50 {
		db.Exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, name)
		if _, err := db.Exec(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	db.Exec("DROP PUBLICATION IF EXISTS " + name)
}
