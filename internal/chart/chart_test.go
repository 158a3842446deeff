package chart

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Bars side by side are centred on their group, for odd counts too.
func TestBarOffset(t *testing.T) {
	w := vg.Points(10)
	for n, want := range map[int][]vg.Length{1: {0}, 3: {-10, 0, 10}, 4: {-15, -5, 5, 15}} {
		for i, o := range want {
			if got := BarOffset(i, n, w); got != o {
				t.Errorf("bar %d of %d: offset %v, want %v", i, n, got, o)
			}
		}
	}
}

// Save writes SVG for a .svg name and PNG of the asked size otherwise.
func TestSave(t *testing.T) {
	dir := t.TempDir()
	line := func(c draw.Canvas) {
		c.StrokeLine2(draw.LineStyle{Color: Color(0), Width: vg.Points(2)}, c.Min.X, c.Min.Y, c.Max.X, c.Max.Y)
	}
	png1 := filepath.Join(dir, "a.png")
	if err := Save(png1, vg.Points(72), vg.Points(36), line); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(png1)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds(); got.Dx() != 96 || got.Dy() != 48 {
		t.Errorf("72 × 36 pt at 96 dpi: %v", got)
	}
	svg := filepath.Join(dir, "a.Svg")
	if err := Save(svg, vg.Points(72), vg.Points(36), line); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.Contains(b, []byte(`<svg width="72pt" height="36pt"`)) {
		t.Errorf("SVG (%v): %.200s", err, b)
	}
	if err := Save(filepath.Join(dir, "missing", "a.png"), vg.Points(72), vg.Points(36), line); err == nil {
		t.Error("wrote into a directory that does not exist")
	}
}
