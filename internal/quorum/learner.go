package quorum

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
)

// Learners follow the log without voting (Kafka's broker-only nodes). A
// learner with empty storage cannot propose its own admission, as it is not
// a member; it asks instead, in the handshake of short connections to the
// voters it was configured with, until its membership is no longer empty.
// The leader hearing such a request proposes the learner's addition, with
// the address the learner gave and the directory id it presented, exactly
// as AddLearner would.
const (
	// admissionBackoffMin and admissionBackoffMax bound the learner's wait
	// between rounds of requests to every voter.
	admissionBackoffMin = 100 * time.Millisecond
	admissionBackoffMax = 5 * time.Second
	// admissionRetryEvery is how long the leader waits before it proposes
	// the same node's admission again (raft drops a membership change
	// proposed while another is pending).
	admissionRetryEvery = 5 * time.Second
	// admissionTimeout bounds one admission: probing the learner and
	// applying its addition.
	admissionTimeout = 10 * time.Second
	// maxConcurrentAdmissions bounds the admissions a leader runs at once.
	maxConcurrentAdmissions = 4
)

// admissions is the leader's record of learner admissions: at most one at
// a time per node id, each id retried at most every admissionRetryEvery.
type admissions struct {
	mu       sync.Mutex
	inflight map[uint64]bool
	tried    map[uint64]time.Time
	closing  bool
}

// askAdmission runs on a learner started with empty storage: it asks every
// configured voter, round after round with backoff, until the node is a
// member (a leader heard it and the addition reached this node).
func (n *Node) askAdmission() {
	defer n.bgWG.Done()
	ids := slices.Sorted(maps.Keys(n.cfg.Voters))
	backoff := admissionBackoffMin
	for !n.member.Load() {
		for _, id := range ids {
			if n.member.Load() || n.bgCtx.Err() != nil {
				return
			}
			if err := n.tr.requestAdmission(n.bgCtx, n.cfg.Voters[id], n.cfg.Address); err != nil && n.bgCtx.Err() == nil {
				n.tr.logRefusal(id, "learner admission request failed", err)
			}
		}
		select {
		case <-n.bgCtx.Done():
			return
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff = min(2*backoff, admissionBackoffMax)
	}
}

// handleAdmission is the transport's callback for a handshake asking to
// admit its speaker as a learner; the handshake already passed the identity
// rules (cluster id, remembered directory id). Every member refuses a
// voter's id; only the leader acts, proposing the addition in the
// background; the others ignore the request, which the learner repeats.
func (n *Node) handleAdmission(h hello) error {
	s := n.Status()
	isMember := func(vs []VoterStatus) bool {
		return slices.ContainsFunc(vs, func(v VoterStatus) bool { return v.ID == h.NodeID })
	}
	if isMember(s.Voters) {
		return fmt.Errorf("node %d is a voter, not admitted as a learner", h.NodeID)
	}
	if s.Role != RoleLeader || isMember(s.Learners) {
		return nil
	}
	if len(s.Learners) >= maxLearners {
		return fmt.Errorf("%d learners already, the limit for admission on request", len(s.Learners))
	}
	a := &n.admit
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if a.closing || a.inflight[h.NodeID] || now.Sub(a.tried[h.NodeID]) < admissionRetryEvery ||
		len(a.inflight) >= maxConcurrentAdmissions {
		return nil
	}
	if len(a.tried) >= maxRefusalKeys {
		// Node ids come from the network: forget those past their wait.
		for id, at := range a.tried {
			if now.Sub(at) >= admissionRetryEvery {
				delete(a.tried, id)
			}
		}
		if len(a.tried) >= maxRefusalKeys {
			return nil
		}
	}
	a.inflight[h.NodeID] = true
	a.tried[h.NodeID] = now
	n.bgWG.Add(1)
	go func() {
		defer n.bgWG.Done()
		ctx, cancel := context.WithTimeout(n.bgCtx, admissionTimeout)
		defer cancel()
		err := n.addLearner(ctx, h.NodeID, h.LearnerAddr, &h.DirectoryID)
		if err != nil {
			n.log.Warn("learner admission failed", "peer", h.NodeID, "addr", h.LearnerAddr, "err", err)
		} else {
			n.log.Info("admitted learner", "peer", h.NodeID, "addr", h.LearnerAddr, "directory", h.DirectoryID.String())
		}
		a.mu.Lock()
		delete(a.inflight, h.NodeID)
		a.mu.Unlock()
	}()
	return nil
}

// AddLearner adds node id, listening on addr, as a learner: it receives
// and applies the log but never votes. It returns once the change is
// applied here. Like AddVoter it first dials addr to learn the node's
// directory id, which the change records. A current voter is refused
// (this package never demotes); a learner is never promoted by this
// package, AddVoter on it does that explicitly.
func (n *Node) AddLearner(ctx context.Context, id uint64, addr string) error {
	return n.addLearner(ctx, id, addr, nil)
}

// addLearner is AddLearner; want, if set, is the directory id the node
// must present (the one its admission request was made from).
func (n *Node) addLearner(ctx context.Context, id uint64, addr string, want *DirectoryID) error {
	if id == 0 || addr == "" {
		return errors.New("quorum: AddLearner needs a node id and an address")
	}
	if slices.ContainsFunc(n.Status().Voters, func(v VoterStatus) bool { return v.ID == id }) {
		return fmt.Errorf("quorum: node %d is a voter; remove it before adding it as a learner", id)
	}
	dir, err := n.tr.probe(ctx, id, addr)
	if err != nil {
		return fmt.Errorf("quorum: probing node %d at %s: %w", id, addr, err)
	}
	if want != nil && dir != *want {
		return fmt.Errorf("quorum: node %d at %s presents directory %s, its request came from %s", id, addr, dir, *want)
	}
	return n.changeConf(ctx, pb.ConfChangeAddLearnerNode, id, confContext{Addr: addr, Dir: dir.String()})
}
