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

// LogLimiter lets through at most LogBurst lines a second and counts the
// rest, for the lines any peer can cause at will (failed authentications,
// authorization denials, connections closed before authenticating): a
// flood of them must not flood the log. The zero value is ready.
type LogLimiter struct {
	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

// LogBurst is how many lines a LogLimiter lets through per second.
const LogBurst = 10

// Allow reports whether a line may be logged now, and how many were
// suppressed since the last one that was (the line should say so).
func (l *LogLimiter) Allow(now time.Time) (suppressed int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= time.Second {
		l.window, l.n = now, 0
	}
	if l.n >= LogBurst {
		l.suppressed++
		return 0, false
	}
	l.n++
	s := l.suppressed
	l.suppressed = 0
	return s, true
}

// nopObserver stands in for a nil Observer.
type nopObserver struct{}

func (nopObserver) ObserveRequest(int16, time.Duration, bool) {}
func (nopObserver) ObserveConnection(ConnEvent)               {}
func (nopObserver) ObserveRequestBytes(int64)                 {}
