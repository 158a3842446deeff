package quorum

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
)

// Three nodes on loopback: every proposal, from the leader or a follower,
// is applied on all three in one order; after the leader dies another is
// elected and proposals go on; the old leader restarted from its
// directory catches up.
func TestClusterReplicatesAndFailsOver(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 10000)
	lead := c.leader()

	var wg sync.WaitGroup
	for id := uint64(1); id <= 3; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				c.propose(id, fmt.Sprintf("n%d-%d", id, i))
			}
		}()
	}
	wg.Wait()
	got := c.converged(30)
	if len(got) != 30 {
		t.Fatalf("applied %d entries, want 30: %v", len(got), got)
	}
	for id := uint64(1); id <= 3; id++ { // each node's own order is kept
		var mine []string
		for _, e := range got {
			if e[:3] == fmt.Sprintf("n%d-", id) {
				mine = append(mine, e)
			}
		}
		for i, e := range mine {
			if e != fmt.Sprintf("n%d-%d", id, i) {
				t.Fatalf("node %d's proposals applied out of order: %v", id, mine)
			}
		}
	}

	c.stop(lead)
	newLead := c.leader()
	if newLead == lead {
		t.Fatalf("leader still %d after it was closed", lead)
	}
	for id := range c.nodes {
		c.propose(id, fmt.Sprintf("after-%d", id))
	}
	c.converged(32)
	if s := c.nodes[newLead].Status(); s.LeaderChanges == 0 || s.Term < 2 {
		t.Fatalf("new leader's status does not show the election: %+v", s)
	}

	c.start(lead, nil)
	final := c.converged(32)
	if got := c.sms[lead].list(); !slices.Equal(got, final) {
		t.Fatalf("restarted node applied %v, want %v", got, final)
	}
	s := c.nodes[c.leader()].Status()
	if len(s.Voters) != 3 {
		t.Fatalf("voters %+v, want 3", s.Voters)
	}
	for _, v := range s.Voters {
		if v.Address != c.voters[v.ID] || v.DirectoryID == "" {
			t.Fatalf("voter status %+v: want address %s and a directory id", v, c.voters[v.ID])
		}
	}
}

// A node down while the others compacted their logs catches up through a
// snapshot (its state machine is restored), and compaction removed the
// first WAL segment of the nodes that stayed up.
func TestClusterSnapshotCatchUp(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 10)
	lead := c.leader()
	lagger := uint64(1)
	if lagger == lead {
		lagger = 2
	}
	c.propose(lead, "before")
	c.converged(1)
	c.stop(lagger)
	for i := range 60 {
		c.propose(lead, fmt.Sprintf("e%d", i))
	}
	c.converged(61)
	s := c.nodes[lead].Status()
	if s.SnapshotIndex == 0 {
		t.Fatalf("leader took no snapshot: %+v", s)
	}
	names, err := vfs.OS().ReadDir(c.dirs[lead])
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(names, segmentName(1)) {
		t.Fatalf("first WAL segment not released after snapshot %d: %v", s.SnapshotIndex, names)
	}

	c.start(lagger, nil)
	final := c.converged(61)
	if c.sms[lagger].restoreCount() == 0 {
		t.Fatal("lagging node caught up without a snapshot")
	}
	if got := c.sms[lagger].list(); !slices.Equal(got, final) {
		t.Fatalf("lagging node applied %v, want %v", got, final)
	}
	// And it keeps following.
	c.propose(lagger, "after")
	c.converged(62)
}

// A node restarted on a wiped directory under the same node id is refused
// by the others (it could vote twice); after RemoveVoter and AddVoter it
// rejoins and catches up.
func TestClusterWipedDiskRejoinsAfterReAdd(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 10000)
	lead := c.leader()
	wiped := uint64(3)
	if wiped == lead {
		wiped = 2
	}
	for i := range 5 {
		c.propose(lead, fmt.Sprintf("e%d", i))
	}
	c.converged(5)
	oldDir := c.nodes[wiped].Status().DirectoryID
	c.stop(wiped)
	c.dirs[wiped] = filepath.Join(t.TempDir(), "fresh")
	c.start(wiped, nil)
	if c.nodes[wiped].Status().DirectoryID == oldDir {
		t.Fatal("a fresh directory got the old directory id")
	}
	c.eventually("the leader refusing the wiped node", func() bool {
		return c.logs[lead].contains("refused raft") && c.logs[lead].contains(fmt.Sprintf("peer=%d", wiped))
	})
	c.propose(lead, "while-refused")
	others := c.nodes[lead].Status().Applied
	if got := c.nodes[wiped].Status().Applied; got >= others {
		t.Fatalf("refused node applied %d entries, as many as the quorum's %d", got, others)
	}
	if len(c.sms[wiped].list()) != 0 {
		t.Fatalf("refused node applied %v", c.sms[wiped].list())
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.nodes[lead].RemoveVoter(ctx, wiped); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[lead].AddVoter(ctx, wiped, c.voters[wiped]); err != nil {
		t.Fatal(err)
	}
	final := c.converged(6)
	if got := c.sms[wiped].list(); !slices.Equal(got, final) {
		t.Fatalf("re-added node applied %v, want %v", got, final)
	}
	newDir := c.nodes[wiped].Status().DirectoryID
	c.eventually("every node remembering the new directory id", func() bool {
		for id, n := range c.nodes {
			if id == wiped {
				continue
			}
			for _, v := range n.Status().Voters {
				if v.ID == wiped && v.DirectoryID != newDir {
					return false
				}
			}
		}
		return true
	})
	c.propose(wiped, "rejoined")
	c.converged(7)
}

// Propose refuses oversized data before it reaches raft, and a closed node
// refuses everything.
func TestProposeBounds(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 1, 10000)
	c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.nodes[1].Propose(ctx, make([]byte, MaxProposalBytes+1)); err == nil {
		t.Fatal("oversized proposal accepted")
	}
	v, err := c.nodes[1].Propose(ctx, []byte("x"))
	if err != nil || v != 1 {
		t.Fatalf("Propose = %v, %v; want the Apply result 1", v, err)
	}
	n := c.nodes[1]
	c.stop(1)
	if _, err := n.Propose(ctx, []byte("y")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Propose on a closed node: %v, want ErrClosed", err)
	}
	if _, err := n.WaitLeader(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitLeader on a closed node: %v, want ErrClosed", err)
	}
}

func TestWaitLeaderHonoursContext(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 10000)
	c.leader()
	c.stop(1)
	c.stop(2)
	// Node 3 alone loses its leader (CheckQuorum) and cannot elect one.
	c.eventually("node 3 without a leader", func() bool { return c.nodes[3].Status().Leader == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 2*testElection)
	defer cancel()
	if _, err := c.nodes[3].WaitLeader(ctx); err == nil {
		t.Fatal("WaitLeader found a leader in a quorum of one out of three")
	}
	if _, err := c.nodes[3].Propose(ctx, []byte("x")); err == nil {
		t.Fatal("proposal succeeded without a quorum")
	}
}
