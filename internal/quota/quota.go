// Package quota implements Kafka's client quotas (KIP-13, KIP-55, KIP-124,
// KIP-219): which configured entity's quota applies to a connection's
// (user, client id), and windowed rate trackers that turn usage above a
// quota into a throttle time. It is pure: no goroutines, no clock (callers
// pass the time), no I/O; the broker stores the configuration and mutes
// throttled connections.
package quota

import (
	"sync"
	"sync/atomic"
	"time"
)

// Set is a quota configuration: for each entity, its keys and values.
// A Set handed to a Manager is never modified again.
type Set map[Entity]map[string]float64

// Resolve finds the quota for key that applies to a connection of user and
// clientID (Kafka's precedence, see Candidates) and the bucket that meters
// it. ok is false when no entity sets key for this connection: unlimited.
func (s Set) Resolve(key, user, clientID string) (bound float64, bucket Entity, ok bool) {
	if len(s) == 0 {
		return 0, Entity{}, false
	}
	for _, m := range Candidates(user, clientID) {
		if v, found := s[m.Entity][key]; found {
			return v, m.Bucket, true
		}
	}
	return 0, Entity{}, false
}

// Type is a metered quota: what is counted and against which key.
type Type int

// The metered quota types.
const (
	Produce Type = iota // request bytes of Produce against producer_byte_rate
	Fetch               // response bytes of Fetch against consumer_byte_rate
	Request             // handler time, in percent of one thread, against request_percentage
	numTypes
)

// Key is the quota key the type is limited by.
func (t Type) Key() string {
	return [...]string{ProducerByteRate, ConsumerByteRate, RequestPercentage}[t]
}

// String is the type's name in metrics (Kafka's quota type names).
func (t Type) String() string { return [...]string{"Produce", "Fetch", "Request"}[t] }

// Types lists every metered type.
func Types() []Type { return []Type{Produce, Fetch, Request} }

// PercentOf converts handler time to request_percentage units: percent of
// one thread for one second (Kafka's nanosToPercentage).
func PercentOf(d time.Duration) float64 { return float64(d) * 100 / float64(time.Second) }

// Manager holds the quota configuration and one Tracker per type, and is
// safe for concurrent use. Connections with no applicable quota cost a few
// map lookups and take no lock.
type Manager struct {
	set      atomic.Pointer[Set]
	mu       sync.Mutex
	trackers [numTypes]*Tracker
}

// NewManager returns a manager with no quotas. Byte throttles are capped
// at the whole window, request-time throttles at one sample (as Kafka's
// ClientRequestQuotaManager caps them).
func NewManager(w Window) *Manager {
	m := &Manager{}
	m.trackers[Produce] = NewTracker(w, w.span())
	m.trackers[Fetch] = NewTracker(w, w.span())
	m.trackers[Request] = NewTracker(w, w.Size)
	empty := Set{}
	m.set.Store(&empty)
	return m
}

// SetQuotas replaces the configuration. Rates measured so far are kept:
// a changed quota applies to the traffic already in the window.
func (m *Manager) SetQuotas(s Set) { m.set.Store(&s) }

// Quotas is the current configuration; callers must not modify it.
func (m *Manager) Quotas() Set { return *m.set.Load() }

// Record meters value of type t for a connection and returns its throttle
// time (zero when no quota applies or the rate is within it).
func (m *Manager) Record(t Type, user, clientID string, value float64, now time.Time) time.Duration {
	bound, bucket, ok := m.Quotas().Resolve(t.Key(), user, clientID)
	if !ok {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.trackers[t].Record(bucket, bound, value, now)
}

// Unrecord takes back value recorded by Record for work not done.
func (m *Manager) Unrecord(t Type, user, clientID string, value float64, now time.Time) {
	_, bucket, ok := m.Quotas().Resolve(t.Key(), user, clientID)
	if !ok {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.trackers[t].Unrecord(bucket, value, now)
}

// Limit is the quota of type t that applies to a connection, if any.
func (m *Manager) Limit(t Type, user, clientID string) (float64, bool) {
	bound, _, ok := m.Quotas().Resolve(t.Key(), user, clientID)
	return bound, ok
}

// Rate is the measured rate of type t in the bucket metering a connection
// (bytes or percent per second; 0 when no quota applies).
func (m *Manager) Rate(t Type, user, clientID string, now time.Time) float64 {
	_, bucket, ok := m.Quotas().Resolve(t.Key(), user, clientID)
	if !ok {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.trackers[t].Rate(bucket, now)
}

// Window is the measuring window.
func (m *Manager) Window() Window { return m.trackers[Produce].Window }
