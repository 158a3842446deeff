package verify

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleReports() []*Report {
	var reps []*Report
	for i, m := range Modes {
		r := &Report{Result: Result{Mode: m, Acked: 1000, Consumed: 990 + i*5, OK: true, Violations: []string{}},
			Seed: 7, Throughput: 900, FaultsInjected: 12,
			Schedule: NewSchedule(ScheduleOptions{Seed: 7, Duration: 10 * time.Second, Kinds: AllFaults(true), Producers: 2, Pipelines: 2})}
		for s := 0; s < 10; s++ {
			r.Timeline = append(r.Timeline, Sample{Second: s, Acked: 900 + s, Processed: 880})
		}
		reps = append(reps, r)
	}
	reps[0].Lost = 10
	reps[1].Duplicates = 40
	reps[2].Duplicates, reps[2].OK, reps[2].Violations = 3, false, []string{AnomalyDuplicates}
	reps[2].Examples = map[string][]string{AnomalyDuplicates: {"p0.0-1 was delivered to the output 2 times"}}
	return reps
}

func TestWriteTableShowsEveryModeAndTheVerdict(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteTable(&buf, sampleReports()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"at-most-once", "at-least-once", "exactly-once", "held", "VIOLATED",
		"exactly-once promise broken: duplicates", "p0.0-1 was delivered to the output 2 times"} {
		if !strings.Contains(out, want) {
			t.Fatalf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteChartDrawsAPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.png")
	if err := WriteChart(path, sampleReports()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() < 500 || b.Dy() < 400 {
		t.Fatalf("chart is %v", b)
	}
	if err := WriteChart(path, nil); err == nil {
		t.Fatal("charted nothing without complaint")
	}
}
