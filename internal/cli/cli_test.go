package cli

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// result is what one in-process command execution left behind.
type result struct {
	stdout, stderr string
	err            error
}

// newRoot builds a fresh "exactly" root with the CLI subcommands, as the
// binary does.
func newRoot() *cobra.Command {
	root := &cobra.Command{Use: "exactly", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(TopicCommand(), ProduceCommand(), ConsumeCommand(), UserCommand(), ACLCommand(), ClusterCommand(), FormatCommand())
	return root
}

// run executes `exactly args...` in-process with stdin as input.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return runCtx(t, context.Background(), stdin, args...)
}

func runCtx(t *testing.T, ctx context.Context, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRoot()
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(ctx)
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

// mustRun is run that fails the test if the command fails.
func mustRun(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	r := run(t, stdin, args...)
	if r.err != nil {
		t.Fatalf("exactly %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r
}

// wantErr runs a command that must fail with an error containing want.
func wantErr(t *testing.T, want, stdin string, args ...string) result {
	t.Helper()
	r := run(t, stdin, args...)
	if r.err == nil {
		t.Fatalf("exactly %s: succeeded, want error containing %q\nstdout: %s", strings.Join(args, " "), want, r.stdout)
	}
	if !strings.Contains(r.err.Error(), want) {
		t.Fatalf("exactly %s: error %q, want it to contain %q", strings.Join(args, " "), r.err, want)
	}
	return r
}

// createTopic creates a topic with n partitions on addr.
func createTopic(t *testing.T, addr, name string, n int) {
	t.Helper()
	mustRun(t, "", "topic", "create", name, "-b", addr, "--partitions", strconv.Itoa(n), "--replication-factor", "1")
}

// signalWriter is a concurrency-safe buffer that reports the first write.
type signalWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	once  sync.Once
	wrote chan struct{}
}

func newSignalWriter() *signalWriter { return &signalWriter{wrote: make(chan struct{})} }

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	n, err := w.buf.Write(p)
	w.mu.Unlock()
	w.once.Do(func() { close(w.wrote) })
	return n, err
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor fails the test if ch does not close within d.
func waitFor(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out waiting for %s", what)
	}
}
