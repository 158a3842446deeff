package bench

import (
	"math"
	"sync/atomic"
	"time"
)

// histogram counts latencies in geometric buckets (about 2% wide) from
// 1 µs up: constant memory and lock-free recording, so it can take every
// record's latency at hundreds of thousands of records per second.
type histogram struct {
	buckets [histBuckets]atomic.Int64
	max     atomic.Int64
}

const (
	histBuckets = 1200
	histGrowth  = 1.02
)

var histLogGrowth = math.Log(histGrowth)

func (h *histogram) record(d time.Duration) {
	us := float64(d) / float64(time.Microsecond)
	i := 0
	if us > 1 {
		i = int(math.Log(us) / histLogGrowth)
		if i >= histBuckets {
			i = histBuckets - 1
		}
	}
	h.buckets[i].Add(1)
	for {
		m := h.max.Load()
		if int64(d) <= m || h.max.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

// quantile returns the latency below which a fraction q of the recorded
// values fall (the upper edge of that bucket), or 0 with nothing recorded.
func (h *histogram) quantile(q float64) time.Duration {
	var total int64
	for i := range h.buckets {
		total += h.buckets[i].Load()
	}
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(total)))
	var seen int64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			d := time.Duration(math.Pow(histGrowth, float64(i+1)) * float64(time.Microsecond))
			if m := time.Duration(h.max.Load()); d > m {
				d = m
			}
			return d
		}
	}
	return time.Duration(h.max.Load())
}
