package bench

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestMedianIntervalOrderStatistics: the interval is the pair of order
// statistics the sign test gives, with its exact coverage, and none below
// six values.
func TestMedianIntervalOrderStatistics(t *testing.T) {
	for n := range 6 {
		if in := medianInterval(make([]float64, n)); in != nil {
			t.Errorf("%d values: interval %+v, want none (even min–max covers less than 95%%)", n, in)
		}
	}
	for _, c := range []struct {
		n, k       int     // 1-based low order statistic; high is n+1−k
		confidence float64 // 1 − 2·P(Binomial(n, ½) ≤ k−1)
	}{
		{6, 1, 1 - 2.0/64},
		{10, 2, 1 - 2*11.0/1024},
		{20, 6, 1 - 2*21700.0/1048576},
	} {
		// n distinct values, shuffled: the answer must not depend on order.
		v := make([]float64, c.n)
		for i := range v {
			v[i] = float64(i + 1)
		}
		rand.New(rand.NewPCG(1, uint64(c.n))).Shuffle(len(v), func(i, j int) { v[i], v[j] = v[j], v[i] })
		in := medianInterval(v)
		if in == nil || in.Low != float64(c.k) || in.High != float64(c.n+1-c.k) || math.Abs(in.Confidence-c.confidence) > 1e-12 {
			t.Errorf("%d values: %+v, want [%d, %d] at %.6f", c.n, in, c.k, c.n+1-c.k, c.confidence)
		}
	}
	// Thousands of rounds neither overflow nor lose the interval; it
	// narrows to about ±1.96·√n/2 ranks around the middle.
	v := make([]float64, 2000)
	for i := range v {
		v[i] = float64(i)
	}
	in := medianInterval(v)
	if in == nil || in.Confidence < 0.95 || in.Confidence > 0.96 || in.Low < 950 || in.High > 1049 {
		t.Errorf("2000 values: %+v", in)
	}
}

// TestMedianIntervalCoverage: over many simulated benchmarks of a skewed
// distribution, the interval holds the true median at least as often as it
// claims. An order statistic one off (x(3), x(8) of ten values) covers only
// 89%, which this catches.
func TestMedianIntervalCoverage(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	trueMedian := math.Ln2 // of Exp(1)
	for _, n := range []int{6, 10, 20} {
		const trials = 20000
		covered, claimed := 0, 0.0
		for range trials {
			v := make([]float64, n)
			for i := range v {
				v[i] = r.ExpFloat64()
			}
			in := medianInterval(v)
			claimed = in.Confidence
			if in.Low <= trueMedian && trueMedian <= in.High {
				covered++
			}
		}
		// Binomial noise of 20000 trials at 0.96 is about 0.14%.
		if got := float64(covered) / trials; got < claimed-0.006 {
			t.Errorf("%d rounds: covered the median in %.4f of trials, claimed %.4f", n, got, claimed)
		}
	}
}

// TestReportPrintsIntervals: comparisons of six or more rounds carry an
// interval into the text report and its explanation; fewer rounds carry
// neither.
func TestReportPrintsIntervals(t *testing.T) {
	report := func(rounds int) string {
		rep := &Report{}
		for i := range rounds {
			idem := 500 + float64(i)
			rep.Results = append(rep.Results,
				Result{Target: "exactly", Mode: Idempotent, Round: i, MBps: idem},
				Result{Target: "exactly", Mode: Transactional, Round: i, MBps: idem * (0.95 + float64(i)/100)})
		}
		rep.summarize([]Target{{Name: "exactly"}}, []string{Idempotent, Transactional})
		var buf bytes.Buffer
		if err := rep.WriteText(&buf); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	// Ratios −5%, −4%, … +4%: ten rounds give x(2), x(9) = −4% and +3%.
	out := report(10)
	if want := "transactional vs idempotent: -0.5% (median of 10 paired rounds; 97.8% interval -4.0% to +3.0%)"; !strings.Contains(out, want) {
		t.Errorf("ten rounds: report lacks %q:\n%s", want, out)
	}
	if !strings.Contains(out, "Intervals: ") {
		t.Errorf("ten rounds: no explanation of the intervals:\n%s", out)
	}
	out = report(5)
	if strings.Contains(out, "interval") || strings.Contains(out, "Intervals") {
		t.Errorf("five rounds printed an interval:\n%s", out)
	}
}
