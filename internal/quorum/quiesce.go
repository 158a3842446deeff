package quorum

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/tracker"
)

// Quiescing. An idle partition group costs nothing: its leader stops
// heartbeating and its followers stop counting towards an election. Every
// group ticking on its own cost about 0.15% of a core per partition at
// RF 3 (500 idle partitions: 76% of a core over three nodes), all of it
// timer wake-ups, heartbeats and their answers.
//
// One ticker per node drives every group. Once per tick the node sends each
// peer one beacon frame naming the groups it leads that are quiet, and
// skips the tick for:
//   - a quiet leader whose followers' nodes all sent a beacon lately;
//   - a follower whose leader's node named the group in a recent beacon.
//
// A leader is quiet after quiesceTicks ticks in which nothing but ticks and
// heartbeats happened, with every voter matching its last index, that index
// committed and applied, and no proposal or transfer pending: by then at
// least two heartbeats carried the final commit index to the followers.
// Any other event (a proposal, a message other than a heartbeat, a
// transport report) wakes it. Followers need no state of their own: when
// the leader's beacons stop (its node died, paused or was cut off) or stop
// naming the group, their ticks resume and, if nothing is heard, they
// elect after the usual timeout, beaconStaleTicks later than without
// quiescing. A quiet leader whose follower's node falls silent wakes too,
// so its in-sync replicas and CheckQuorum follow reality. A quiet
// follower's election clock stands still, so it keeps refusing (pre)votes
// from a replica that merely lost touch, as raft's leader lease intends.

const (
	// quiesceTicks idle ticks make a leader quiet: three heartbeat
	// intervals.
	quiesceTicks = 3 * heartbeatTicks
	// beaconStaleTicks: a peer's beacon older than this many ticks no
	// longer counts (its node is presumed gone).
	beaconStaleTicks = 5
	// maxBeaconGroups bounds the group ids one beacon may carry.
	maxBeaconGroups = (maxFrameBytes - 1) / groupIDBytes
)

// beacons is what the node heard from each peer: when, and which groups
// that peer leads quietly (sorted).
type beacons struct {
	mu    sync.Mutex
	peers map[uint64]beacon
}

type beacon struct {
	at    time.Time
	quiet []GroupID
}

func (b *beacons) record(from uint64, quiet []GroupID, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.peers == nil {
		b.peers = map[uint64]beacon{}
	}
	b.peers[from] = beacon{at: now, quiet: quiet}
}

// fresh reports whether node id's last beacon is younger than stale.
func (b *beacons) fresh(id uint64, now time.Time, stale time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	bc, ok := b.peers[id]
	return ok && now.Sub(bc.at) < stale
}

// leadsQuietly reports whether node id's fresh beacon names group g.
func (b *beacons) leadsQuietly(id uint64, g GroupID, now time.Time, stale time.Duration) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	bc, ok := b.peers[id]
	if !ok || now.Sub(bc.at) >= stale {
		return false
	}
	_, found := slices.BinarySearch(bc.quiet, g)
	return found
}

func encodeBeacon(quiet []GroupID) []byte {
	b := make([]byte, 0, len(quiet)*groupIDBytes)
	for _, g := range quiet {
		b = binary.BigEndian.AppendUint64(b, uint64(g))
	}
	return b
}

// decodeBeacon parses a beacon: group ids, 8 bytes each, strictly
// ascending (so a lookup is a binary search and a list cannot repeat).
func decodeBeacon(payload []byte) ([]GroupID, error) {
	if len(payload)%groupIDBytes != 0 {
		return nil, fmt.Errorf("beacon of %d bytes is not a whole number of group ids", len(payload))
	}
	n := len(payload) / groupIDBytes
	if n > maxBeaconGroups {
		return nil, fmt.Errorf("beacon names %d groups, above the %d limit", n, maxBeaconGroups)
	}
	out := make([]GroupID, n)
	for i := range out {
		out[i] = GroupID(binary.BigEndian.Uint64(payload[i*groupIDBytes:]))
		if out[i] == 0 || (i > 0 && out[i] <= out[i-1]) {
			return nil, fmt.Errorf("beacon group ids not ascending or zero at %d", i)
		}
	}
	return out, nil
}

// tickGroups is the node's one ticker for its partition groups: each tick
// it beacons to every peer and ticks every group that must not sleep.
func (n *Node) tickGroups(tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	stale := beaconStaleTicks * tick
	for {
		select {
		case <-n.stopc:
			return
		case now := <-t.C:
			n.groupsMu.Lock()
			groups := make([]*Group, 0, len(n.groups))
			for _, g := range n.groups {
				groups = append(groups, g)
			}
			n.groupsMu.Unlock()
			var quiet []GroupID
			for _, g := range groups {
				if g.leading.Load() && g.quiet.Load() {
					quiet = append(quiet, g.cfg.ID)
				}
			}
			slices.Sort(quiet)
			n.tr.sendBeacon(encodeBeacon(quiet))
			for _, g := range groups {
				if !n.sleeps(g, now, stale) {
					select {
					case g.tickc <- struct{}{}:
					default:
					}
				}
			}
		}
	}
}

// sleeps reports whether g may skip this tick.
func (n *Node) sleeps(g *Group, now time.Time, stale time.Duration) bool {
	self := n.cfg.NodeID
	if g.leading.Load() {
		if !g.quiet.Load() {
			return false
		}
		for _, id := range g.cfg.Replicas {
			if id != self && !n.beacons.fresh(id, now, stale) {
				return false
			}
		}
		return true
	}
	lead := g.leadID.Load()
	return lead != 0 && lead != self && n.beacons.leadsQuietly(lead, g.cfg.ID, now, stale)
}

// idleLeader reports whether the group, as leader, has nothing in flight:
// every voter holds the last index, which is committed and applied, no
// transfer or proposal is pending, and every follower's node beacons.
func (g *Group) idleLeader(now time.Time) bool {
	st := g.rn.BasicStatus()
	if st.RaftState != raft.StateLeader || st.LeadTransferee != 0 {
		return false
	}
	last, err := g.st.LastIndex()
	if err != nil || st.HardState.GetCommit() != last || g.applied != last {
		return false
	}
	g.waitMu.Lock()
	waiting := len(g.waiters)
	g.waitMu.Unlock()
	if waiting != 0 {
		return false
	}
	caught := true
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if pr.Match != last {
			caught = false
		}
	})
	if !caught {
		return false
	}
	stale := beaconStaleTicks * g.node.groupTick
	for _, id := range g.cfg.Replicas {
		if id != g.node.cfg.NodeID && !g.node.beacons.fresh(id, now, stale) {
			return false
		}
	}
	return true
}

// beacon implements groupRouter: a peer's list of the groups it leads
// quietly.
func (n *Node) beacon(from uint64, quiet []GroupID) { n.beacons.record(from, quiet, time.Now()) }
