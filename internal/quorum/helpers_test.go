package quorum

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
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
}

func newTestCluster(t *testing.T, size int, snapshotEntries uint64) *testCluster {
	t.Helper()
	c := &testCluster{
		t: t, voters: map[uint64]string{}, dirs: map[uint64]string{}, nodes: map[uint64]*Node{},
		sms: map[uint64]*listSM{}, logs: map[uint64]*logBuf{}, snapshotEntries: snapshotEntries,
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
		c.start(id, ln)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.Close()
		}
	})
	return c
}

// start starts node id on its directory; ln may be nil to listen again on
// the node's address.
func (c *testCluster) start(id uint64, ln net.Listener) {
	c.t.Helper()
	var err error
	if ln == nil {
		deadline := time.Now().Add(waitFor)
		for {
			ln, err = net.Listen("tcp", c.voters[id])
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
	n, err := Start(Config{
		NodeID: id, Voters: c.voters, FS: vfs.OS(), Dir: c.dirs[id], Listener: ln,
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
		for _, n := range c.nodes {
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
	var ref []string
	c.eventually(fmt.Sprintf("all nodes applied the same %d+ entries", want), func() bool {
		ref = nil
		for id := range c.nodes {
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
