package bench

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// sampleReport has three targets, a mode measured while cleaning and a
// mode that failed on one target.
func sampleReport() *Report {
	rep := &Report{}
	for round := range 3 {
		for ti, target := range []string{"exactly", KFakeTarget, KFakeDurableTarget} {
			for mi, mode := range []string{Idempotent, Transactional, ReadCommitted} {
				r := Result{Target: target, Mode: mode, Round: round, MBps: float64(100*(ti+1) + 10*mi + round)}
				if target == KFakeDurableTarget && mode == ReadCommitted {
					r.Err = "prefilling the consume topic: boom"
				}
				rep.Results = append(rep.Results, r)
			}
			rep.Results = append(rep.Results, Result{Target: target, Mode: Idempotent, Round: round, WhileCleaning: true, MBps: 50})
		}
	}
	rep.summarize([]Target{{Name: "exactly"}, {Name: KFakeTarget}, {Name: KFakeDurableTarget}}, []string{Idempotent, Transactional, ReadCommitted})
	return rep
}

// TestWriteChart: the chart is a PNG of the documented size, or an SVG for
// a .svg name; an empty report is refused.
func TestWriteChart(t *testing.T) {
	rep := sampleReport()
	if len(rep.Summaries) != 12 {
		t.Fatalf("%d summaries, want 12", len(rep.Summaries))
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "bench.png")
	if err := rep.WriteChart(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	// 720 × 432 points at vgimg's 96 dpi.
	if got := img.Bounds(); got.Dx() != 960 || got.Dy() != 576 {
		t.Errorf("chart is %v, want 960×576", got)
	}
	// Not one colour: bars were drawn.
	colours := map[uint32]bool{}
	for y := 0; y < img.Bounds().Dy(); y += 4 {
		for x := 0; x < img.Bounds().Dx(); x += 4 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|b>>8] = true
		}
	}
	if len(colours) < 5 {
		t.Errorf("chart has %d colours", len(colours))
	}

	svg := filepath.Join(dir, "bench.SVG")
	if err := rep.WriteChart(svg); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("kfake-durable")) {
		t.Errorf("SVG (%v) lacks <svg or the target names: %.200s", err, b)
	}
	if err := (&Report{}).WriteChart(path); err == nil {
		t.Error("charted an empty report")
	}
}

// A wide benchmark gets a wider chart instead of thinner bars.
func TestChartSizeGrows(t *testing.T) {
	w, h := chartSize(3, 3)
	if w != 720 || h != 432 {
		t.Errorf("small chart %v × %v", w, h)
	}
	if w, _ := chartSize(9, 6); w <= 720 {
		t.Errorf("9 modes × 6 targets: %v wide", w)
	}
}
