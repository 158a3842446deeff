package quorum

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/vfs"
)

// diskList stands for a replica's partition log: it survives the replica's
// restarts, and only what a checkpoint covered is known durable.
type diskList struct {
	mu       sync.Mutex
	entries  []string
	durable  int
	restores []uint64 // senders of the snapshots restored (0: own at start)
}

// groupSM is a GroupStateMachine over a diskList; fetch gives it the
// leader's list, as a partition fetches a leader's segments.
type groupSM struct {
	d     *diskList
	fetch func(from uint64) []string
}

func (s *groupSM) Apply(index, term uint64, data []byte) any {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.entries = append(s.d.entries, string(data))
	return len(s.d.entries)
}

func (s *groupSM) Checkpoint() ([]byte, error) {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.durable = len(s.d.entries)
	return json.Marshal(s.d.durable)
}

func (s *groupSM) Restore(from uint64, data []byte) error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.d.restores = append(s.d.restores, from)
	n := 0
	if data != nil {
		if err := json.Unmarshal(data, &n); err != nil {
			return err
		}
	}
	if from == 0 {
		// The log is cut back to the checkpoint; the entries after it
		// are applied again from the WAL.
		if len(s.d.entries) < n {
			return fmt.Errorf("log holds %d entries, below its checkpoint %d", len(s.d.entries), n)
		}
		s.d.entries = s.d.entries[:n]
		return nil
	}
	s.d.mu.Unlock()
	src := s.fetch(from)
	s.d.mu.Lock()
	if len(src) < n {
		return fmt.Errorf("leader %d holds %d entries, below the snapshot's %d", from, len(src), n)
	}
	s.d.entries = slices.Clone(src[:n])
	return nil
}

func (d *diskList) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.entries)
}

// groupCluster runs one partition group on a testCluster's nodes.
type groupCluster struct {
	c      *testCluster
	cfg    GroupConfig
	disks  map[uint64]*diskList
	groups map[uint64]*Group
}

func newGroupCluster(c *testCluster, cfg GroupConfig) *groupCluster {
	gc := &groupCluster{c: c, cfg: cfg, disks: map[uint64]*diskList{}, groups: map[uint64]*Group{}}
	for id := range c.nodes {
		gc.disks[id] = &diskList{}
		gc.start(id)
	}
	c.t.Cleanup(func() {
		for _, g := range gc.groups {
			g.Close()
		}
	})
	return gc
}

func (gc *groupCluster) start(id uint64) {
	gc.c.t.Helper()
	cfg := gc.cfg
	cfg.Dir = filepath.Join(gc.c.dirs[id], "group")
	cfg.FS = vfs.OS()
	cfg.Campaign = id == 1
	cfg.SM = &groupSM{d: gc.disks[id], fetch: func(from uint64) []string { return gc.disks[from].list() }}
	g, err := gc.c.nodes[id].StartGroup(cfg)
	if err != nil {
		gc.c.t.Fatalf("start group on %d: %v", id, err)
	}
	gc.groups[id] = g
}

// leader waits for a ready leader among the running replicas.
func (gc *groupCluster) leader() uint64 {
	gc.c.t.Helper()
	var lead uint64
	gc.c.eventually("a ready group leader", func() bool {
		for id, g := range gc.groups {
			if s := g.Status(); s.Role == RoleLeader && s.Ready {
				lead = id
				return true
			}
		}
		return false
	})
	return lead
}

// propose proposes data on the current leader, retrying across failovers.
func (gc *groupCluster) propose(data string) {
	gc.c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		lead := gc.leader()
		ctx, cancel := context.WithTimeout(context.Background(), 10*testElection)
		_, err := gc.groups[lead].Propose(ctx, []byte(data))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			gc.c.t.Fatalf("propose %q: %v", data, err)
		}
		time.Sleep(testElection / 4)
	}
}

// converged waits until the running replicas hold the same entries, want
// of them, each once.
func (gc *groupCluster) converged(want int) []string {
	gc.c.t.Helper()
	var ref []string
	gc.c.eventually(fmt.Sprintf("replicas hold the same %d entries", want), func() bool {
		ref = nil
		for id := range gc.groups {
			l := gc.disks[id].list()
			if len(l) != want || (ref != nil && !slices.Equal(ref, l)) {
				return false
			}
			ref = l
		}
		return true
	})
	seen := map[string]bool{}
	for _, e := range ref {
		if seen[e] {
			gc.c.t.Fatalf("entry %q applied twice", e)
		}
		seen[e] = true
	}
	return ref
}

func (gc *groupCluster) stopNode(id uint64) {
	gc.c.t.Helper()
	delete(gc.groups, id)
	gc.c.stop(id) // closes its groups
}

func (gc *groupCluster) restartNode(id uint64) {
	gc.c.t.Helper()
	gc.c.start(id, nil)
	gc.start(id)
}

func TestGroupReplicatesOnlyThroughItsLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	c.leader()
	gc := newGroupCluster(c, GroupConfig{ID: 7, Replicas: []uint64{1, 2, 3}})
	lead := gc.leader()
	for i := range 50 {
		gc.propose(fmt.Sprintf("e%d", i))
	}
	gc.converged(50)
	for id, g := range gc.groups {
		if id == lead {
			continue
		}
		if _, err := g.Propose(context.Background(), []byte("x")); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("follower %d: Propose = %v, want ErrNotLeader", id, err)
		}
		s := g.Status()
		if s.Leader != lead || len(s.InSync) != 0 {
			t.Fatalf("follower %d status %+v", id, s)
		}
	}
	s := gc.groups[lead].Status()
	if !slices.Equal(s.InSync, []uint64{1, 2, 3}) {
		t.Fatalf("leader's in-sync replicas %v, want all three", s.InSync)
	}
}

func TestGroupFailoverKeepsEveryCommittedEntry(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	c.leader()
	gc := newGroupCluster(c, GroupConfig{ID: 9, Replicas: []uint64{1, 2, 3}, CheckpointEntries: 16})
	n := 0
	for round := range 3 {
		for range 40 {
			gc.propose(fmt.Sprintf("e%d", n))
			n++
		}
		old := gc.leader()
		gc.stopNode(old)
		for range 20 {
			gc.propose(fmt.Sprintf("e%d", n))
			n++
		}
		gc.restartNode(old)
		got := gc.converged(n)
		for i, e := range got {
			if e != fmt.Sprintf("e%d", i) {
				t.Fatalf("round %d: entry %d is %q", round, i, e)
			}
		}
	}
}

func TestGroupFollowerFarBehindRestoresFromTheLeader(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	c.leader()
	gc := newGroupCluster(c, GroupConfig{ID: 11, Replicas: []uint64{1, 2, 3}, CheckpointEntries: 10, KeepBytes: 1})
	lead := gc.leader()
	behind := uint64(1)
	if behind == lead {
		behind = 2
	}
	gc.stopNode(behind)
	for i := range 100 {
		gc.propose(fmt.Sprintf("e%d", i))
	}
	gc.restartNode(behind)
	gc.converged(100)
	d := gc.disks[behind]
	d.mu.Lock()
	restores := slices.Clone(d.restores)
	d.mu.Unlock()
	if !slices.ContainsFunc(restores, func(from uint64) bool { return from != 0 }) {
		t.Fatalf("the follower caught up without a snapshot from the leader (restores %v)", restores)
	}
}

// TestIdleGroupQuiescesAndWakes: an idle group's leader goes quiet and its
// followers stop counting towards an election (no ticks, no heartbeats);
// a proposal still commits at once, a quiet leader is never deposed by its
// own silence, and when its node dies the others elect and keep every
// committed entry.
func TestIdleGroupQuiescesAndWakes(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	c.leader()
	gc := newGroupCluster(c, GroupConfig{ID: 11, Replicas: []uint64{1, 2, 3}})
	for i := range 5 {
		gc.propose(fmt.Sprintf("e%d", i))
	}
	gc.converged(5)
	asleep := func() bool {
		now := time.Now()
		lead := gc.leader()
		for id, g := range gc.groups {
			n := c.nodes[id]
			if !n.sleeps(g, now, beaconStaleTicks*n.groupTick) {
				return false
			}
		}
		return gc.groups[lead].quiet.Load()
	}
	c.eventually("every replica of the idle group asleep", asleep)
	lead := gc.leader()
	term := gc.groups[lead].Term()
	// Several election timeouts of silence: nobody campaigns.
	time.Sleep(4 * testElection)
	if s := gc.groups[lead].Status(); s.Role != RoleLeader || s.Term != term {
		t.Fatalf("quiet leader %d: %+v, want leader in term %d", lead, s, term)
	}
	if !asleep() {
		t.Fatal("the idle group woke up with nothing to do")
	}
	// A proposal wakes it and commits well within an election timeout.
	start := time.Now()
	if _, err := gc.groups[lead].Propose(context.Background(), []byte("e5")); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > testElection {
		t.Fatalf("a proposal to a quiet group took %v", took)
	}
	gc.converged(6)
	c.eventually("asleep again", asleep)
	// The quiet leader's node dies: the followers hear no beacon, wake
	// and elect one of themselves.
	gc.stopNode(lead)
	for i := 6; i < 10; i++ {
		gc.propose(fmt.Sprintf("e%d", i))
	}
	if now := gc.leader(); now == lead {
		t.Fatalf("leader %d is the stopped node", now)
	}
	gc.restartNode(lead)
	got := gc.converged(10)
	for i, e := range got {
		if e != fmt.Sprintf("e%d", i) {
			t.Fatalf("entry %d is %q", i, e)
		}
	}
}
