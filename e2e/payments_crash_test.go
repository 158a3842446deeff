package e2e

// SIGKILL crash test for the exactly-once database sink (eos/sink) through
// the payments example: the consumer process is killed at random moments
// while it applies transfers and restarted; in the end every committed
// transfer is applied exactly once and no money is created or destroyed.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// transfer mirrors the example's record value; the test decodes it itself
// so its expectations do not come from the code under test.
type transfer struct {
	ID     string `json:"id"`
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

type placedTransfer struct {
	transfer
	partition int32
	offset    int64
}

// TestPaymentsSinkSurvivesSIGKILL: 5000 transfers are produced in Kafka
// transactions (with aborted ones in between); the payments consumer is
// SIGKILLed at random moments at least three times while applying them and
// restarted. After every kill the database is consistent (two ledger rows
// per applied transfer, balances summing to zero, stored offsets matching
// exactly what was applied); at the end every committed transfer is applied
// once, no aborted one is, and every balance equals the sum computed from
// the topic.
func TestPaymentsSinkSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test; skipped with -short")
	}
	const (
		n     = 5000
		kills = 4
		topic = "transfers"
	)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewSource(seed))

	db, err := sql.Open("pgx", testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", testenv.PostgresDSN(), err, testenv.PostgresHint)
	}
	var sb [6]byte
	_, _ = rand.Read(sb[:])
	schema := "e2e_payments_" + hex.EncodeToString(sb[:])
	t.Cleanup(func() {
		db.Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE")
		db.Close()
	})

	addr := freePort(t)
	startBroker(t, t.TempDir(), addr)
	bin := exampleBinary(t, "payments")
	common := []string{"--bootstrap", addr, "--schema", schema, "--dsn", testenv.PostgresDSN(), "--topic", topic}
	logDir := t.TempDir()

	out, err := exec.Command(bin, append([]string{"produce", "--n", fmt.Sprint(n), "--accounts", "40",
		"--seed", fmt.Sprint(seed % 1000), "--txn-size", "250", "--abort-every", "3", "--partitions", "3"}, common...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("produce: %v\n%s", err, out)
	}
	committed := readCommittedTransfers(t, addr, topic)
	if len(committed) != n {
		t.Fatalf("%d committed transfers on the topic, want %d", len(committed), n)
	}

	consume := func(i int, extra ...string) (*exec.Cmd, string) {
		logPath := filepath.Join(logDir, fmt.Sprintf("consumer-%d.log", i))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		// Static membership: the restarted process takes the killed one's
		// place at once instead of waiting out its session. Small batches
		// and a pause inside each transaction spread the work over enough
		// transactions for kills to land mid-transaction.
		args := append([]string{"consume", "--instance-id", "payments-0", "--max-batch", "25", "--batch-delay", "15ms"}, common...)
		cmd := exec.Command(bin, append(args, extra...)...)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Signal(syscall.SIGKILL)
				cmd.Wait()
			}
			logf.Close()
		})
		return cmd, logPath
	}
	applied := func() int {
		var k int
		if err := db.QueryRow(`SELECT count(DISTINCT transfer_id) FROM ` + schema + `.ledger`).Scan(&k); err != nil {
			if strings.Contains(err.Error(), "does not exist") {
				return 0 // the consumer has not created its schema yet
			}
			t.Fatal(err)
		}
		return k
	}

	for i := 0; i < kills; i++ {
		before := applied()
		cmd, logPath := consume(i)
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		// Kill only while it is consuming: after it has applied something
		// in this incarnation, at a random moment within the next 800ms.
		deadline := time.Now().Add(90 * time.Second)
		for applied() <= before {
			select {
			case err := <-exited:
				t.Fatalf("consumer %d exited on its own (%v):\n%s", i, err, tailFile(logPath))
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("consumer %d made no progress in 90s:\n%s", i, tailFile(logPath))
			}
		}
		time.Sleep(time.Duration(rng.Int63n(int64(800 * time.Millisecond))))
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		got := applied()
		t.Logf("kill %d: %d of %d transfers applied", i+1, got, n)
		if got >= n {
			t.Fatalf("kill %d landed after the consumer had finished; the test needs kills during consumption (slow the consumer)", i+1)
		}
		checkPaymentsConsistent(t, db, schema, committed, false)
		// The example's checker holds mid-run too.
		if out, err := exec.Command(bin, append([]string{"check"}, common...)...).CombinedOutput(); err != nil {
			t.Fatalf("payments check after kill %d: %v\n%s", i+1, err, out)
		}
	}

	cmd, logPath := consume(kills, "--until", fmt.Sprint(n))
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("final consumer: %v\n%s", err, tailFile(logPath))
		}
	case <-time.After(4 * time.Minute):
		t.Fatalf("final consumer did not apply %d transfers in 4 minutes:\n%s", n, tailFile(logPath))
	}
	checkPaymentsConsistent(t, db, schema, committed, true)

	// The example's own checker must agree.
	out, err = exec.Command(bin, append([]string{"check", "--complete"}, common...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("payments check: %v\n%s", err, out)
	}
}

// readCommittedTransfers reads the topic read_committed up to its last
// stable offset.
func readCommittedTransfers(t *testing.T, addr, topic string) []placedTransfer {
	t.Helper()
	var out []placedTransfer
	for _, r := range testenv.Flatten(testenv.ReadToEnd(t, addr, topic, true)) {
		var tr transfer
		if err := json.Unmarshal(r.Value, &tr); err != nil {
			t.Fatalf("record %d/%d: %v", r.Partition, r.Offset, err)
		}
		if strings.HasPrefix(tr.ID, "aborted-") {
			t.Fatalf("read_committed returned aborted transfer %s", tr.ID)
		}
		out = append(out, placedTransfer{tr, r.Partition, r.Offset})
	}
	return out
}

// checkPaymentsConsistent checks the database against the committed
// transfers. At any moment (final=false) the applied transfers must be
// exactly those below each partition's stored offset, each as one debit and
// one credit, and balances must sum to zero; at the end (final=true) every
// transfer must be applied and every balance must equal the topic's sum.
func checkPaymentsConsistent(t *testing.T, db *sql.DB, schema string, committed []placedTransfer, final bool) {
	t.Helper()
	// One snapshot for all reads: a commit landing between two queries
	// would otherwise look like an inconsistency.
	tx, err := db.BeginTx(context.Background(), &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	next := map[int32]int64{}
	rows, err := tx.Query(`SELECT partition_id, next_offset FROM ` + schema + `.sink_offsets`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var p int32
		var o int64
		if err := rows.Scan(&p, &o); err != nil {
			t.Fatal(err)
		}
		next[p] = o
	}
	rows.Close()

	type entry struct {
		account string
		amount  int64
	}
	ledger := map[string][]entry{}
	rows, err = tx.Query(`SELECT transfer_id, account, amount FROM ` + schema + `.ledger`)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for rows.Next() {
		var id string
		var e entry
		if err := rows.Scan(&id, &e.account, &e.amount); err != nil {
			t.Fatal(err)
		}
		ledger[id] = append(ledger[id], e)
		total++
	}
	rows.Close()

	want := map[string]int64{} // expected balances from the applied transfers
	expectApplied := 0
	var errs []string
	for _, c := range committed {
		o, ok := next[c.partition]
		shouldBe := ok && c.offset < o
		es, isApplied := ledger[c.ID]
		if final && !shouldBe {
			errs = append(errs, fmt.Sprintf("partition %d: stored offset %d (present %v) does not cover transfer %s at %d", c.partition, o, ok, c.ID, c.offset))
		}
		switch {
		case shouldBe && !isApplied:
			errs = append(errs, fmt.Sprintf("transfer %s at %d/%d is below the stored offset %d but not applied (lost)", c.ID, c.partition, c.offset, o))
		case !shouldBe && isApplied:
			errs = append(errs, fmt.Sprintf("transfer %s at %d/%d is applied but not below the stored offset %d (effect without offset)", c.ID, c.partition, c.offset, o))
		}
		if !isApplied {
			continue
		}
		expectApplied++
		delete(ledger, c.ID)
		if len(es) != 2 {
			errs = append(errs, fmt.Sprintf("transfer %s has %d ledger rows, want 2", c.ID, len(es)))
			continue
		}
		if es[0].amount > es[1].amount {
			es[0], es[1] = es[1], es[0]
		}
		if es[0] != (entry{c.From, -c.Amount}) || es[1] != (entry{c.To, c.Amount}) {
			errs = append(errs, fmt.Sprintf("transfer %s has rows %+v", c.ID, es))
		}
		want[c.From] -= c.Amount
		want[c.To] += c.Amount
	}
	for id := range ledger {
		errs = append(errs, fmt.Sprintf("ledger holds %s, which is no committed transfer", id))
	}
	if total != 2*expectApplied {
		errs = append(errs, fmt.Sprintf("%d ledger rows for %d applied transfers", total, expectApplied))
	}
	if final && expectApplied != len(committed) {
		errs = append(errs, fmt.Sprintf("%d of %d transfers applied", expectApplied, len(committed)))
	}

	rows, err = tx.Query(`SELECT id, balance FROM ` + schema + `.accounts`)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	seen := map[string]bool{}
	for rows.Next() {
		var id string
		var b int64
		if err := rows.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		seen[id] = true
		sum += b
		if b != want[id] {
			errs = append(errs, fmt.Sprintf("account %s: balance %d, want %d", id, b, want[id]))
		}
	}
	rows.Close()
	for id, b := range want {
		if !seen[id] && b != 0 {
			errs = append(errs, fmt.Sprintf("account %s missing (want balance %d)", id, b))
		}
	}
	if sum != 0 {
		errs = append(errs, fmt.Sprintf("balances sum to %d, want 0", sum))
	}
	if len(errs) > 0 {
		if len(errs) > 20 {
			errs = append(errs[:20], fmt.Sprintf("... and %d more", len(errs)-20))
		}
		t.Fatalf("database inconsistent (final=%v):\n%s", final, strings.Join(errs, "\n"))
	}
}
