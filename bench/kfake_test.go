package bench

import (
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
)

// TestRunChildBrokers: the managed exactly broker, a baseline build (here
// the same binary), kfake in memory and
// kfake with a data directory and an fsync per write, each a child
// process, are measured side by side in the modes exactly-once is made of;
// every run succeeds, and every run reads the broker process's CPU time,
// non-zero for produce runs.
func TestRunChildBrokers(t *testing.T) {
	bin := testenv.ExactlyBinary(t)
	dir := t.TempDir()
	cfg := Config{
		Managed: true, KFake: true, KFakeDurable: true,
		ServeCommand: []string{bin, "serve"}, KFakeCommand: []string{bin, "kfake"}, Dir: dir,
		Baselines: []Baseline{{Name: "baseline", ServeCommand: []string{bin, "serve"}}},
		Modes:     []string{Idempotent, Transactional, ReadCommitted},
		Duration:  500 * time.Millisecond, Rounds: 1, Partitions: 3, MaxBufferedRecords: 4096,
		ConsumeBytes: 4 << 20, TxnInterval: 50 * time.Millisecond, AbortEvery: 10,
		Log: t.Logf,
	}
	rep, buf := runOK(t, cfg)
	runs := map[string]int{}
	for _, r := range rep.Results {
		runs[r.Target]++
		if r.BrokerCPU == nil || r.ClientCPU == nil {
			t.Errorf("%s %s: CPU not measured (broker %v, client %v)", r.Target, r.Mode, r.BrokerCPU, r.ClientCPU)
			continue
		}
		if !isConsume(r.Mode) && (r.BrokerCPU.Seconds <= 0 || r.BrokerCPU.PerGB <= 0) {
			t.Errorf("%s %s: the broker spent %+v of CPU producing %d bytes", r.Target, r.Mode, *r.BrokerCPU, r.Bytes)
		}
		if got := r.BrokerCPU.Seconds / (float64(r.Bytes) / 1e9); r.BrokerCPU.PerGB != got {
			t.Errorf("%s %s: %v s/GB for %v s and %d bytes", r.Target, r.Mode, r.BrokerCPU.PerGB, r.BrokerCPU.Seconds, r.Bytes)
		}
	}
	for _, target := range []string{"exactly", "baseline", KFakeTarget, KFakeDurableTarget} {
		if runs[target] != len(cfg.Modes) {
			t.Errorf("%s ran %d times, want %d", target, runs[target], len(cfg.Modes))
		}
	}
	// exactly against each other target, every mode, CPU included.
	if len(rep.TargetComparisons) != 3*len(cfg.Modes) {
		t.Errorf("%d target comparisons, want %d:\n%s", len(rep.TargetComparisons), 3*len(cfg.Modes), buf.String())
	}
	for _, c := range rep.TargetComparisons {
		// A 4 MiB read may take less CPU than one clock tick: no ratio.
		if c.Target != "exactly" || c.Ratio <= 0 || c.CPURatio == nil && !isConsume(c.Mode) || c.Rounds != 1 {
			t.Errorf("comparison %+v", c)
		}
	}
	if !strings.Contains(buf.String(), "exactly vs kfake, read-committed: MB/s ") {
		t.Errorf("the report does not compare exactly with kfake:\n%s", buf.String())
	}
	for _, s := range rep.Summaries {
		if s.BrokerCPUPerGB == nil || s.ClientCPUPerGB == nil {
			t.Errorf("%s %s: no CPU in the summary", s.Target, s.Mode)
		}
	}
	for _, want := range []string{"broker CPU s/GB", "kfake-durable  transactional"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, buf.String())
		}
	}
	t.Logf("\n%s", buf.String())
}
