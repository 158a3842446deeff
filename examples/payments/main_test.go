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

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
)

// testSchema names a schema for the test and drops it at the end.
func testSchema(t *testing.T) (*sql.DB, string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "payments_" + hex.EncodeToString(b[:])
	db, err := sql.Open("pgx", testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", testenv.PostgresDSN(), err, testenv.PostgresHint)
	}
	t.Cleanup(func() {
		db.Exec("DROP SCHEMA IF EXISTS " + schema + " CASCADE")
		db.Close()
	})
	return db, schema
}

func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, append(args, "--dsn", testenv.PostgresDSN()), &out, &errb)
	if code != 0 {
		t.Logf("payments %s: exit %d\nstdout:\n%s\nstderr (tail):\n%s", args[0], code, out.String(), tail(errb.String(), 2000))
	}
	return code, out.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestDemo runs the one-process demo (embedded broker, aborted transactions
// mixed in) and its check.
func TestDemo(t *testing.T) {
	_, schema := testSchema(t)
	code, out := runCmd(t, "demo", "--n", "600", "--accounts", "20", "--abort-every", "2", "--txn-size", "50", "--schema", schema)
	if code != 0 || !strings.Contains(out, "ok: 600 of 600 committed transfers") {
		t.Fatalf("demo: exit %d, output %q", code, out)
	}
}

// TestCommandsAndCheckerCatchesViolations runs produce, consume and check
// as separate commands against one broker, then breaks the ledger in the
// ways exactly-once forbids and expects check to fail each time: the
// checker is what the crash test trusts, so it must not be vacuous.
func TestCommandsAndCheckerCatchesViolations(t *testing.T) {
	db, schema := testSchema(t)
	b := exactly.NewTestBroker(t)
	common := []string{"--bootstrap", b.Addr(), "--schema", schema}
	if code, _ := runCmd(t, append([]string{"produce", "--n", "300", "--accounts", "10", "--seed", "9"}, common...)...); code != 0 {
		t.Fatal("produce failed")
	}
	if code, out := runCmd(t, append([]string{"consume", "--until", "300", "--max-batch", "40"}, common...)...); code != 0 || !strings.Contains(out, "applied 300") {
		t.Fatalf("consume: exit %d, output %q", code, out)
	}
	if code, out := runCmd(t, append([]string{"check", "--complete"}, common...)...); code != 0 || !strings.Contains(out, "ok: 300 of 300") {
		t.Fatalf("check of a correct ledger: exit %d, output %q", code, out)
	}

	breakages := []struct {
		name, do, undo, want string
	}{
		{"duplicate", `INSERT INTO ` + schema + `.ledger (transfer_id, account, amount, kafka_partition, kafka_offset)
			SELECT transfer_id, account, amount, kafka_partition, kafka_offset FROM ` + schema + `.ledger WHERE entry <= 2`,
			`DELETE FROM ` + schema + `.ledger WHERE entry > (SELECT max(entry) - 2 FROM ` + schema + `.ledger)`,
			"has 4 ledger rows"},
		{"balance", `UPDATE ` + schema + `.accounts SET balance = balance + 1 WHERE id = 'acct-003'`,
			`UPDATE ` + schema + `.accounts SET balance = balance - 1 WHERE id = 'acct-003'`,
			"sum to 1"},
		{"offset", `UPDATE ` + schema + `.sink_offsets SET next_offset = next_offset - 1 WHERE partition_id = 0`,
			`UPDATE ` + schema + `.sink_offsets SET next_offset = next_offset + 1 WHERE partition_id = 0`,
			"is applied but not below the stored offset"},
	}
	for _, br := range breakages {
		if _, err := db.Exec(br.do); err != nil {
			t.Fatal(err)
		}
		code, out := runCmd(t, append([]string{"check"}, common...)...)
		if code != 1 || !strings.Contains(out, br.want) {
			t.Errorf("%s: check exit %d, output %q; want exit 1 mentioning %q", br.name, code, out, br.want)
		}
		if _, err := db.Exec(br.undo); err != nil {
			t.Fatal(err)
		}
	}
	if code, out := runCmd(t, append([]string{"check", "--complete"}, common...)...); code != 0 {
		t.Fatalf("check after undoing the breakages: exit %d, output %q", code, out)
	}
	// Lost: a transfer below the stored offset without its rows.
	if _, err := db.Exec(`DELETE FROM ` + schema + `.ledger WHERE transfer_id = (SELECT min(transfer_id) FROM ` + schema + `.ledger)`); err != nil {
		t.Fatal(err)
	}
	if code, out := runCmd(t, append([]string{"check"}, common...)...); code != 1 || !strings.Contains(out, "not applied (lost)") {
		t.Errorf("lost: check exit %d, output %q; want exit 1 naming the lost transfer", code, out)
	}
}

func TestUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), nil, &out, &errb); code != 2 {
		t.Errorf("no command: exit %d, want 2", code)
	}
	if code := run(context.Background(), []string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if code := run(context.Background(), []string{"check", "--bootstrap", "x:1", "--data-dir", "d"}, &out, &errb); code != 2 {
		t.Errorf("--bootstrap with --data-dir: exit %d, want 2", code)
	}
}
