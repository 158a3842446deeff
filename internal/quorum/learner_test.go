package quorum

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/vfs"
)

// learnerAdmitted returns the leader's view of learner id, waiting until the
// leader lists it with directory dir (any directory if dir is empty).
func (c *testCluster) learnerAdmitted(lead, id uint64, dir string) VoterStatus {
	c.t.Helper()
	var got VoterStatus
	c.eventually(fmt.Sprintf("node %d admitted as a learner with directory %q", id, dir), func() bool {
		for _, l := range c.nodes[lead].Status().Learners {
			if l.ID == id && (dir == "" || l.DirectoryID == dir) {
				got = l
				return true
			}
		}
		return false
	})
	return got
}

// A learner started with empty storage is admitted without anyone calling
// AddLearner, catches up, applies every proposal (its own included) in the
// voters' order, survives a restart from its directory, and does not make
// a quorum: with two of three voters down nothing commits.
func TestLearnerAdmittedFollowsAndRestarts(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 10000)
	lead := c.leader()
	for i := range 5 {
		c.propose(lead, fmt.Sprintf("before-%d", i))
	}
	c.converged(5)

	c.addLearnerNode(4)
	l := c.learnerAdmitted(lead, 4, c.nodes[4].Status().DirectoryID)
	if l.Address != c.learners[4] {
		t.Fatalf("learner status %+v, want address %s", l, c.learners[4])
	}
	c.eventually("node 4 seeing itself as a learner", func() bool { return c.nodes[4].Status().Role == RoleLearner })
	c.converged(5)
	s := c.nodes[lead].Status()
	if len(s.Voters) != 3 || slices.ContainsFunc(s.Voters, func(v VoterStatus) bool { return v.ID == 4 }) {
		t.Fatalf("voters %+v: want 1-3 only", s.Voters)
	}

	var wg sync.WaitGroup
	for _, id := range []uint64{1, 2, 3, 4} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				c.propose(id, fmt.Sprintf("n%d-%d", id, i))
			}
		}()
	}
	wg.Wait()
	got := c.converged(5 + 32)
	var mine []string
	for _, e := range got {
		if strings.HasPrefix(e, "n4-") {
			mine = append(mine, e)
		}
	}
	for i, e := range mine {
		if e != fmt.Sprintf("n4-%d", i) {
			t.Fatalf("learner's proposals applied out of order: %v", mine)
		}
	}
	if len(mine) != 8 {
		t.Fatalf("learner's proposals applied: %v, want 8", mine)
	}
	c.eventually("the leader's progress of the learner", func() bool {
		for _, l := range c.nodes[lead].Status().Learners {
			if l.ID == 4 && l.Match > 0 && l.Lag == 0 {
				return true
			}
		}
		return false
	})

	c.stop(4)
	c.propose(lead, "while-learner-down")
	c.start(4, nil)
	final := c.converged(38)
	if got := c.sms[4].list(); !slices.Equal(got, final) {
		t.Fatalf("restarted learner applied %v, want %v", got, final)
	}
	if r := c.nodes[4].Status().Role; r != RoleLearner {
		t.Fatalf("restarted learner's role %q", r)
	}

	// Two voters down: the learner is up, yet nothing commits, and the
	// learner never campaigns.
	survivor := lead
	for id := uint64(1); id <= 3; id++ {
		if id != survivor {
			c.stop(id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*testElection)
	defer cancel()
	if _, err := c.nodes[survivor].Propose(ctx, []byte("no-quorum")); err == nil {
		t.Fatal("a proposal committed with one voter of three and a learner")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*testElection)
	defer cancel2()
	if _, err := c.nodes[4].Propose(ctx2, []byte("no-quorum-via-learner")); err == nil {
		t.Fatal("a proposal through the learner committed with one voter of three")
	}
	for range 20 {
		if r := c.nodes[4].Status().Role; r != RoleLearner {
			t.Fatalf("learner in role %q", r)
		}
		time.Sleep(testElection / 10)
	}
	for _, id := range []uint64{survivor, 4} {
		for _, e := range c.sms[id].list() {
			if strings.HasPrefix(e, "no-quorum") {
				t.Fatalf("node %d applied %q without a quorum of voters", id, e)
			}
		}
	}
}

// One voter and one learner: the learner down does not stop commits, as
// it would if it were counted (one of two).
func TestLearnerNotNeededForQuorum(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 1, 10000)
	c.leader()
	c.addLearnerNode(2)
	c.learnerAdmitted(1, 2, "")
	c.propose(1, "a")
	c.converged(1)
	c.stop(2)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := c.nodes[1].Propose(ctx, []byte("b")); err != nil {
		t.Fatalf("proposal with the learner down: %v", err)
	}
}

// A learner restarted on a wiped directory is refused (its directory id
// differs from the admitted one) until it is removed; then it is admitted
// again on its own and catches up.
func TestLearnerWipedRefusedUntilRemoved(t *testing.T) {
	t.Parallel()
	c := newTestCluster(t, 3, 10000)
	lead := c.leader()
	c.addLearnerNode(4)
	oldDir := c.nodes[4].Status().DirectoryID
	c.learnerAdmitted(lead, 4, oldDir)
	for i := range 3 {
		c.propose(lead, fmt.Sprintf("e%d", i))
	}
	c.converged(3)

	c.stop(4)
	c.dirs[4] = filepath.Join(t.TempDir(), "fresh")
	c.start(4, nil)
	newDir := c.nodes[4].Status().DirectoryID
	if newDir == oldDir {
		t.Fatal("a fresh directory got the old directory id")
	}
	c.eventually("the leader refusing the wiped learner", func() bool {
		return c.logs[lead].contains("refused raft connection") && c.logs[lead].contains("peer=4")
	})
	c.eventually("the wiped learner told it is refused", func() bool {
		return c.logs[4].contains("learner admission request failed")
	})
	c.propose(lead, "while-refused")
	c.convergedOn(4, 1, 2, 3)
	if got := c.sms[4].list(); len(got) != 0 {
		t.Fatalf("refused learner applied %v", got)
	}
	if l := c.learnerAdmitted(lead, 4, ""); l.DirectoryID != oldDir {
		t.Fatalf("leader lists the learner with directory %s, want the admitted %s", l.DirectoryID, oldDir)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.nodes[lead].RemoveMember(ctx, 4); err != nil {
		t.Fatal(err)
	}
	c.learnerAdmitted(lead, 4, newDir)
	final := c.converged(4)
	if got := c.sms[4].list(); !slices.Equal(got, final) {
		t.Fatalf("re-admitted learner applied %v, want %v", got, final)
	}
}

// A node asking to be a learner under a voter's id is refused, and stays a
// voter in the membership.
func TestLearnerRequestFromVoterIDRefused(t *testing.T) {
	t.Parallel()
	// Voter 4 is configured but never started: its id is free to claim
	// and its directory id unknown, so only the voter rule can refuse.
	c := newTestClusterWithout(t, 4, 10000, 4)
	lead := c.leader()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.learners[4] = ln.Addr().String()
	c.dirs[4] = t.TempDir()
	c.start(4, ln)
	c.eventually("the leader refusing a voter's id as a learner", func() bool {
		return c.logs[lead].contains("refused learner admission") && c.logs[lead].contains("is a voter")
	})
	c.eventually("the node told it is refused", func() bool { return c.logs[4].contains("is a voter") })
	s := c.nodes[lead].Status()
	if len(s.Learners) != 0 || !slices.ContainsFunc(s.Voters, func(v VoterStatus) bool { return v.ID == 4 }) {
		t.Fatalf("membership after the refused request: voters %+v, learners %+v", s.Voters, s.Learners)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := c.nodes[lead].AddLearner(ctx, 4, c.learners[4]); err == nil {
		t.Fatal("AddLearner demoted a voter")
	}
}

// A learner's configuration: not among the voters, and an address peers
// can dial.
func TestLearnerConfig(t *testing.T) {
	t.Parallel()
	wild, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer wild.Close()
	base := Config{NodeID: 4, FS: vfs.OS(), Dir: t.TempDir(), Listener: wild, ClusterID: "c", SM: &listSM{}, Learner: true}
	cases := []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"wildcard listener, no address", func(*Config) {}, false},
		{"explicit address", func(c *Config) { c.Address = "node4.example:9093" }, true},
		{"learner among the voters", func(c *Config) {
			c.Address = "node4.example:9093"
			c.Voters = map[uint64]string{4: "node4.example:9093"}
		}, false},
		{"address without port", func(c *Config) { c.Address = "node4.example" }, false},
	}
	for _, tc := range cases {
		cfg := base
		tc.edit(&cfg)
		if err := cfg.validate(); (err == nil) != tc.ok {
			t.Errorf("%s: validate = %v", tc.name, err)
		}
	}
}

// The learner handshake round-trips, and its address is validated.
func TestHelloLearnerAddress(t *testing.T) {
	t.Parallel()
	h := hello{ClusterID: "c", NodeID: 7, DirectoryID: DirectoryID{9}, LearnerAddr: "10.0.0.7:9093"}
	got, err := decodeHello(h.encode())
	if err != nil || got != h {
		t.Fatalf("decode = %+v, %v; want %+v", got, err, h)
	}
	if v := h.encode()[4]; v != helloVersionLearner {
		t.Fatalf("learner hello version %d", v)
	}
	plain := h
	plain.LearnerAddr = ""
	if v := plain.encode()[4]; v != helloVersion {
		t.Fatalf("plain hello version %d, want 1 for older nodes", v)
	}
	for _, addr := range []string{"nohost", ":9093", "0.0.0.0:9093", "[::]:1", "h:0", "h:99999", "h:x"} {
		bad := h
		bad.LearnerAddr = addr
		if _, err := decodeHello(bad.encode()); err == nil {
			t.Errorf("learner address %q accepted", addr)
		}
	}
	b := h.encode()
	if _, err := decodeHello(b[:len(b)-1]); err == nil {
		t.Error("truncated learner address accepted")
	}
	if _, err := decodeHello(append(b, 'x')); err == nil {
		t.Error("trailing byte accepted")
	}
}
