package quorum

import (
	"sync"

	"go.etcd.io/raft/v3"
)

// reportQueue collects what the transport reports about sends for one raft
// loop (the metadata node's or a partition group's), which takes them all
// at once when signalled; adding never blocks the transport.
type reportQueue struct {
	mu      sync.Mutex
	reports []transportReport
	// ready is signalled (capacity 1) when reports are waiting.
	ready chan struct{}
}

func newReportQueue() reportQueue { return reportQueue{ready: make(chan struct{}, 1)} }

func (q *reportQueue) add(r transportReport) {
	q.mu.Lock()
	q.reports = append(q.reports, r)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// tell hands every waiting report to rn.
func (q *reportQueue) tell(rn *raft.RawNode) {
	q.mu.Lock()
	reps := q.reports
	q.reports = nil
	q.mu.Unlock()
	for _, r := range reps {
		switch {
		case r.snapshot && r.ok:
			rn.ReportSnapshot(r.to, raft.SnapshotFinish)
		case r.snapshot:
			rn.ReportSnapshot(r.to, raft.SnapshotFailure)
		case r.unreachable:
			rn.ReportUnreachable(r.to)
		}
	}
}
