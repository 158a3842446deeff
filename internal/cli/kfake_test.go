package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestKFakeRejectsBadFlags(t *testing.T) {
	for args, want := range map[string]string{
		"--durable":                  "--durable needs --data-dir",
		"--log-level loud":           "want none, error, warn, info or debug",
		"--set message.max.bytes":    "want key=value",
		"--listen 127.0.0.1:1 extra": "unknown command",
	} {
		cmd := KFakeCommand()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(strings.Fields(args))
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error mentioning %q", args, err, want)
		}
	}
}

// TestKFakeDurableWritesItsDataDir: `exactly kfake --durable` serves a
// transactional producer on --listen and keeps the records in --data-dir;
// it stops when its context ends.
func TestKFakeDurableWritesItsDataDir(t *testing.T) {
	addr, dir := freeLoopbackAddr(t), t.TempDir()
	cmd := KFakeCommand()
	var logs bytes.Buffer
	cmd.SetErr(&logs)
	cmd.SetArgs([]string{"--listen", addr, "--durable", "--data-dir", dir})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	waitListening(t, addr, "")

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("t"), kgo.TransactionalID("kfake-test"),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	value := []byte("kept-on-disk-" + strings.Repeat("x", 100))
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: value}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kfake: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("kfake did not stop with its context")
	}
	var found bool
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if b, _ := os.ReadFile(path); bytes.Contains(b, value) {
				found = true
			}
		}
		return nil
	})
	if !found {
		out, _ := exec.Command("ls", "-lR", dir).CombinedOutput()
		t.Errorf("no file under %s holds the committed record:\n%s\n%s", dir, out, logs.String())
	}
}
