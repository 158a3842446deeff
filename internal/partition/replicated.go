package partition

// A replicated partition's log holds the committed entries of its raft
// group, applied in order on every replica (internal/replica). The
// methods here are the deterministic half of that: each decision they
// take depends only on the log and the time the entry carries, so every
// replica reaches the same log. Its HW is the applied log end: what is
// applied is committed, durable in a majority's raft logs, however much
// of it this replica fsynced.

import (
	"fmt"

	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/record"
)

// ApplyBatch applies a committed batch of a replicated partition: the
// producer-state check at nowMs (the proposer's clock, carried in the
// entry), then the append, as Append does. A refused batch appends nothing
// on any replica.
func (p *Partition) ApplyBatch(batch []byte, h record.Header, nowMs int64) (AppendResult, error) {
	p.mu.Lock()
	res, err := p.appendLocked(batch, h, nowMs)
	p.mu.Unlock()
	if err == nil {
		p.raiseHWToEnd()
	}
	return res, err
}

// ApplyMarker applies a committed COMMIT or ABORT marker as
// WriteTxnMarker (firstOffset < 0: whatever is open) or
// WriteTxnMarkerIfOpen does, stamped nowMs and leaderEpoch.
func (p *Partition) ApplyMarker(producerID int64, producerEpoch int16, commit bool, coordinatorEpoch int32, firstOffset int64, nowMs int64, leaderEpoch int32) error {
	if firstOffset < 0 {
		firstOffset = anyTxn
	}
	p.mu.Lock()
	_, err := p.markerLocked(producerID, producerEpoch, commit, coordinatorEpoch, firstOffset, nowMs, leaderEpoch)
	p.mu.Unlock()
	if err == nil {
		p.raiseHWToEnd()
	}
	return err
}

// AppendFetched appends batches copied from another replica's log (a
// follower catching up from a leader's snapshot): each must start at this
// log's end, and none is checked against the producer state, which only
// follows them.
func (p *Partition) AppendFetched(batches []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err := record.Split(batches, func(h record.Header, batch []byte) error {
		if next := p.log.NextOffset(); h.BaseOffset != next {
			return fmt.Errorf("fetched batch at offset %d, the log ends at %d", h.BaseOffset, next)
		}
		if _, err := p.log.Append(batch); err != nil {
			return p.storageErr(err)
		}
		ctype, cepoch := controlInfo(h, batch)
		if h.HasProducerID() {
			p.limits.forgotten(p.state.Apply(&h, ctype, cepoch))
		}
		return nil
	})
	p.publishLocked()
	p.raiseHWToEnd()
	return err
}

// AdvanceHW makes everything in the log visible: for a replicated
// partition whose log holds only committed entries.
func (p *Partition) AdvanceHW() { p.raiseHWToEnd() }

// raiseHWToEnd raises the HW to the log end: a replicated partition's log
// holds only committed entries, however much of it is fsynced here, so
// the durable offset does not bound it (advanceHW's clamp is for
// unreplicated logs). Its truncations run on the goroutine that applies,
// so none races this.
func (p *Partition) raiseHWToEnd() {
	if p.raiseHW(p.log.NextOffset()) {
		p.notify()
	}
}

// MarkReplicated makes the producer state change only by applied entries:
// snapshots and reloads no longer expire producers on the local clock or
// drop those whose batches precede the log start, which would make this
// replica decide differently from the others.
func (p *Partition) MarkReplicated() { p.replicated.Store(true) }

// ProducerState encodes the producer state as of the log end, for a
// replicated partition's checkpoint (the state there, whatever the log
// still holds).
func (p *Partition) ProducerState() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Encode(p.log.NextOffset())
}

// RestoreProducerState installs a producer state ProducerState encoded at
// the current log end (a checkpoint's, after the log was brought back to
// it). The caller must not append concurrently.
func (p *Partition) RestoreProducerState(data []byte) error {
	st, at, err := producerstate.Decode(data)
	if err != nil {
		return fmt.Errorf("checkpoint producer state: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if end := p.log.NextOffset(); at != end {
		return fmt.Errorf("checkpoint producer state is at offset %d, the log ends at %d", at, end)
	}
	p.state = st
	p.state.SetLimits(p.limits.Limits)
	p.publishLocked()
	return nil
}
