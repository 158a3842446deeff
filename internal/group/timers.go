package group

import (
	"container/heap"
	"time"
)

// timerKind names what a deadline is for.
type timerKind uint8

const (
	tJoin     timerKind = iota + 1 // classic group: end of the join phase (or of an initial-delay step)
	tSync                          // classic group: members that have not synced by now are removed
	tSession                       // classic member: session expiry
	tPending                       // classic: a KIP-394 member id handed out but never used
	tCSession                      // consumer member: session expiry
	tCRevoke                       // consumer member: revocation not acknowledged in time
)

// String names the deadline for logs and tests.
func (k timerKind) String() string {
	return [...]string{"?", "join", "sync", "session", "pending", "consumer-session", "consumer-revoke"}[k]
}

// timer is one deadline. Timers are never removed from the heap when they
// are superseded: the owner remembers the id of its live timer, and a timer
// whose id no longer matches is ignored when it fires. That keeps
// rescheduling (every heartbeat) O(log n) with no search.
type timer struct {
	at     time.Time
	id     uint64
	kind   timerKind
	group  string
	member string
}

type timerHeap []timer

// Len, Less, Swap, Push and Pop implement heap.Interface (earliest first).
func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].id < h[j].id // deterministic order for equal deadlines
}
func (h timerHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)   { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// schedule adds a deadline and returns its id for the owner to keep.
func (m *Machine) schedule(at time.Time, kind timerKind, group, member string) uint64 {
	m.timerSeq++
	heap.Push(&m.timers, timer{at: at, id: m.timerSeq, kind: kind, group: group, member: member})
	return m.timerSeq
}

// nextWake is the earliest pending deadline, zero if none.
func (m *Machine) nextWake() time.Time {
	if len(m.timers) == 0 {
		return time.Time{}
	}
	return m.timers[0].at
}

// popDue removes and returns the earliest timer if it is due at now.
func (m *Machine) popDue(now time.Time) (timer, bool) {
	if len(m.timers) == 0 || m.timers[0].at.After(now) {
		return timer{}, false
	}
	return heap.Pop(&m.timers).(timer), true
}
