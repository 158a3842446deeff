package e2e

// SIGKILL crash test for the outbox relay process: `exactly outbox relay`
// is killed at random moments while writers commit outbox rows, and
// restarted; every committed row must reach Kafka exactly once and in
// commit order per aggregate, in polling and in CDC mode.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/exactly/exactly/eos/outbox"
	"github.com/exactly/exactly/internal/testenv"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// relayProc is one `exactly outbox relay` subprocess.
type relayProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startRelay(t *testing.T, logPath string, args ...string) *relayProc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exactlyBinary(t), append([]string{"outbox", "relay"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &relayProc{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); logf.Close(); close(p.done) }()
	return p
}

func (p *relayProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// TestOutboxRelaySIGKILL: 40 concurrent writers × 100 rows (transactions of
// 1-4 rows) over 10 aggregates of two aggregate types, while the relay
// process is SIGKILLed 3 times at random moments and restarted. Reading
// every outbox topic read_committed afterwards, each row is there exactly
// once (by its id header), each aggregate on one partition, in seq order.
func TestOutboxRelaySIGKILL(t *testing.T) {
	for _, mode := range []string{"poll", "cdc"} {
		t.Run(mode, func(t *testing.T) { outboxRelaySIGKILL(t, mode) })
	}
}

func outboxRelaySIGKILL(t *testing.T, mode string) {
	const writers, rowsPerWriter, aggregates, kills = 40, 100, 10, 3
	ctx := context.Background()
	broker := startBroker(t, t.TempDir(), freePort(t))

	db, err := sql.Open("pgx", testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(writers + 5)
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	schema := "e2e_outbox_" + hex.EncodeToString(nonce[:])
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", testenv.PostgresDSN(), err, testenv.PostgresHint)
	}
	var relay *relayProc
	t.Cleanup(func() {
		if relay != nil {
			relay.kill()
		}
		// A slot left behind pins WAL forever.
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
	if mode == "cdc" {
		var level string
		if err := db.QueryRow("SHOW wal_level").Scan(&level); err != nil {
			t.Fatal(err)
		}
		if level != "logical" {
			t.Fatalf("PostgreSQL wal_level=%s; the CDC relay needs logical. .ci/run sets it; by hand: "+
				`psql -h 127.0.0.1 -U postgres -c "ALTER SYSTEM SET wal_level = logical" and restart PostgreSQL`, level)
		}
	}
	tbl := outbox.Table{Name: schema + ".outbox"}
	if err := tbl.CreateSchema(ctx, db); err != nil {
		t.Fatal(err)
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
	args := []string{"--dsn", testenv.PostgresDSN(), "--table", tbl.Name, "--bootstrap", broker.addr, "--topic-prefix", prefix,
		"--name", schema, "--checkpoint-topic", "ckpt-" + schema, "--batch-size", "50", "--poll-interval", "20ms"}
	if mode == "cdc" {
		args = append(args, "--cdc", "--slot", schema)
	}
	relayLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	started := func() {
		t.Helper()
		relay = startRelay(t, logPath, args...)
	}
	started()
	if mode == "cdc" {
		// Rows committed before the slot exists are not in its stream.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var n int
			db.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, schema).Scan(&n)
			if n == 1 {
				break
			}
			select {
			case <-relay.done:
				t.Fatalf("relay exited at start: %v\n%s", relay.err, relayLog())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("relay created no slot:\n%s", relayLog())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	var wg sync.WaitGroup
	var committed atomic.Int64
	writeErr := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), 7))
			for written := 0; written < rowsPerWriter; {
				n := min(1+rng.IntN(4), rowsPerWriter-written)
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					writeErr <- err
					return
				}
				for range n {
					a := rng.IntN(aggregates)
					e := &outbox.Event{AggregateType: aggTypes[a%2], AggregateID: fmt.Sprint("agg-", a), Type: "T",
						Payload: fmt.Appendf(nil, "w%d-%d", w, written)}
					if err := tbl.Write(ctx, tx, e); err != nil {
						tx.Rollback()
						writeErr <- err
						return
					}
					written++
				}
				if err := tx.Commit(); err != nil {
					writeErr <- err
					return
				}
				committed.Add(int64(n))
				time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	// Kill the relay at random moments while the writers run.
	for i := range kills {
		time.Sleep(time.Duration(300+mrand.IntN(1200)) * time.Millisecond)
		select {
		case <-relay.done:
			t.Fatalf("relay exited by itself: %v\n%s", relay.err, relayLog())
		default:
		}
		relay.kill()
		t.Logf("SIGKILL %d with %d of %d rows committed", i+1, committed.Load(), writers*rowsPerWriter)
		time.Sleep(time.Duration(mrand.IntN(300)) * time.Millisecond)
		started()
	}
	select {
	case <-writersDone:
	case <-time.After(2 * time.Minute):
		t.Fatal("writers did not finish in 2 minutes")
	}
	close(writeErr)
	for err := range writeErr {
		t.Fatal(err)
	}

	// Expected: every committed row, per aggregate in seq (= commit) order.
	rows, err := db.Query("SELECT id::text, aggregateid FROM " + tbl.Name + " ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	wantByAgg := map[string][]string{}
	want := 0
	for rows.Next() {
		var id, agg string
		rows.Scan(&id, &agg)
		wantByAgg[agg] = append(wantByAgg[agg], id)
		want++
	}
	rows.Close()
	if want != writers*rowsPerWriter {
		t.Fatalf("%d rows committed, want %d", want, writers*rowsPerWriter)
	}

	// Let the last relay catch up, then stop it cleanly.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n := 0
		for _, at := range aggTypes {
			n += len(txnRead(t, broker.addr, prefix+at, true))
		}
		if n >= want {
			break
		}
		select {
		case <-relay.done:
			t.Fatalf("relay exited: %v\n%s", relay.err, relayLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("published %d of %d rows after 2 minutes\n%s", n, want, relayLog())
		}
		time.Sleep(500 * time.Millisecond)
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

	// Read every outbox topic read_committed to its end.
	count := map[string]int{}
	gotByAgg := map[string][]string{}
	aggPart := map[string]int32{}
	total := 0
	for _, at := range aggTypes {
		for p, recs := range testenv.ReadToEnd(t, broker.addr, prefix+at, true) {
			for _, r := range recs {
				var id string
				for _, h := range r.Headers {
					if h.Key == "id" {
						id = string(h.Value)
					}
				}
				agg := string(r.Key)
				count[id]++
				total++
				gotByAgg[agg] = append(gotByAgg[agg], id)
				if q, ok := aggPart[agg]; ok && q != p {
					t.Errorf("aggregate %s on partitions %d and %d", agg, q, p)
				}
				aggPart[agg] = p
			}
		}
	}
	dups := 0
	for id, n := range count {
		if n != 1 {
			dups++
			if dups <= 10 {
				t.Errorf("row %s published %d times", id, n)
			}
		}
	}
	if total != want || len(count) != want {
		t.Errorf("published %d records, %d distinct rows; want %d (%d duplicated)", total, len(count), want, dups)
	}
	for agg, ids := range wantByAgg {
		if fmt.Sprint(gotByAgg[agg]) != fmt.Sprint(ids) {
			t.Errorf("aggregate %s: %d records, order differs from seq order", agg, len(gotByAgg[agg]))
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("relay log:\n%s", relayLog())
	} else {
		t.Logf("%d rows, %d restarts after SIGKILL: published exactly once, in order (%d relay log lines)",
			want, kills, strings.Count(relayLog(), "\n"))
	}
}
