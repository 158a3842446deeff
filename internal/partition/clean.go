package partition

import (
	"context"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/producerstate"
)

// CleanConfig is what the broker's cleaner passes for one partition's
// cleaning pass (topic settings, time, its dedupe buffer and throttle).
type CleanConfig struct {
	Ctx                context.Context
	NowMs              int64
	DeleteRetentionMs  int64
	MinCompactionLagMs int64
	MaxRecordsBytes    int64
	Map                *log.OffsetMap
	Throttle           func(n int)
}

// CleanBound is the offset below which the partition's log may be
// cleaned: the last stable offset, so that no open transaction is touched
// and aborted data is known to be aborted.
func (p *Partition) CleanBound() int64 { return p.LastStableOffset() }

// Clean compacts the partition's closed segments below the LSO (see
// log.Log.Clean). The producer state tells it which transactions were
// aborted (their records go) and each producer's last batch (kept, even
// emptied, so sequence numbers survive a restart's replay). The only
// change to the producer state: an aborted transaction with no record
// left loses its aborted-index entry (snapshotted at once), in a pass
// before the one that removes its ABORT marker, so no reader is ever given
// an entry without its marker (clients skip the producer's transactional
// records from the entry's first offset until that marker).
func (p *Partition) Clean(c CleanConfig) (log.CleanStats, error) {
	// Close and Delete cancel a cleaning and wait for it (bg), so no
	// cleaned file appears in a directory being removed.
	parent := c.Ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	p.bgMu.Lock()
	if p.closed.Load() {
		p.bgMu.Unlock()
		return log.CleanStats{}, log.ErrClosed
	}
	p.bg.Add(1)
	p.cleanCancel = cancel
	p.bgMu.Unlock()
	defer p.bg.Done()
	c.Ctx = ctx
	// Entries dropped by an earlier pass must be in a durable snapshot
	// before any marker goes: a restart from an older snapshot would
	// bring back an entry whose marker is missing.
	if p.unlistedPending.Load() {
		if err := p.takeSnapshot(); err != nil {
			return log.CleanStats{}, err
		}
		p.unlistedPending.Store(false)
	}

	p.mu.Lock()
	upTo := p.CleanBound()
	aborted := map[int64][]producerstate.AbortedTxn{}
	for _, a := range p.state.Aborted() {
		aborted[a.ProducerID] = append(aborted[a.ProducerID], a)
	}
	last := map[int64]int64{}
	for _, pr := range p.state.Producers() {
		if n := len(pr.Batches); n > 0 {
			last[pr.ID] = pr.Batches[n-1].BaseOffset
		}
	}
	p.mu.Unlock()
	st, err := p.log.Clean(log.CleanOptions{
		Ctx:                c.Ctx,
		NowMs:              c.NowMs,
		UpTo:               upTo,
		DeleteRetentionMs:  c.DeleteRetentionMs,
		MinCompactionLagMs: c.MinCompactionLagMs,
		Map:                c.Map,
		MaxRecordsBytes:    c.MaxRecordsBytes,
		Throttle:           c.Throttle,
		Aborted: func(pid, off int64) bool {
			for _, a := range aborted[pid] {
				if a.FirstOffset <= off && off <= a.LastOffset {
					return true
				}
			}
			return false
		},
		LastBatch: func(pid, base int64) bool {
			b, ok := last[pid]
			return ok && b == base
		},
		AbortListed: func(pid, marker int64) bool {
			for _, a := range aborted[pid] {
				if a.LastOffset == marker {
					return true
				}
			}
			return false
		},
	})
	if err != nil || len(st.Unlisted) == 0 {
		return st, p.storageErr(err)
	}
	// The transactions of these markers have no record left in what
	// readers see (the pass's swaps are done): drop their entries, make
	// that durable, and let the next pass remove the markers.
	p.mu.Lock()
	for _, m := range st.Unlisted {
		p.state.DropAborted(m.ProducerID, m.Offset)
	}
	p.publishLocked()
	p.mu.Unlock()
	p.unlistedPending.Store(true)
	if err := p.takeSnapshot(); err != nil {
		return st, p.storageErr(err)
	}
	p.unlistedPending.Store(false)
	return st, nil
}

// DirtyBytes reports the partition's cleanable log as bytes already
// cleaned and dirty bytes, and the max timestamp of the first dirty
// segment (-1 if none), for the cleaner's choice of log.
func (p *Partition) DirtyBytes(nowMs, minLagMs int64) (clean, dirty, firstDirtyTs int64) {
	return p.log.CleanableBytes(p.CleanBound(), nowMs, minLagMs)
}
