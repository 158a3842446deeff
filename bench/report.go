package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText prints the summaries as a table, one row per target and mode,
// then the comparisons and any failed runs.
func (rep *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "exactly bench: %s\n\n", rep.Settings)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tmode\tMB/s\t(min–max)\trecords/s\tp50\tp99\tbroker CPU s/GB\tclient CPU s/GB\truns")
	for _, s := range rep.Summaries {
		mode := s.Mode
		if s.WhileCleaning {
			mode += " while cleaning"
		}
		if s.Runs == s.Failed {
			fmt.Fprintf(tw, "%s\t%s\tfailed\t\t\t\t\t\t\t%d\n", s.Target, mode, s.Runs)
			continue
		}
		p50, p99 := "-", "-"
		if !isConsume(s.Mode) {
			p50, p99 = ms(s.P50), ms(s.P99)
		}
		runs := fmt.Sprint(s.Runs)
		if s.Failed > 0 {
			runs = fmt.Sprintf("%d (%d failed)", s.Runs, s.Failed)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t(%.1f–%.1f)\t%.0f\t%s\t%s\t%s\t%s\t%s\n",
			s.Target, mode, s.MBps, s.MinMBps, s.MaxMBps, s.RecordsPerSec, p50, p99,
			cpuString(s.BrokerCPUPerGB), cpuString(s.ClientCPUPerGB), runs)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Comparisons) > 0 {
		fmt.Fprintln(w)
		for _, c := range rep.Comparisons {
			if c.WhileCleaning {
				fmt.Fprintf(w, "%s: %s while cleaning vs alone: %+.1f%% (%s); %s\n",
					c.Target, c.Mode, c.Change*100, roundsString(c.Rounds, c.Interval, changeString), c.cleanerString())
				continue
			}
			fmt.Fprintf(w, "%s: %s vs %s: %+.1f%% (%s)\n", c.Target, c.Mode, c.Against, c.Change*100, roundsString(c.Rounds, c.Interval, changeString))
		}
	}
	if len(rep.TargetComparisons) > 0 {
		fmt.Fprintln(w)
		for _, c := range rep.TargetComparisons {
			cpu := ""
			if c.CPURatio != nil {
				cpu = fmt.Sprintf(", broker CPU per GB %.2f×", *c.CPURatio)
			}
			fmt.Fprintf(w, "%s vs %s, %s: MB/s %.2f×%s (%s)\n", c.Target, c.Against, c.Mode, c.Ratio, cpu, roundsString(c.Rounds, c.Interval, ratioString))
		}
	}
	var failed []string
	for _, r := range rep.Results {
		if r.Err != "" {
			failed = append(failed, fmt.Sprintf("  round %d %s %s: %s", r.Round+1, r.Target, r.Mode, r.Err))
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "\nfailed runs:\n%s\n", strings.Join(failed, "\n"))
	}
	var again []string
	for _, r := range rep.Results {
		if r.Redelivered > 0 {
			again = append(again, fmt.Sprintf("  round %d %s %s: %d extra deliveries of its %d records", r.Round+1, r.Target, r.Mode, r.Redelivered, r.Records))
		}
	}
	if len(again) > 0 {
		fmt.Fprintf(w, "\nredeliveries (counted once in the throughput):\n%s\n", strings.Join(again, "\n"))
	}
	produced := false
	for _, s := range rep.Summaries {
		produced = produced || !isConsume(s.Mode)
	}
	if produced {
		fmt.Fprintln(w, "\nLatency is from Produce to the acknowledgement of the record's batch (not to the commit), including time queued in the client's buffer.")
	}
	if rep.hasIntervals() {
		fmt.Fprintln(w, "Intervals: the median's distribution-free confidence interval over the paired rounds (sign test), assuming rounds are independent; it makes no assumption about the spread, so on a noisy machine it is wide.")
	}
	fmt.Fprintln(w, "CPU s/GB: CPU seconds (user+system) of the broker process and of this client per 10^9 bytes of values produced or read, over the whole run; - where the broker's process is not known (a --bootstrap target).")
	return nil
}

// roundsString says how many paired rounds a median is of and, with six
// or more, the confidence interval around it, each bound printed by bound.
func roundsString(rounds int, in *Interval, bound func(float64) string) string {
	s := fmt.Sprintf("median of %d paired rounds", rounds)
	if in != nil {
		s += fmt.Sprintf("; %.1f%% interval %s to %s", math.Floor(in.Confidence*1000)/10, bound(in.Low), bound(in.High))
	}
	return s
}

func changeString(c float64) string { return fmt.Sprintf("%+.1f%%", c*100) }
func ratioString(r float64) string  { return fmt.Sprintf("%.2f×", r) }

// hasIntervals reports whether any comparison printed an interval, so the
// note explaining them appears only then.
func (rep *Report) hasIntervals() bool {
	for _, c := range rep.Comparisons {
		if c.Interval != nil {
			return true
		}
	}
	for _, c := range rep.TargetComparisons {
		if c.Interval != nil {
			return true
		}
	}
	return false
}

// cpuString is a summary's CPU seconds per GB, or "-" if not measured.
func cpuString(perGB *float64) string {
	if perGB == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *perGB)
}

// cleanerString says what the background writer wrote and what the
// cleaner did in the paired runs, so a reader can see it actually ran.
func (c Comparison) cleanerString() string {
	s := fmt.Sprintf("the background writer wrote %.1f MB", float64(c.BackgroundBytes)/1e6)
	if c.Cleaner == nil {
		return s + "; cleaner activity not measured (no metrics endpoint for this target)"
	}
	return s + fmt.Sprintf(", the cleaner read %.1f MB and rewrote %.1f MB in %d passes (%.1f MB rewritten in the runs alone)",
		float64(c.Cleaner.BytesRead)/1e6, float64(c.Cleaner.BytesWritten)/1e6, c.Cleaner.Runs, float64(c.CleanerQuiet.BytesWritten)/1e6)
}

// redeliveredString is a progress line's note of records a group mode's
// consumers got more than once.
func (r Result) redeliveredString() string {
	if r.Redelivered == 0 {
		return ""
	}
	return fmt.Sprintf(", %d records redelivered", r.Redelivered)
}

// logString is a progress line's note of what the cleaner did in a run.
func (a *CleanerActivity) logString() string {
	if a == nil {
		return ""
	}
	return fmt.Sprintf(", cleaner rewrote %.1f MB in %d passes", float64(a.BytesWritten)/1e6, a.Runs)
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// Failed reports whether any run failed.
func (rep *Report) Failed() bool {
	for _, r := range rep.Results {
		if r.Err != "" {
			return true
		}
	}
	return false
}
