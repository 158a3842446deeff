package server

import (
	"errors"
	"log/slog"
	"sync"
	"time"
)

// budget is the broker-wide allowance of request bytes in flight
// (queued.max.request.bytes). Readers take from it before growing a frame
// buffer and give back once the request's handler is done with the bytes.
type budget struct {
	limit int64 // negative: unbounded (bytes are still counted)
	obs   Observer

	mu    sync.Mutex
	used  int64
	freed chan struct{} // closed and replaced whenever bytes are released
}

func newBudget(limit int64, obs Observer) *budget {
	return &budget{limit: limit, obs: obs, freed: make(chan struct{})}
}

// errBudgetTimeout: a frame waited for budget until its read deadline.
var errBudgetTimeout = errors.New("queued.max.request.bytes exhausted until the frame's deadline")

// errServerClosing: the server closed while a frame waited for budget.
var errServerClosing = errors.New("server closing")

// acquire takes n bytes, waiting while they do not fit, until deadline or
// done.
func (b *budget) acquire(n int64, deadline time.Time, done <-chan struct{}) error {
	var timer *time.Timer
	for {
		b.mu.Lock()
		if b.limit < 0 || b.used+n <= b.limit {
			b.used += n
			b.mu.Unlock()
			b.obs.ObserveRequestBytes(n)
			if timer != nil {
				timer.Stop()
			}
			return nil
		}
		freed := b.freed
		b.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
		}
		select {
		case <-freed:
		case <-done:
			timer.Stop()
			return errServerClosing
		case <-timer.C:
			return errBudgetTimeout
		}
	}
}

// release gives back n bytes and wakes every waiter to retry.
func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
	b.obs.ObserveRequestBytes(-n)
}

// acceptRetry paces retries of a failing Accept: 5 ms doubling to 1 s, and
// one log line per 10 s however often it fails (a process out of file
// descriptors would otherwise log as fast as it retries).
type acceptRetry struct {
	delay      time.Duration
	lastLog    time.Time
	suppressed int
}

const (
	acceptRetryMin   = 5 * time.Millisecond
	acceptRetryMax   = time.Second
	acceptLogEvery   = 10 * time.Second
	acceptLogMessage = "accept failed; retrying"
)

// failed records a failed Accept and sets the delay before the next one.
func (r *acceptRetry) failed(log *slog.Logger, err error) {
	r.delay = min(max(acceptRetryMin, 2*r.delay), acceptRetryMax)
	if now := time.Now(); now.Sub(r.lastLog) >= acceptLogEvery {
		log.Error(acceptLogMessage, "err", err, "suppressed_since_last_log", r.suppressed, "retry_in", r.delay)
		r.lastLog, r.suppressed = now, 0
	} else {
		r.suppressed++
	}
}

// reset starts over after a successful Accept.
func (r *acceptRetry) reset() { r.delay = 0 }

// nopObserver stands in for a nil Observer.
type nopObserver struct{}

func (nopObserver) ObserveRequest(int16, time.Duration, bool) {}
func (nopObserver) ObserveConnection(ConnEvent)               {}
func (nopObserver) ObserveRequestBytes(int64)                 {}
