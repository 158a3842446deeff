package quota

import (
	"hash/maphash"
	"math"
	"time"
)

// Window is Kafka's quota window: Samples samples (quota.window.num) of
// Size each (quota.window.size.seconds). A rate is measured over the
// samples still inside Samples × Size.
type Window struct {
	Samples int
	Size    time.Duration
}

// DefaultWindow is Kafka's default: 11 samples of 1 s.
var DefaultWindow = Window{Samples: 11, Size: time.Second}

// span is how long a sample counts towards the rate.
func (w Window) span() time.Duration { return time.Duration(w.Samples) * w.Size }

// sample is one slot of a windowed rate: what was recorded since start.
type sample struct {
	start time.Time
	value float64
}

// rate is Kafka's sampled Rate: a ring of samples, each Size long, whose
// sum over the elapsed window is the rate. The window counts as at least
// Samples-1 sizes long, so a fresh or idle client may burst up to that many
// sizes' worth of quota before it is throttled, exactly as in Kafka.
type rate struct {
	samples []sample
	cur     int
	last    time.Time // last record, for idle eviction
}

func newRate(w Window, now time.Time) *rate {
	r := &rate{samples: make([]sample, w.Samples), last: now}
	for i := range r.samples {
		r.samples[i].start = now
	}
	return r
}

// record adds value at now, opening the next sample when the current one
// is Size old.
func (r *rate) record(w Window, value float64, now time.Time) {
	r.purge(w, now)
	if now.Sub(r.samples[r.cur].start) >= w.Size {
		r.cur = (r.cur + 1) % len(r.samples)
		r.samples[r.cur] = sample{start: now}
	}
	r.samples[r.cur].value += value
	r.last = now
}

// purge empties samples that left the window: a sample as old as the
// whole span no longer counts.
func (r *rate) purge(w Window, now time.Time) {
	for i := range r.samples {
		if now.Sub(r.samples[i].start) >= w.span() {
			r.samples[i] = sample{start: now}
		}
	}
}

// window is the length the rate is measured over: from the oldest sample's
// start to now, but never less than Samples-1 sizes (Kafka's Rate.windowSize).
func (r *rate) window(w Window, now time.Time) time.Duration {
	r.purge(w, now)
	oldest := r.samples[0].start
	for _, s := range r.samples[1:] {
		if s.start.Before(oldest) {
			oldest = s.start
		}
	}
	elapsed := now.Sub(oldest)
	if min := time.Duration(w.Samples-1) * w.Size; elapsed < min {
		// Kafka pads by whole sizes the full windows it lacks.
		full := elapsed / w.Size
		elapsed += (time.Duration(w.Samples-1) - full) * w.Size
	}
	if elapsed <= 0 {
		elapsed = w.Size
	}
	return elapsed
}

// measure is the rate per second at now.
func (r *rate) measure(w Window, now time.Time) float64 {
	win := r.window(w, now)
	total := 0.0
	for _, s := range r.samples {
		total += s.value
	}
	return total / win.Seconds()
}

// Tracker measures one quota type's windowed rate per bucket (the set of
// clients that share a quota) and turns a rate above the bound into a
// throttle time. It is pure: no goroutines, no clock, not safe for
// concurrent use (Manager locks it).
//
// Buckets are keyed by a hash of the bucket's names, so a hostile client id
// of 32 KiB costs 8 bytes here. At most MaxBuckets are kept: when full,
// buckets idle for a whole window (whose rate is zero anyway) are dropped;
// if none is idle, new buckets share one overflow bucket, which throttles
// them together rather than letting memory grow.
type Tracker struct {
	Window Window
	// MaxThrottle caps one throttle time (Kafka caps request-time
	// throttles at one sample size; byte throttles here at the whole
	// window, after which the recorded bytes have left it anyway).
	MaxThrottle time.Duration
	// MaxBuckets bounds the buckets kept (0: DefaultMaxBuckets).
	MaxBuckets int

	seed    maphash.Seed
	buckets map[uint64]*rate
}

// DefaultMaxBuckets bounds the buckets one Tracker keeps.
const DefaultMaxBuckets = 10000

// overflowKey is the shared bucket of clients that arrive while the
// tracker is full of active buckets.
const overflowKey = 0

// NewTracker returns an empty tracker.
func NewTracker(w Window, maxThrottle time.Duration) *Tracker {
	return &Tracker{Window: w, MaxThrottle: maxThrottle, seed: maphash.MakeSeed(), buckets: map[uint64]*rate{}}
}

// Record adds value to bucket's rate at now and returns how long the client
// must be throttled for the rate to fall back to bound: zero while the rate
// is at most bound, else (rate − bound) / bound × window (Kafka's
// QuotaUtils.throttleTime), capped at MaxThrottle. The value is recorded
// even when the answer is a throttle: the work was done.
func (t *Tracker) Record(bucket Entity, bound, value float64, now time.Time) time.Duration {
	r := t.bucket(bucket, now)
	r.record(t.Window, value, now)
	return t.throttle(r, bound, now)
}

// Unrecord takes value back out of bucket's rate: for work recorded but
// then not done (a throttled fetch answers with no data).
func (t *Tracker) Unrecord(bucket Entity, value float64, now time.Time) {
	if r, ok := t.buckets[t.key(bucket)]; ok {
		r.record(t.Window, -value, now)
	}
}

// Rate is bucket's current rate per second (0 for an unknown bucket).
func (t *Tracker) Rate(bucket Entity, now time.Time) float64 {
	if r, ok := t.buckets[t.key(bucket)]; ok {
		return r.measure(t.Window, now)
	}
	return 0
}

// Len is the number of buckets kept.
func (t *Tracker) Len() int { return len(t.buckets) }

func (t *Tracker) throttle(r *rate, bound float64, now time.Time) time.Duration {
	observed := r.measure(t.Window, now)
	if !(observed > bound) || bound <= 0 {
		return 0
	}
	ms := (observed - bound) / bound * float64(r.window(t.Window, now).Milliseconds())
	d := time.Duration(math.Round(ms)) * time.Millisecond
	if t.MaxThrottle > 0 && d > t.MaxThrottle {
		d = t.MaxThrottle
	}
	return d
}

func (t *Tracker) key(bucket Entity) uint64 {
	k := maphash.Comparable(t.seed, bucket)
	if k == overflowKey {
		k = 1
	}
	return k
}

// bucket finds or makes bucket's rate, keeping at most MaxBuckets.
func (t *Tracker) bucket(bucket Entity, now time.Time) *rate {
	k := t.key(bucket)
	if r, ok := t.buckets[k]; ok {
		return r
	}
	limit := t.MaxBuckets
	if limit <= 0 {
		limit = DefaultMaxBuckets
	}
	if len(t.buckets) >= limit {
		t.evictIdle(now)
	}
	if len(t.buckets) >= limit {
		k = overflowKey
		if r, ok := t.buckets[k]; ok {
			return r
		}
	}
	r := newRate(t.Window, now)
	t.buckets[k] = r
	return r
}

// evictIdle drops buckets with nothing recorded for a whole window.
func (t *Tracker) evictIdle(now time.Time) {
	for k, r := range t.buckets {
		if now.Sub(r.last) >= t.Window.span() {
			delete(t.buckets, k)
		}
	}
}
