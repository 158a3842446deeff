package verify

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/managed"
)

// runSchedule is the nemesis: it injects the schedule's faults at their
// times until the workload ends. The returned function waits until every
// injected fault has healed (each heals itself when the workload ends).
func (r *runner) runSchedule(ctx context.Context, schedule []Fault) (healed func()) {
	nemCtx, stopNem := context.WithDeadline(ctx, r.start.Add(r.cfg.Duration))
	var nemWG sync.WaitGroup
	for i, f := range schedule {
		select {
		case <-nemCtx.Done():
		case <-time.After(time.Until(r.start.Add(f.At))):
			nemWG.Add(1)
			go func(i int, f Fault) { defer nemWG.Done(); r.inject(nemCtx, i, f) }(i, f)
		}
		if nemCtx.Err() != nil {
			break
		}
	}
	<-nemCtx.Done()
	stopNem()
	return nemWG.Wait
}

// sleepCtx sleeps for d or until ctx ends; false if ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// inject carries out one fault and heals it, at the latest when ctx ends.
func (r *runner) inject(ctx context.Context, i int, f Fault) {
	r.mu.Lock()
	r.faults++
	r.lastFault = f.String()
	r.mu.Unlock()
	ev := Event{Type: EvFault, Proc: "nemesis", Detail: string(f.Kind)}
	heal := Event{Type: EvHeal, Proc: "nemesis", Detail: string(f.Kind)}
	r.logf("fault: %s", f)
	switch f.Kind {
	case FaultBrokerKill, FaultBrokerPause, FaultClusterKill:
		r.brokerMu.Lock()
		defer r.brokerMu.Unlock()
		var nodes []*managed.Broker
		switch {
		case r.cluster == nil:
			nodes = []*managed.Broker{r.broker}
		case f.Kind == FaultClusterKill:
			nodes = r.cluster.Nodes
		default:
			nodes = []*managed.Broker{r.cluster.Nodes[max(f.Node, 1)-1]}
			ev.Value = fmt.Sprintf("node %d", max(f.Node, 1))
		}
		r.rec.Record(ev)
		if f.Kind == FaultBrokerPause {
			nodes[0].Pause(true)
			sleepCtx(ctx, f.For)
			nodes[0].Pause(false)
			r.rec.Record(heal)
			return
		}
		for _, b := range nodes {
			b.Kill()
		}
		sleepCtx(ctx, f.For)
		// Together: a node of a cluster listens only once its quorum has
		// a leader, which needs the others.
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for i, b := range nodes {
			wg.Go(func() { errs[i] = b.Restart() })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			r.logf("restarting the broker: %v", err)
			heal.Error = err.Error()
		}
		r.rec.Record(heal)
	case FaultPartition, FaultOneWayPartition:
		if r.links == nil {
			ev.Error = "no links between nodes"
			r.rec.Record(ev)
			return
		}
		var mend func()
		if f.Kind == FaultPartition {
			ev.Value = fmt.Sprintf("node %d", f.Node)
			mend = r.links.Isolate(f.Node)
		} else {
			ev.Value = fmt.Sprintf("node %d -> node %d", f.Node, f.Peer)
			mend = r.links.Cut(f.Node, f.Peer)
		}
		heal.Value = ev.Value
		r.rec.Record(ev)
		sleepCtx(ctx, f.For)
		mend()
		r.rec.Record(heal)
	case FaultLostAck, FaultDelay, FaultNodeDelay:
		if f.Kind == FaultNodeDelay && r.links == nil {
			ev.Error = "no links between nodes"
			r.rec.Record(ev)
			return
		}
		r.rec.Record(ev)
		r.mu.Lock()
		switch f.Kind {
		case FaultLostAck:
			r.dropOn[i] = f.Probability
		case FaultDelay:
			r.delayOn[i] = f.Delay
		default:
			r.nodeDelayOn[i] = f.Delay
		}
		r.applyNetLocked()
		r.mu.Unlock()
		sleepCtx(ctx, f.For)
		r.mu.Lock()
		delete(r.dropOn, i)
		delete(r.delayOn, i)
		delete(r.nodeDelayOn, i)
		r.applyNetLocked()
		r.mu.Unlock()
		r.rec.Record(heal)
	case FaultReset:
		n := r.proxy.Reset()
		ev.Error = fmt.Sprintf("%d connections", n)
		r.rec.Record(ev)
	case FaultProducerKill, FaultConsumerKill:
		r.mu.Lock()
		s := r.slotFor(f.Role, f.Target)
		var in *instance
		if s != nil {
			in = s.cur
		}
		r.mu.Unlock()
		if in == nil || !in.alive() {
			ev.Error = "target not running"
			r.rec.Record(ev)
			return
		}
		ev.Value = in.proc
		ev.Error = f.Phase
		r.rec.Record(ev)
		in.send(CmdCrash + " " + f.Phase)
		if !in.wait(3 * time.Second) {
			in.kill() // it never reached the phase (idle): kill it anyway
		}
	case FaultRebalance:
		r.mu.Lock()
		r.extraN++
		s := &slot{name: fmt.Sprintf("x%d", r.extraN), role: RolePipeline}
		proc := s.name + ".0"
		sp := r.spec(s, proc)
		r.mu.Unlock()
		in, err := startInstance(r.cfg.WorkerCommand, r.workerEnv(), sp, filepath.Join(r.logDir, proc+".log"))
		if err != nil {
			r.logf("rebalance: %v", err)
			return
		}
		r.mu.Lock()
		r.instances = append(r.instances, in)
		r.mu.Unlock()
		ev.Value = proc
		r.rec.Record(ev)
		sleepCtx(ctx, f.For)
		in.send(CmdStop)
		if !in.wait(5 * time.Second) {
			in.kill()
		}
		r.rec.Record(heal)
	case FaultZombie:
		r.mu.Lock()
		s := r.slotFor(f.Role, f.Target)
		var in *instance
		if s != nil && s.cur != nil && s.cur.alive() && !s.stopping {
			in = s.cur
			s.zombies = append(s.zombies, in)
			s.cur, s.now = nil, true // the supervisor starts the replacement now
		}
		r.mu.Unlock()
		if in == nil {
			ev.Error = "target not running"
			r.rec.Record(ev)
			return
		}
		in.pause(true)
		ev.Value = in.proc
		r.rec.Record(ev)
		sleepCtx(ctx, f.For)
		in.pause(false)
		heal.Value = in.proc
		r.rec.Record(heal)
		// The zombie runs on beside its replacement for a moment (fenced,
		// if fencing works), then goes.
		sleepCtx(ctx, 2*time.Second)
		in.kill()
	}
}

// applyNetLocked sets the proxy to the worst of the network faults in
// force, since their windows may overlap. Called with r.mu held.
func (r *runner) applyNetLocked() {
	var drop float64
	var delay time.Duration
	for _, p := range r.dropOn {
		drop = max(drop, p)
	}
	for _, d := range r.delayOn {
		delay = max(delay, d)
	}
	r.proxy.SetDrop(drop)
	r.proxy.SetDelay(delay)
	if r.links != nil {
		var nodeDelay time.Duration
		for _, d := range r.nodeDelayOn {
			nodeDelay = max(nodeDelay, d)
		}
		r.links.SetDelay(nodeDelay)
	}
}
