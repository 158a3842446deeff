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
// emptied, so sequence numbers survive a restart's replay). The producer
// state itself is not changed: compaction removes only records whose
// state effects are superseded.
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
	})
	return st, p.storageErr(err)
}

// DirtyBytes reports the partition's cleanable log as bytes already
// cleaned and dirty bytes, and the max timestamp of the first dirty
// segment (-1 if none), for the cleaner's choice of log.
func (p *Partition) DirtyBytes(nowMs, minLagMs int64) (clean, dirty, firstDirtyTs int64) {
	return p.log.CleanableBytes(p.CleanBound(), nowMs, minLagMs)
}
