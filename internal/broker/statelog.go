package broker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/replica"
)

// replicatedStateLog is a coordinator's internal partition as its leader
// writes it: every Append is a proposal to the partition's raft group, and
// WaitDurable waits for the group to commit and apply it, so a coordinator
// that moves to another replica replays everything it answered for.
//
// Append cannot know the offsets the batch will land at (they are given
// when it is applied), so it hands out tickets from its own counter,
// which starts at the log end when the coordinators load: a marker the
// transaction coordinator writes into __consumer_offsets takes an offset
// the counter does not count, so tickets only ever run behind the log
// (see partition.StateLog).
type replicatedStateLog struct {
	r   *replica.Replica
	p   *partition.Partition
	ctx context.Context // ends when the coordinators unload

	mu      sync.Mutex
	changed *sync.Cond
	next    int64 // the ticket after the last Append
	durable int64 // every ticket below is applied
	pending []stateProposal
	kick    chan struct{}
	err     error // the first failure; every later call returns it
}

type stateProposal struct {
	end  int64
	wait func(context.Context) (partition.AppendResult, error)
}

// errCoordinatorsMoved ends a replicated state log whose coordinators
// unloaded.
var errCoordinatorsMoved = errors.New("the coordinators left this node")

func newReplicatedStateLog(ctx context.Context, r *replica.Replica) *replicatedStateLog {
	l := &replicatedStateLog{r: r, p: r.Partition(), ctx: ctx, kick: make(chan struct{}, 1)}
	l.changed = sync.NewCond(&l.mu)
	l.next = l.p.LogEndOffset()
	l.durable = l.next
	go l.resolve()
	return l
}

// resolve waits for the proposals in order (they apply in that order) and
// advances durable, or records the first failure.
func (l *replicatedStateLog) resolve() {
	for {
		l.mu.Lock()
		for len(l.pending) == 0 && l.err == nil {
			l.mu.Unlock()
			select {
			case <-l.kick:
			case <-l.ctx.Done():
				l.fail(errCoordinatorsMoved)
				return
			}
			l.mu.Lock()
		}
		if l.err != nil {
			l.mu.Unlock()
			return
		}
		next := l.pending[0]
		l.mu.Unlock()
		if _, err := next.wait(l.ctx); err != nil {
			l.fail(err)
			return
		}
		l.mu.Lock()
		l.pending = l.pending[1:]
		l.durable = next.end
		l.changed.Broadcast()
		l.mu.Unlock()
	}
}

func (l *replicatedStateLog) fail(err error) {
	l.mu.Lock()
	if l.err == nil {
		if l.ctx.Err() != nil {
			err = errCoordinatorsMoved
		}
		l.err = err
	}
	l.pending = nil
	l.changed.Broadcast()
	l.mu.Unlock()
}

// Append implements partition.StateLog.
func (l *replicatedStateLog) Append(batch []byte, h record.Header) (partition.AppendResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return partition.AppendResult{}, l.err
	}
	// Under l.mu: tickets follow the proposals' order.
	wait, err := l.r.ProposeBatch(l.ctx, batch, l.r.LeaderEpoch(), time.Now().UnixMilli())
	if err != nil {
		l.err = notLeader(err)
		l.changed.Broadcast()
		return partition.AppendResult{}, l.err
	}
	res := partition.AppendResult{BaseOffset: l.next, LastOffset: l.next + int64(h.NumRecords) - 1}
	l.next += int64(h.NumRecords)
	l.pending = append(l.pending, stateProposal{end: l.next, wait: wait})
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return res, nil
}

// WaitDurable implements partition.StateLog: committed by the group's
// majority and applied here.
func (l *replicatedStateLog) WaitDurable(upto int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.durable < upto && l.err == nil {
		l.changed.Wait()
	}
	if l.durable >= upto {
		return nil
	}
	return l.err
}

// LogEndOffset implements partition.StateLog: the next ticket.
func (l *replicatedStateLog) LogEndOffset() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// LogStartOffset implements partition.StateLog.
func (l *replicatedStateLog) LogStartOffset() int64 { return l.p.LogStartOffset() }

// HighWatermark implements partition.StateLog.
func (l *replicatedStateLog) HighWatermark() int64 { return l.p.HighWatermark() }

// Read implements partition.StateLog.
func (l *replicatedStateLog) Read(offset int64, maxBytes int, readCommitted bool) ([]byte, error) {
	return l.p.Read(offset, maxBytes, readCommitted)
}

// DeleteRecordsBefore implements partition.StateLog through the group, so
// every replica drops the same prefix.
func (l *replicatedStateLog) DeleteRecordsBefore(offset int64) (int64, error) {
	ctx, cancel := context.WithTimeout(l.ctx, peerTimeout)
	defer cancel()
	lw, err := l.r.DeleteRecords(ctx, offset)
	return lw, notLeader(err)
}

var _ partition.StateLog = (*replicatedStateLog)(nil)
