package quorum

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/vfs"
)

// testElection is the election timeout of the cluster tests: long enough
// for -race on two shared cores, short enough for failovers to be quick.
const testElection = 400 * time.Millisecond

// waitFor is the generous bound on anything a test waits for.
const waitFor = 30 * time.Second

// listSM is a StateMachine that records every applied entry.
type listSM struct {
	mu       sync.Mutex
	entries  []string
	restores int
}

func (s *listSM) Apply(index uint64, data []byte) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, string(data))
	return len(s.entries)
}

func (s *listSM) Snapshot() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.Marshal(s.entries)
}

func (s *listSM) Restore(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restores++
	s.entries = nil
	return json.Unmarshal(data, &s.entries)
}

func (s *listSM) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.entries)
}

func (s *listSM) restoreCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restores
}

// logBuf collects log lines for assertions.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

// testCluster is a set of nodes on loopback with real directories.
type testCluster struct {
	t               *testing.T
	voters          map[uint64]string
	dirs            map[uint64]string
	nodes           map[uint64]*Node
	sms             map[uint64]*listSM
	logs            map[uint64]*logBuf
	snapshotEntries uint64
	// learners are the nodes started with Config.Learner, by id, with
	// their addresses (they are not in voters).
	learners map[uint64]string
}

func newTestCluster(t *testing.T, size int, snapshotEntries uint64) *testCluster {
	return newTestClusterWithout(t, size, snapshotEntries, 0)
}

// newTestClusterWithout configures size voters but does not start node
// absent (0: start all); its address is a listener that never answers.
func newTestClusterWithout(t *testing.T, size int, snapshotEntries uint64, absent uint64) *testCluster {
	t.Helper()
	c := &testCluster{
		t: t, voters: map[uint64]string{}, dirs: map[uint64]string{}, nodes: map[uint64]*Node{},
		sms: map[uint64]*listSM{}, logs: map[uint64]*logBuf{}, snapshotEntries: snapshotEntries,
		learners: map[uint64]string{},
	}
	lns := map[uint64]net.Listener{}
	for id := uint64(1); id <= uint64(size); id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[id] = ln
		c.voters[id] = ln.Addr().String()
		c.dirs[id] = t.TempDir()
	}
	for id, ln := range lns {
		if id == absent {
			t.Cleanup(func() { ln.Close() })
			continue
		}
		c.start(id, ln)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.Close()
		}
	})
	return c
}

// addLearnerNode starts node id as a learner on a fresh directory, with
// empty storage: nobody adds it, it asks to be admitted.
func (c *testCluster) addLearnerNode(id uint64) {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	c.learners[id] = ln.Addr().String()
	c.dirs[id] = c.t.TempDir()
	c.start(id, ln)
}

func (c *testCluster) addr(id uint64) string {
	if a, ok := c.learners[id]; ok {
		return a
	}
	return c.voters[id]
}

// start starts node id on its directory; ln may be nil to listen again on
// the node's address.
func (c *testCluster) start(id uint64, ln net.Listener) {
	c.t.Helper()
	var err error
	if ln == nil {
		deadline := time.Now().Add(waitFor)
		for {
			ln, err = net.Listen("tcp", c.addr(id))
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
	sm := &listSM{}
	lb := &logBuf{}
	voters := c.voters
	_, learner := c.learners[id]
	if learner {
		voters = maps.Clone(voters)
		delete(voters, id)
	}
	n, err := Start(Config{
		NodeID: id, Voters: voters, Learner: learner, FS: vfs.OS(), Dir: c.dirs[id], Listener: ln,
		ClusterID: "test-cluster", ElectionTimeout: testElection, SnapshotEntries: c.snapshotEntries,
		Logger: slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelInfo})),
		SM:     sm,
	})
	if err != nil {
		ln.Close()
		c.t.Fatalf("start node %d: %v", id, err)
	}
	c.nodes[id], c.sms[id], c.logs[id] = n, sm, lb
}

func (c *testCluster) stop(id uint64) {
	c.t.Helper()
	if err := c.nodes[id].Close(); err != nil {
		c.t.Fatalf("close node %d: %v", id, err)
	}
	delete(c.nodes, id)
}

// leader waits until every running node agrees on a leader and returns it.
func (c *testCluster) leader() uint64 {
	c.t.Helper()
	var lead uint64
	c.eventually("a leader all running nodes agree on", func() bool {
		lead = 0
		for id, n := range c.nodes {
			if _, ok := c.learners[id]; ok {
				continue
			}
			s := n.Status()
			if s.Leader == 0 || (lead != 0 && s.Leader != lead) {
				return false
			}
			lead = s.Leader
		}
		_, running := c.nodes[lead]
		return running && c.nodes[lead].Status().Role == RoleLeader
	})
	return lead
}

// propose proposes data on node id, retrying while the quorum has no
// leader (a failover in progress).
func (c *testCluster) propose(id uint64, data string) {
	c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*testElection)
		_, err := c.nodes[id].Propose(ctx, []byte(data))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("propose %q on node %d: %v", data, id, err)
		}
		time.Sleep(testElection / 4)
	}
}

// converged waits until every running node applied the same entries, and
// at least want of them.
func (c *testCluster) converged(want int) []string {
	c.t.Helper()
	return c.convergedOn(want, slices.Collect(maps.Keys(c.nodes))...)
}

// convergedOn is converged for the running nodes ids only.
func (c *testCluster) convergedOn(want int, ids ...uint64) []string {
	c.t.Helper()
	var ref []string
	c.eventually(fmt.Sprintf("nodes %v applied the same %d+ entries", ids, want), func() bool {
		ref = nil
		for _, id := range ids {
			l := c.sms[id].list()
			if len(l) < want {
				return false
			}
			if ref == nil {
				ref = l
			} else if !slices.Equal(ref, l) {
				return false
			}
		}
		return true
	})
	return ref
}

func (c *testCluster) eventually(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			for id, n := range c.nodes {
				c.t.Logf("node %d: %+v", id, n.Status())
			}
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
