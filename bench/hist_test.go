package bench

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	if h.quantile(0.5) != 0 {
		t.Fatal("empty histogram should report 0")
	}
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {1, 1000 * time.Millisecond}} {
		got := h.quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.03 {
			t.Errorf("q%.2f = %v, want within 3%% above %v", c.q, got, c.want)
		}
	}
	h.record(0)
	h.record(time.Hour) // beyond the last bucket: counted there, max exact
	if got := h.quantile(1); got != time.Hour {
		t.Errorf("max = %v, want 1h", got)
	}
}
