package e2e

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// `exactly bench` with no broker flag starts its own broker process and
// prints a JSON report with every requested mode measured.
func TestBenchCommandManaged(t *testing.T) {
	cmd := exec.Command(exactlyBinary(t), "bench", "--json", "-q", "--modes", "idempotent,transactional,read-committed",
		"--duration", "300ms", "--rounds", "1", "--consume-mib", "2", "--max-buffered-records", "4096")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	var rep struct {
		Results []struct {
			Target  string  `json:"target"`
			Mode    string  `json:"mode"`
			Records int64   `json:"records"`
			MBps    float64 `json:"mb_per_s"`
			Err     string  `json:"error"`
		} `json:"results"`
		Comparisons []struct {
			Mode, Against string
		} `json:"comparisons"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.Bytes())
	}
	seen := map[string]bool{}
	for _, r := range rep.Results {
		if r.Target != "exactly" || r.Records <= 0 || r.MBps <= 0 || r.Err != "" {
			t.Errorf("bad result %+v", r)
		}
		seen[r.Mode] = true
	}
	if len(seen) != 3 || len(rep.Comparisons) != 1 {
		t.Errorf("modes %v, comparisons %+v", seen, rep.Comparisons)
	}
}

// `exactly bench --kfake --report` measures the managed broker and kfake
// (each its own process, so each run has the broker's CPU) and draws the
// chart.
func TestBenchCommandKFakeReport(t *testing.T) {
	chart := filepath.Join(t.TempDir(), "bench.png")
	cmd := exec.Command(exactlyBinary(t), "bench", "--kfake", "--json", "-q", "--modes", "idempotent",
		"--duration", "300ms", "--rounds", "1", "--max-buffered-records", "4096", "--report", chart)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	var rep struct {
		Results []struct {
			Target    string `json:"target"`
			Err       string `json:"error"`
			BrokerCPU *struct {
				Seconds float64 `json:"seconds"`
				PerGB   float64 `json:"s_per_gb"`
			} `json:"broker_cpu"`
		} `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.Bytes())
	}
	targets := map[string]bool{}
	for _, r := range rep.Results {
		targets[r.Target] = true
		if r.Err != "" || r.BrokerCPU == nil || r.BrokerCPU.Seconds <= 0 || r.BrokerCPU.PerGB <= 0 {
			t.Errorf("%s: error %q, broker CPU %+v", r.Target, r.Err, r.BrokerCPU)
		}
	}
	if !targets["exactly"] || !targets["kfake"] || len(targets) != 2 {
		t.Errorf("targets %v, want exactly and kfake", targets)
	}
	f, err := os.Open(chart)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Errorf("the chart is not a PNG: %v", err)
	}
}

// `exactly bench` with the group modes: every share mode and the classic
// group read every record of the prefilled topics exactly once, the
// groups finish them all durably, and the report compares each share mode
// with the classic group.
func TestBenchCommandShareModes(t *testing.T) {
	cmd := exec.Command(exactlyBinary(t), "bench", "--json", "-q", "--modes", "share-1,share-4,share-16,classic-group",
		"--rounds", "1", "--consume-mib", "2", "--partitions", "3")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	var rep struct {
		Results []struct {
			Mode        string `json:"mode"`
			Records     int64  `json:"records"`
			Redelivered int64  `json:"redelivered"`
			Settled     int64  `json:"settled"`
			Consumers   int    `json:"consumers"`
			Err         string `json:"error"`
		} `json:"results"`
		Comparisons []struct {
			Mode, Against string
		} `json:"comparisons"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.Bytes())
	}
	consumers := map[string]int{"share-1": 1, "share-4": 4, "share-16": 16, "classic-group": 3}
	const records = 2 << 10 // 2 MiB of 1 KiB values
	for _, r := range rep.Results {
		if r.Err != "" || r.Records != records || r.Settled != records || r.Redelivered != 0 || r.Consumers != consumers[r.Mode] {
			t.Errorf("%+v: want %d records each delivered once and settled, by %d consumers", r, records, consumers[r.Mode])
		}
		delete(consumers, r.Mode)
	}
	if len(consumers) != 0 {
		t.Errorf("modes without a result: %v", consumers)
	}
	against := map[string]string{}
	for _, c := range rep.Comparisons {
		against[c.Mode] = c.Against
	}
	for _, m := range []string{"share-1", "share-4", "share-16"} {
		if against[m] != "classic-group" {
			t.Errorf("no %s vs classic-group comparison: %+v", m, rep.Comparisons)
		}
	}
}
