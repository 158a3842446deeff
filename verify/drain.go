package verify

import (
	"context"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// drain ends the workload within cfg.Drain after durEnd: producers stop
// (transactional slots that died get a fence-only instance), the group is
// awaited until it has committed past the last input record (share mode:
// until its start offsets reach the end of the input), and the pipeline
// stops. It says whether the pipeline caught up, and to what.
func (r *runner) drain(ctx context.Context, durEnd time.Time) (bool, map[int32]int64) {
	at := func(f float64) time.Time { return durEnd.Add(time.Duration(f * float64(r.cfg.Drain))) }
	r.logf("workload ended; draining")
	r.stopRole(RoleProducer, at(0.25))
	if r.profile.Producer.Transactional {
		r.fenceDeadProducers(at(0.35))
	}
	wait := r.waitCaughtUp
	if r.share() {
		wait = r.waitShareSettled
	}
	drained, target, err := wait(ctx, at(0.75))
	if err != nil {
		r.logf("drain: %v", err)
	}
	r.stopRole(RolePipeline, at(0.8))
	return drained, target
}

// stopRole asks every instance of a role to finish and exit, and kills
// whatever has not exited by the deadline.
func (r *runner) stopRole(role string, by time.Time) {
	r.mu.Lock()
	var ins []*instance
	for _, s := range r.slots {
		if s.role != role {
			continue
		}
		s.stopping = true
		if s.cur != nil {
			ins = append(ins, s.cur)
		}
		for _, z := range s.zombies {
			z.kill()
		}
	}
	r.mu.Unlock()
	for _, in := range ins {
		in.send(CmdStop)
	}
	for _, in := range ins {
		if !in.wait(time.Until(by)) {
			r.logf("%s did not stop in time; killing it", in.proc)
			r.note("%s did not stop within the drain bound and was killed", in.proc)
			in.kill()
			in.wait(5 * time.Second)
		}
	}
}

// fenceDeadProducers runs a fence-only instance for every transactional
// producer slot whose last instance did not finish cleanly, so no
// transaction it left open holds back the last stable offset.
func (r *runner) fenceDeadProducers(by time.Time) {
	var fences []*instance
	for _, s := range r.slots {
		r.mu.Lock()
		last := s.cur
		if last == nil && len(s.all) > 0 {
			last = s.all[len(s.all)-1]
		}
		r.mu.Unlock()
		if s.role != RoleProducer || (last != nil && last.cleanExit()) {
			continue
		}
		sp := r.spec(s, s.name+".fence")
		sp.FenceOnly = true
		in, err := startInstance(r.cfg.WorkerCommand, r.workerEnv(), sp, filepath.Join(r.logDir, sp.Proc+".log"))
		if err != nil {
			r.logf("fencing %s: %v", s.name, err)
			continue
		}
		r.mu.Lock()
		r.instances = append(r.instances, in)
		r.mu.Unlock()
		fences = append(fences, in)
	}
	for _, in := range fences {
		if !in.wait(time.Until(by)) {
			in.kill()
		}
	}
}

// waitCaughtUp waits until the group has committed past the last record of
// every input partition (as the pipeline's isolation level sees them).
func (r *runner) waitCaughtUp(ctx context.Context, by time.Time) (bool, map[int32]int64, error) {
	target := map[int32]int64{}
	rctx, cancel := context.WithDeadline(ctx, by)
	defer cancel()
	fr, err := ReadTopic(rctx, r.admin, r.in, r.profile.Consumer.ReadCommitted)
	if err != nil {
		return false, target, err
	}
	for p, rs := range fr.Records {
		if len(rs) > 0 {
			target[p] = rs[len(rs)-1].Offset + 1
		}
	}
	adm := kadm.NewClient(r.admin)
	for {
		offs, err := adm.FetchOffsets(rctx, r.group)
		if err == nil {
			done := true
			for p, want := range target {
				o, ok := offs.Lookup(r.in, p)
				if !ok || o.Err != nil || o.At < want {
					done = false
				}
			}
			if done {
				r.logf("the pipeline caught up")
				return true, target, nil
			}
		}
		select {
		case <-rctx.Done():
			return false, target, nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// killAll kills every instance still alive and waits for them: nothing a
// run started outlives it.
func (r *runner) killAll() {
	r.mu.Lock()
	ins := append([]*instance(nil), r.instances...)
	r.mu.Unlock()
	for _, in := range ins {
		if in.alive() {
			in.kill()
		}
	}
	for _, in := range ins {
		in.wait(5 * time.Second)
	}
}
