package broker

import (
	"sync"
	"time"
)

// maxAutoCreatePerRequest bounds the topics one Metadata request may
// create: each creation fsyncs the catalog under adminMu, and one request
// naming thousands of topics would hold every admin change behind it.
// Topics past it are answered UNKNOWN_TOPIC_OR_PARTITION and created when
// the client asks again (clients retry unknown topics).
const maxAutoCreatePerRequest = 10

// autoCreateBudget is a token bucket for topic auto-creation: up to
// perMinute topics at once, refilled at perMinute per minute. Without it
// any client could fill the catalog and the disk with topics by asking
// for their metadata.
type autoCreateBudget struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// take spends one creation if the bucket holds one.
func (a *autoCreateBudget) take(now time.Time, perMinute int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	capacity := float64(perMinute)
	if a.last.IsZero() {
		a.tokens = capacity
	} else if d := now.Sub(a.last); d > 0 {
		a.tokens = min(capacity, a.tokens+d.Minutes()*capacity)
	}
	a.last = now
	if a.tokens < 1 {
		return false
	}
	a.tokens--
	return true
}
