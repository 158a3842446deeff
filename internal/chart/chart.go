// Package chart is what the tools' reports (verify --report, bench
// --report) draw with gonum.org/v1/plot: one palette, bars grouped side
// by side with their values printed above them, and writing a drawing to
// a PNG or SVG file.
package chart

import (
	"image/color"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Colors is the palette, in the order series take it.
var Colors = []color.Color{
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
}

// Color is the i-th series' colour; the palette repeats past its end.
func Color(i int) color.Color { return Colors[i%len(Colors)] }

// BarOffset is how far the i-th of n bars of width w stands from its
// group's x, so that the n bars side by side are centred on it
// (plotter.BarChart.Offset).
func BarOffset(i, n int, w vg.Length) vg.Length {
	return vg.Length(2*i-n+1) * w / 2
}

// Labels prints texts[j] centred just above (j, ys[j]), shifted right by
// xOffset (the bar's BarOffset), in 8 pt: the value above each bar of a
// series.
func Labels(ys []float64, texts []string, xOffset vg.Length) (*plotter.Labels, error) {
	var xyl plotter.XYLabels
	for j, y := range ys {
		xyl.XYs = append(xyl.XYs, plotter.XY{X: float64(j), Y: y})
		xyl.Labels = append(xyl.Labels, texts[j])
	}
	lb, err := plotter.NewLabels(xyl)
	if err != nil {
		return nil, err
	}
	lb.Offset = vg.Point{X: xOffset, Y: vg.Points(2)}
	for k := range lb.TextStyle {
		lb.TextStyle[k].Font.Size = vg.Points(8)
		lb.TextStyle[k].XAlign = draw.XCenter
	}
	return lb, nil
}

// Save draws onto a width × height canvas with drawFn and writes it to
// path: SVG if the name ends in .svg, PNG otherwise.
func Save(path string, width, height vg.Length, drawFn func(draw.Canvas)) error {
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if IsSVG(path) {
		c = vgsvg.New(width, height)
	} else {
		c = vgimg.PngCanvas{Canvas: vgimg.New(width, height)}
	}
	drawFn(draw.New(c))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// IsSVG reports whether Save writes path as SVG.
func IsSVG(path string) bool { return strings.EqualFold(filepath.Ext(path), ".svg") }
