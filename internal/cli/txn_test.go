package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactly/exactly"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func runTxn(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	root := &cobra.Command{Use: "exactly", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(TxnCommand(), TopicCommand())
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&out)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func mustTxn(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runTxn(t, args...)
	if err != nil {
		t.Fatalf("exactly %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestTxnCommands drives list, describe, describe-producers, find-hanging
// and abort against a broker with one committed and one open transaction;
// then, the coordinator's log lost, the open transaction hangs and abort
// ends it.
func TestTxnCommands(t *testing.T) {
	t.Parallel() // owns its broker
	dir := t.TempDir()
	b, err := exactly.Start(exactly.Options{DataDir: dir, Config: map[string]string{"auto.create.topics.enable": "false"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close() }()
	addr := b.Addr()
	createTopic(t, addr, "orders", 1)
	ctx := context.Background()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.TransactionalID("billing"), kgo.DefaultProduceTopic("orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("a")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("b")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	out := mustTxn(t, "txn", "list", "-b", addr)
	if !strings.Contains(out, "TransactionalId") || !strings.Contains(out, "billing") || !strings.Contains(out, "Ongoing") {
		t.Fatalf("list:\n%s", out)
	}
	if out := mustTxn(t, "txn", "list", "-b", addr, "--state", "CompleteCommit"); strings.Contains(out, "billing") {
		t.Fatalf("list --state CompleteCommit shows the ongoing transaction:\n%s", out)
	}
	out = mustTxn(t, "txn", "describe", "-b", addr, "--transactional-id", "billing")
	if !strings.Contains(out, "Ongoing") || !strings.Contains(out, "orders-0") {
		t.Fatalf("describe:\n%s", out)
	}
	if _, err := runTxn(t, "txn", "describe", "-b", addr, "--transactional-id", "nobody"); err == nil || !strings.Contains(err.Error(), "not known") {
		t.Fatalf("describe of an unknown id: %v", err)
	}
	out = mustTxn(t, "txn", "describe-producers", "-b", addr, "--topic", "orders")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasSuffix(strings.TrimSpace(lines[1]), " 2") {
		t.Fatalf("describe-producers (the open transaction starts at offset 2, after a record and a marker):\n%s", out)
	}
	// The coordinator runs this transaction: it is not hanging, however old.
	out = mustTxn(t, "txn", "find-hanging", "-b", addr, "--topic", "orders", "--max-transaction-timeout", "0s")
	if strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Fatalf("find-hanging reported a transaction its coordinator runs:\n%s", out)
	}
	// Nor may an operator (or any client) end it behind its back.
	if out, err := runTxn(t, "txn", "abort", "-b", addr, "--topic", "orders", "--partition", "0", "--start-offset", "2"); err == nil || !strings.Contains(err.Error(), "INVALID_TXN_STATE") {
		t.Fatalf("abort of a transaction its coordinator runs: %v\n%s", err, out)
	}
	// The coordinator's log lost, the open transaction hangs: nobody
	// will end it but an operator.
	cl.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "__transaction_state-0")); err != nil {
		t.Fatal(err)
	}
	if b, err = exactly.Start(exactly.Options{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	addr = b.Addr()
	if cl, err = kgo.NewClient(kgo.SeedBrokers(addr)); err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// An operator aborting it on the partition moves the LSO past it.
	out = mustTxn(t, "txn", "abort", "-b", addr, "--topic", "orders", "--partition", "0", "--start-offset", "2")
	if !strings.Contains(out, "Aborted") {
		t.Fatalf("abort:\n%s", out)
	}
	adm := kadm.NewClient(cl)
	end, err := adm.ListEndOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	lso, err := adm.ListCommittedOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	e, _ := end.Lookup("orders", 0)
	l, _ := lso.Lookup("orders", 0)
	if l.Offset != e.Offset {
		t.Fatalf("after abort the LSO is %d, the high watermark %d", l.Offset, e.Offset)
	}
	if _, err := runTxn(t, "txn", "abort", "-b", addr, "--topic", "orders", "--partition", "0", "--start-offset", "2"); err == nil {
		t.Fatal("a second abort found the transaction still open")
	}
	if _, err := runTxn(t, "txn", "abort", "-b", addr, "--topic", "orders"); err == nil {
		t.Fatal("abort without --partition was accepted")
	}
}
