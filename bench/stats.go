package bench

import (
	"math"
	"slices"
)

// Interval is a distribution-free confidence interval for the median of a
// comparison's paired per-round values: two of the sorted values, chosen so
// that the true median lies between them with probability Confidence, if
// the rounds are independent. It assumes nothing about how the rounds
// spread, which is why it can be wide: a machine whose runs of one mode
// differ by 20% cannot show a 3% difference in a few rounds, and this is
// what says so.
type Interval struct {
	Low        float64 `json:"low"`
	High       float64 `json:"high"`
	Confidence float64 `json:"confidence"`
}

// minIntervalConfidence is the least coverage medianInterval accepts.
const minIntervalConfidence = 0.95

// median is the middle value of v (the mean of the two middle ones for an
// even count); v is not modified.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medianInterval is the narrowest interval of order statistics
// [x(k), x(n+1−k)] whose coverage of the median is at least 95%: the
// median is below x(k) only if fewer than k of the n values are below it,
// which for independent rounds has the probability of a Binomial(n, ½)
// count being under k, and likewise above. It is nil for fewer than six
// values, where even the minimum and maximum cover less than 95%.
func medianInterval(v []float64) *Interval {
	n := len(v)
	k, tail := 0, 0.0 // tail: P(Binomial(n, ½) ≤ k−1) for the k chosen so far
	for next := tail + binomialHalf(n, k); k < n/2 && 1-2*next >= minIntervalConfidence; next += binomialHalf(n, k) {
		k, tail = k+1, next
	}
	if k == 0 {
		return nil
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return &Interval{Low: s[k-1], High: s[n-k], Confidence: 1 - 2*tail}
}

// binomialHalf is P(X = i) for X ~ Binomial(n, ½), computed in logarithms
// so that long runs of rounds neither overflow nor underflow.
func binomialHalf(n, i int) float64 {
	if i < 0 || i > n {
		return 0
	}
	ln := func(x int) float64 { l, _ := math.Lgamma(float64(x) + 1); return l }
	return math.Exp(ln(n) - ln(i) - ln(n-i) - float64(n)*math.Ln2)
}
