package verify

import (
	"fmt"
	"image/color"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/exactly/exactly/internal/chart"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// WriteTable prints the comparison table: one row per run with its
// anomaly counts, throughput and whether the mode's guarantee held, then
// the violations with examples and anything notable.
func WriteTable(w io.Writer, reps []*Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tacked\tdelivered\tlost\tduplicates\taborted reads\treordered\tother\tthroughput/s\tfaults\tguarantee\t")
	for _, r := range reps {
		other := r.InconsistentOffsets + r.NonMonotonicPolls + r.PollSkips + r.OverDelivered + r.AcceptedTwice
		verdict := "held"
		if len(r.Violations) > 0 {
			verdict = "VIOLATED"
		} else if r.Inconclusive {
			verdict = "inconclusive"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t%d\t%s\t\n", r.Mode, r.Acked, r.Consumed,
			r.Lost, r.Duplicates, r.AbortedReads, r.OrderViolations, other, r.Throughput, r.FaultsInjected, verdict)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range reps {
		var lines []string
		if !r.OK {
			lines = append(lines, fmt.Sprintf("%s promise broken: %s", r.Mode, strings.Join(r.Violations, ", ")))
		}
		if so := r.Share; so != nil {
			lines = append(lines, fmt.Sprintf("%s: %d records (delivery limit %d, %d deliveries, %d redelivered): %d accepted, %d accepted without an answer, %d rejected, %d archived at the limit, %d ended after deliveries nobody saw; %d lost, %d over-delivered, %d accepted twice",
				r.Mode, r.InputRecords, so.DeliveryLimit, so.Deliveries, so.Redelivered, so.Accepted, so.AcceptedUnconfirmed,
				so.Rejected, so.ArchivedAtLimit, so.EndedUnobserved, r.Lost, r.OverDelivered, r.AcceptedTwice))
			if r.Unseen > 0 {
				lines = append(lines, fmt.Sprintf("%s: %d records were not settled when the drain ended (unseen)", r.Mode, r.Unseen))
			}
		} else if r.Unseen > 0 {
			lines = append(lines, fmt.Sprintf("%s: %d values never reached the output and the group never committed past them (unseen: the pipeline did not catch up)", r.Mode, r.Unseen))
		}
		if other := r.InconsistentOffsets + r.NonMonotonicPolls + r.PollSkips; other > 0 {
			lines = append(lines, fmt.Sprintf("%s: other = %d inconsistent offsets, %d non-monotonic polls, %d poll skips",
				r.Mode, r.InconsistentOffsets, r.NonMonotonicPolls, r.PollSkips))
		}
		for _, a := range append(Forbidden(ExactlyOnce), AnomalyOverDelivered, AnomalyAcceptedTwice, exampleUnseen, exampleUnobserved) {
			for _, ex := range r.Examples[a] {
				lines = append(lines, fmt.Sprintf("  %s: %s", a, ex))
			}
		}
		for _, n := range r.Notes {
			lines = append(lines, fmt.Sprintf("%s: note: %s", r.Mode, n))
		}
		if r.Dir != "" {
			lines = append(lines, fmt.Sprintf("%s: history and logs kept in %s", r.Mode, r.Dir))
		}
		if len(lines) > 0 {
			fmt.Fprintln(w)
			fmt.Fprintf(w, "%s (seed %d, %s; proxy dropped %d responses, delayed %d, reset %d connections)\n",
				r.Mode, r.Seed, r.Profile, r.Proxy.DroppedResponses, r.Proxy.DelayedResponses, r.Proxy.Resets)
			if r.Links != nil {
				fmt.Fprintf(w, "%s: links between nodes: %d connections, %d closed by cut heals, %d reads delayed\n",
					r.Mode, r.Links.Connections, r.Links.CutConnections, r.Links.DelayedChunks)
			}
			for _, l := range lines {
				fmt.Fprintln(w, l)
			}
		}
	}
	return nil
}

// WriteChart draws the runs to a PNG (SVG if path ends in .svg): anomaly
// counts per mode as grouped bars on top, acknowledged records per second
// over time below with the fault schedule marked.
func WriteChart(path string, reps []*Report) error {
	if len(reps) == 0 {
		return fmt.Errorf("no runs to chart")
	}
	bars := plot.New()
	bars.Title.Text = "Anomalies under faults, by delivery mode"
	bars.Y.Label.Text = "values affected"
	names := make([]string, len(reps))
	for i, r := range reps {
		verdict := "held"
		if len(r.Violations) > 0 {
			verdict = "violated"
		} else if r.Inconclusive {
			verdict = "inconclusive"
		}
		names[i] = fmt.Sprintf("%s (%s)", r.Mode, verdict)
	}
	series := []struct {
		name string
		get  func(*Report) int
	}{
		{"lost", func(r *Report) int { return r.Lost }},
		{"duplicates", func(r *Report) int { return r.Duplicates }},
		{"aborted reads", func(r *Report) int { return r.AbortedReads }},
		{"reordered", func(r *Report) int { return r.OrderViolations }},
	}
	w := vg.Points(18)
	for i, s := range series {
		vals := make(plotter.Values, len(reps))
		for j, r := range reps {
			vals[j] = float64(s.get(r))
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		b.Color = chart.Color(i)
		b.LineStyle.Width = 0
		b.Offset = chart.BarOffset(i, len(series), w)
		bars.Add(b)
		bars.Legend.Add(s.name, b)
		// Print each count above its bar, zeros included: a zero is
		// the point for the modes that promise it.
		texts := make([]string, len(vals))
		for j, v := range vals {
			texts[j] = fmt.Sprint(int(v))
		}
		lb, err := chart.Labels(vals, texts, b.Offset)
		if err != nil {
			return err
		}
		bars.Add(lb)
	}
	bars.Legend.Top = true
	bars.NominalX(names...)
	bars.Y.Min = 0

	line := plot.New()
	line.Title.Text = "Acknowledged input records per second (dashed: faults)"
	line.X.Label.Text = "seconds"
	line.Y.Label.Text = "records/s"
	maxY := 1.0
	for i, r := range reps {
		pts := make(plotter.XYs, len(r.Timeline))
		for j, s := range r.Timeline {
			pts[j].X, pts[j].Y = float64(s.Second), float64(s.Acked)
			maxY = max(maxY, float64(s.Acked))
		}
		if len(pts) == 0 {
			continue
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = chart.Color(3 + i%2)
		if i == 0 {
			l.Color = chart.Color(0)
		}
		l.Width = vg.Points(1.5)
		line.Add(l)
		line.Legend.Add(fmt.Sprintf("%s (%.0f/s)", r.Mode, r.Throughput), l)
	}
	for _, f := range reps[0].Schedule {
		x := f.At.Seconds()
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: maxY}})
		if err != nil {
			return err
		}
		l.Color = color.Gray{Y: 0xa0}
		l.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		line.Add(l)
	}
	line.Legend.Top = true
	line.Y.Min = 0

	return chart.Save(path, vg.Points(720), vg.Points(640), func(dc draw.Canvas) {
		tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(8), PadBottom: vg.Points(8),
			PadLeft: vg.Points(8), PadRight: vg.Points(8), PadY: vg.Points(16)}
		cs := plot.Align([][]*plot.Plot{{bars}, {line}}, tiles, dc)
		bars.Draw(cs[0][0])
		line.Draw(cs[1][0])
	})
}
