package bench

import (
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/exactly/exactly/internal/chart"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// chartBarWidth is the width of one target's bar; the chart grows wider
// with more modes and targets rather than thinning the bars.
const chartBarWidth = 22

// chartSize is the chart's width and height for groups of modes with
// targets bars each: at least 720 × 432 points (960 × 576 pixels as PNG).
func chartSize(groups, targets int) (vg.Length, vg.Length) {
	w := max(720, 100+float64(groups*(targets+1)*chartBarWidth))
	return vg.Points(w), vg.Points(432)
}

// WriteChart draws the summaries to path, a PNG (SVG if the name ends in
// .svg): for each mode a bar per target at its median MB/s, with a
// whisker from the slowest to the fastest round and the median printed
// above it ("failed" where every run failed).
func (rep *Report) WriteChart(path string) error {
	if len(rep.Summaries) == 0 {
		return errors.New("no runs to chart")
	}
	type group struct {
		mode     string
		cleaning bool
	}
	var groups []group
	var targets []string
	for _, s := range rep.Summaries {
		if g := (group{s.Mode, s.WhileCleaning}); !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
		if !slices.Contains(targets, s.Target) {
			targets = append(targets, s.Target)
		}
	}
	rounds := 0
	for _, r := range rep.Results {
		rounds = max(rounds, r.Round+1)
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("exactly bench: MB/s per mode, median of %d rounds (whiskers: min–max)", rounds)
	p.Y.Label.Text = "MB/s"
	names := make([]string, len(groups))
	for i, g := range groups {
		names[i] = g.mode
		if g.cleaning {
			names[i] += "\nwhile cleaning"
		}
	}
	w := vg.Points(chartBarWidth)
	top := 0.0
	for i, target := range targets {
		medians := make(plotter.Values, len(groups))
		wh := whiskers{lows: make([]float64, len(groups)), highs: make([]float64, len(groups)),
			measured: make([]bool, len(groups))}
		texts := make([]string, len(groups))
		for j, g := range groups {
			k := slices.IndexFunc(rep.Summaries, func(s Summary) bool {
				return s.Target == target && s.Mode == g.mode && s.WhileCleaning == g.cleaning
			})
			if k < 0 {
				continue
			}
			s := rep.Summaries[k]
			if s.Runs == s.Failed {
				texts[j] = "failed"
				continue
			}
			medians[j], texts[j] = s.MBps, fmt.Sprintf("%.0f", s.MBps)
			wh.lows[j], wh.highs[j], wh.measured[j] = s.MinMBps, s.MaxMBps, true
			top = max(top, s.MaxMBps)
		}
		b, err := plotter.NewBarChart(medians, w)
		if err != nil {
			return err
		}
		b.Color = chart.Color(i)
		b.LineStyle.Width = 0
		b.Offset = chart.BarOffset(i, len(targets), w)
		wh.offset, wh.cap = b.Offset, w/2
		wh.style = draw.LineStyle{Color: plotter.DefaultLineStyle.Color, Width: vg.Points(1)}
		lb, err := chart.Labels(wh.highs, texts, b.Offset)
		if err != nil {
			return err
		}
		p.Add(b, wh, lb)
		p.Legend.Add(target, b)
	}
	p.NominalX(names...)
	// Half a group of room either side, for the outer groups' bars.
	p.X.Min, p.X.Max = -0.5, float64(len(groups))-0.5
	p.Legend.Top = true
	p.Y.Min = 0
	p.Y.Tick.Marker = plainTicks{}
	// Room above the tallest whisker for its label and the legend.
	p.Y.Max = max(top*1.2, 1)
	width, height := chartSize(len(groups), len(targets))
	return chart.Save(path, width, height, p.Draw)
}

// whiskers draws each group's min–max line with caps beside one series'
// bars, at the bars' offset (in canvas units, as plotter.BarChart does).
type whiskers struct {
	lows, highs []float64
	measured    []bool
	offset, cap vg.Length
	style       draw.LineStyle
}

func (wh whiskers) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for j := range wh.lows {
		if !wh.measured[j] {
			continue
		}
		x := trX(float64(j)) + wh.offset
		lo, hi := trY(wh.lows[j]), trY(wh.highs[j])
		c.StrokeLine2(wh.style, x, lo, x, hi)
		c.StrokeLine2(wh.style, x-wh.cap/2, lo, x+wh.cap/2, lo)
		c.StrokeLine2(wh.style, x-wh.cap/2, hi, x+wh.cap/2, hi)
	}
}

func (wh whiskers) DataRange() (xmin, xmax, ymin, ymax float64) {
	return 0, float64(len(wh.highs) - 1), 0, slices.Max(wh.highs)
}

// plainTicks are gonum's default ticks labelled as plain numbers ("250"
// rather than "250.00", which the default gives a range like 0–777).
type plainTicks struct{}

func (plainTicks) Ticks(min, max float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', -1, 64)
		}
	}
	return ticks
}
