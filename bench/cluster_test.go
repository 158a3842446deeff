package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
)

// runOK runs cfg and fails the test if Run fails or any run failed; it
// returns the report and its text.
func runOK(t *testing.T, cfg Config) (*Report, *bytes.Buffer) {
	t.Helper()
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	if rep.Failed() {
		t.Fatalf("a run failed:\n%s", buf.String())
	}
	return rep, &buf
}

// TestRunManagedCluster: --brokers 3 measures one managed cluster as two
// targets, topics of replication factor 1 and 3, in the same rounds, each
// run succeeding with the CPU of all three nodes read.
func TestRunManagedCluster(t *testing.T) {
	testenv.SkipShort(t, "starts a three-node cluster of child processes")
	bin := testenv.ExactlyBinary(t)
	cfg := Config{
		Managed: true, Brokers: 3, ServeCommand: []string{bin, "serve"}, Dir: t.TempDir(),
		Modes:    []string{AtLeastOnce, Idempotent},
		Duration: time.Second, Rounds: 1, Partitions: 3, MaxBufferedRecords: 4096,
		Log: t.Logf,
	}
	rep, buf := runOK(t, cfg)
	runs := map[string]int{}
	for _, r := range rep.Results {
		runs[r.Target]++
		if r.Bytes <= 0 || r.BrokerCPU == nil || r.BrokerCPU.Seconds <= 0 {
			t.Errorf("%s %s: %d bytes, broker CPU %v", r.Target, r.Mode, r.Bytes, r.BrokerCPU)
		}
	}
	for _, target := range []string{"exactly-rf1", "exactly-rf3"} {
		if runs[target] != len(cfg.Modes) {
			t.Errorf("%s ran %d times, want %d:\n%s", target, runs[target], len(cfg.Modes), buf.String())
		}
	}
	t.Logf("\n%s", buf.String())
}
