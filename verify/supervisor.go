package verify

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/exactly/exactly/clientconf"
)

// slot is a process identity that survives restarts: a producer or pipeline
// position with its transactional and group instance ids.
type slot struct {
	name     string
	role     string
	gen      int
	cur      *instance
	all      []*instance
	zombies  []*instance
	diedAt   time.Time
	stopping bool
	now      bool // replace immediately (zombie), no restart pause
}

// spec builds the WorkerSpec of a slot's next instance.
func (r *runner) spec(s *slot, proc string) WorkerSpec {
	sp := WorkerSpec{
		Role: s.role, Proc: proc, Seed: r.cfg.Seed, Brokers: r.proxy.Addrs(),
		InTopic: r.in, OutTopic: r.out, Partitions: r.cfg.Partitions, Group: r.group,
		TransactionalID: "verify-" + r.runID + "-" + s.name, Profile: r.profile,
		History: filepath.Join(r.histDir, proc+".jsonl"), TxnTimeout: 10 * time.Second,
		SASL: clientconf.Settings{Mechanism: r.cfg.Security.Mechanism, User: r.cfg.Security.User},
	}
	if s.role == RoleProducer {
		if r.cfg.Rate > 0 {
			sp.Rate = r.cfg.Rate / float64(r.cfg.Producers)
		}
	} else if r.profile.Consumer.Commit == CommitShare {
		// Share groups have no static membership: each instance is a
		// new member.
		sp.Role = RoleShare
	} else if r.cfg.StaticMembership && s.name[0] == 'c' {
		sp.InstanceID = r.runID + "-" + s.name
	}
	return sp
}

// startSlot starts a slot's next instance. Called without r.mu.
func (r *runner) startSlot(s *slot) error {
	r.mu.Lock()
	proc := fmt.Sprintf("%s.%d", s.name, s.gen)
	s.gen++
	sp := r.spec(s, proc)
	r.mu.Unlock()
	in, err := startInstance(r.cfg.WorkerCommand, r.workerEnv(), sp, filepath.Join(r.logDir, proc+".log"))
	if err != nil {
		return err
	}
	r.mu.Lock()
	s.cur, s.now = in, false
	s.all = append(s.all, in)
	r.instances = append(r.instances, in)
	r.mu.Unlock()
	r.rec.Record(Event{Type: EvStart, Proc: proc, Detail: s.role})
	r.logf("started %s", proc)
	return nil
}

// supervise restarts dead instances of slots that are not stopping.
func (r *runner) supervise(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		var start []*slot
		for _, s := range r.slots {
			if s.stopping {
				continue
			}
			if s.cur != nil && !s.cur.alive() {
				how := "exited"
				if s.cur.err != nil {
					how = s.cur.err.Error()
				}
				r.rec.Record(Event{Type: EvExit, Proc: s.cur.proc, Detail: how})
				r.logf("%s %s", s.cur.proc, how)
				s.cur, s.diedAt = nil, time.Now()
			}
			if s.cur == nil && (s.now || time.Since(s.diedAt) > 300*time.Millisecond) {
				start = append(start, s)
			}
		}
		r.mu.Unlock()
		for _, s := range start {
			if err := r.startSlot(s); err != nil {
				r.logf("restarting %s: %v", s.name, err)
			}
		}
	}
}

// slotFor returns the target-th slot of a role (a fault's target). Called
// with r.mu held.
func (r *runner) slotFor(role string, target int) *slot {
	n := 0
	for _, s := range r.slots {
		if s.role == role {
			if n == target {
				return s
			}
			n++
		}
	}
	return nil
}

// workerEnv is the environment added to every worker: the configured one
// plus the SASL password, which must not appear in the worker's arguments.
func (r *runner) workerEnv() []string {
	env := append([]string(nil), r.cfg.Env...)
	if r.cfg.Security.Mechanism != "" {
		env = append(env, r.cfg.Security.Env()...)
	}
	return env
}
