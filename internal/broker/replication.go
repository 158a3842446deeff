package broker

// Replicated partitions (docs/DESIGN.md, "Replication").
//
// A partition with more than one replica is a raft group of its replicas
// (internal/replica over quorum.Group, on the metadata quorum's
// connections). The group's leader serves clients; the other replicas
// answer NOT_LEADER_OR_FOLLOWER and apply the committed entries to their
// logs. A produce is proposed to the group and answered once applied here
// (committed by a majority, each having fsynced it in its raft log). The
// leader publishes its leadership (term as leader epoch, in-sync
// replicas) in the catalog, where Metadata on every node reads it.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/quorum"
	"github.com/exactly/exactly/internal/replica"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// raftDirName is the group's storage inside a replicated partition's
// directory (removed with it).
const raftDirName = "raft"

// groupIDOf names partition p of topic id's raft group on every node.
func groupIDOf(id cluster.TopicID, p int32) quorum.GroupID {
	h := sha256.New()
	h.Write(id[:])
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(p)))
	g := binary.BigEndian.Uint64(h.Sum(nil))
	if g == 0 {
		g = 1 // 0 is the metadata quorum's
	}
	return quorum.GroupID(g)
}

// replicated reports whether partition p of t has more than one replica.
func replicated(t *cluster.Topic, p int32) bool {
	return p >= 0 && int(p) < len(t.Replicas) && len(t.Replicas[p]) > 1
}

// replicaOf is p's replica, nil for an unreplicated partition.
func (b *Broker) replicaOf(p *partition.Partition) *replica.Replica {
	if p == nil || !b.clustered() {
		return nil
	}
	b.repMu.RLock()
	defer b.repMu.RUnlock()
	return b.replicas[p]
}

// openReplica starts the replica of an opened partition of a replicated
// topic; on failure the caller closes the partition.
func (b *Broker) openReplica(t *cluster.Topic, index int32, p *partition.Partition) error {
	r, err := replica.Open(replica.Config{
		Partition: p, Node: b.node.quorum, ID: groupIDOf(t.ID, index), Replicas: t.Replicas[index],
		FS: b.cfg.FS, Dir: filepath.Join(b.partitionDir(t.Name, index), raftDirName),
		Fetch: func(ctx context.Context, from int32, offset int64, maxBytes int) ([]byte, error) {
			return b.fetchFromReplica(ctx, from, t.ID, index, offset, maxBytes)
		},
		LagMax:          time.Duration(b.brokerInt("replica.lag.time.max.ms")) * time.Millisecond,
		ElectionTimeout: b.cfg.Cluster.ElectionTimeout,
		Logger:          b.log,
	})
	if err != nil {
		return err
	}
	b.repMu.Lock()
	b.replicas[p] = r
	b.repMu.Unlock()
	return nil
}

// closeReplica stops p's replica, if it has one, before p closes.
func (b *Broker) closeReplica(p *partition.Partition) error {
	b.repMu.Lock()
	r := b.replicas[p]
	delete(b.replicas, p)
	b.repMu.Unlock()
	if r == nil {
		return nil
	}
	return r.Close()
}

// leaderEpochOf is the leader epoch this node serves p at: its group's
// term, 0 for an unreplicated partition.
func (b *Broker) leaderEpochOf(p *partition.Partition) int32 {
	if r := b.replicaOf(p); r != nil {
		return r.LeaderEpoch()
	}
	return 0
}

// epochError checks a request's current leader epoch (KIP-320) against
// the one p is served at: older is FENCED_LEADER_EPOCH, newer (this node
// has not heard of it yet) UNKNOWN_LEADER_EPOCH; -1 skips the check.
func (b *Broker) epochError(p *partition.Partition, current int32) int16 {
	if current < 0 {
		return 0
	}
	switch epoch := b.leaderEpochOf(p); {
	case current < epoch:
		return kerr.FencedLeaderEpoch.Code
	case current > epoch:
		return kerr.UnknownLeaderEpoch.Code
	}
	return 0
}

// hintEpoch is the leader epoch a NOT_LEADER_OR_FOLLOWER hint names
// (KIP-951): the published one of a replicated partition, else 0.
func (b *Broker) hintEpoch(t *cluster.Topic, p int32) int32 {
	if t == nil || !replicated(t, p) {
		return 0
	}
	_, epoch, _ := b.publishedLeader(t, p)
	return max(epoch, 0)
}

// publishedLeader is the leader and epoch of a replicated partition as
// published in the catalog: -1 while none is, or while the reporting
// broker is fenced.
func (b *Broker) publishedLeader(t *cluster.Topic, p int32) (int32, int32, []int32) {
	pl, ok := t.Leader(p)
	if !ok {
		return -1, -1, nil
	}
	if br, ok := b.catalog.Broker(pl.Leader); !ok || br.Fenced {
		return -1, pl.Epoch, nil
	}
	return pl.Leader, pl.Epoch, pl.ISR
}

// reportLeadershipLoop publishes this node's leaderships: for every
// replica it leads and whose state is the group's (ready), the term and
// in-sync replicas, whenever they differ from what the catalog says.
func (b *Broker) reportLeadershipLoop() {
	defer b.bg.Done()
	t := time.NewTicker(leadershipReportInterval)
	defer t.Stop()
	lastRebalance := time.Now()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		rebalanceOn, rebalance := b.brokerBool("auto.leader.rebalance.enable"), false
		if rebalanceOn {
			every := time.Duration(b.brokerInt("leader.imbalance.check.interval.seconds")) * time.Second
			if rebalance = time.Since(lastRebalance) >= every; rebalance {
				lastRebalance = time.Now()
			}
		}
		var reports []cluster.LeaderReport
		b.repMu.RLock()
		for p, r := range b.replicas {
			if !r.Leading() {
				continue
			}
			st := r.Status()
			if !st.Ready || st.Role != quorum.RoleLeader {
				continue
			}
			topic, ok := b.catalog.Topic(p.Topic)
			if !ok || partition.TopicID(topic.ID) != p.TopicID() {
				continue
			}
			if to, follows := b.followCoordinatorLeader(p.Topic, st.InSync); follows {
				// The coordinators' partitions gather on one node.
				if to != 0 {
					r.TransferLeadership(to)
				}
			} else if pref := topic.Replicas[p.Index][0]; rebalanceOn && pref != b.cfg.NodeID && slices.Contains(st.InSync, uint64(pref)) &&
				(rebalance || p.LogEndOffset() == 0) {
				// The preferred replica leads when it can: new
				// partitions spread as placed, and leadership comes
				// back after a restart.
				r.TransferLeadership(pref)
			}
			isr := make([]int32, len(st.InSync))
			for i, id := range st.InSync {
				isr[i] = int32(id)
			}
			cur, _ := topic.Leader(p.Index)
			if cur.Leader == b.cfg.NodeID && cur.Epoch == int32(st.Term) && slices.Equal(cur.ISR, isr) {
				continue
			}
			reports = append(reports, cluster.LeaderReport{TopicID: topic.ID, Partition: p.Index,
				PartitionLeader: cluster.PartitionLeader{Leader: b.cfg.NodeID, Epoch: int32(st.Term), ISR: isr}})
		}
		b.repMu.RUnlock()
		if len(reports) == 0 {
			continue
		}
		if err := b.catalog.ReportLeaders(reports); err != nil && b.ctx.Err() == nil {
			b.log.Warn("publishing partition leaderships failed; retrying", "partitions", len(reports), "err", err)
		}
	}
}

// leadershipReportInterval is how often a node compares its leaderships
// with the published ones: at most this stale after an election.
const leadershipReportInterval = 100 * time.Millisecond

// fetchFromReplica copies committed batches of a partition from node
// from's log (a follower catching up from a leader's snapshot): a replica
// fetch (Fetch with this node's id as replica id), which any replica
// holding the partition serves up to its HW.
func (b *Broker) fetchFromReplica(ctx context.Context, from int32, topicID cluster.TopicID, index int32, offset int64, maxBytes int) ([]byte, error) {
	peer, err := b.peer(from)
	if err != nil {
		return nil, err
	}
	req := kmsg.NewPtrFetchRequest()
	req.Version = 13
	req.ReplicaID = b.cfg.NodeID       // up to v14
	req.ReplicaState.ID = b.cfg.NodeID // v15 on
	req.MaxWaitMillis = 0
	req.MinBytes = 1
	req.MaxBytes = int32(maxBytes)
	rt := kmsg.NewFetchRequestTopic()
	rt.TopicID = topicID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch = index, offset, int32(maxBytes), -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, peer)
	if err != nil {
		return nil, err
	}
	for _, st := range resp.Topics {
		for _, sp := range st.Partitions {
			if sp.Partition != index {
				continue
			}
			if err := kerr.ErrorForCode(sp.ErrorCode); err != nil {
				return nil, fmt.Errorf("node %d: %w", from, err)
			}
			return sp.RecordBatches, nil
		}
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, fmt.Errorf("node %d: %w", from, err)
	}
	return nil, fmt.Errorf("node %d answered without the partition", from)
}

// replicaFetch reports whether a Fetch is another node's replica fetch,
// served from this node's copy whether or not it leads.
func (b *Broker) replicaFetch(limits fetchLimits, req *kmsg.FetchRequest) bool {
	return limits.req != nil && b.fromPeer(limits.req) && (req.ReplicaID >= 0 || req.ReplicaState.ID >= 0)
}

// notLeader maps a replica's refusals to Kafka's errors.
func notLeader(err error) error {
	switch {
	case errors.Is(err, quorum.ErrNotLeader):
		return &kerrError{kerr.NotLeaderForPartition, "leadership of the partition moved"}
	case errors.Is(err, context.DeadlineExceeded):
		return &kerrError{kerr.RequestTimedOut, "the partition's replicas did not commit in time"}
	case errors.Is(err, quorum.ErrClosed):
		return &kerrError{kerr.NotLeaderForPartition, "the partition's replica is closing"}
	}
	return err
}

// transferLeaderships hands every leadership of this node to an in-sync
// follower before it stops (a controlled shutdown: the next leader is
// elected at once instead of after an election timeout), waiting up to
// wait for them to move.
func (b *Broker) transferLeaderships(wait time.Duration) {
	b.repMu.RLock()
	var led []*replica.Replica
	for _, r := range b.replicas {
		if !r.Leading() {
			continue
		}
		st := r.Status()
		for _, id := range st.InSync {
			if int32(id) != b.cfg.NodeID {
				r.TransferLeadership(int32(id))
				led = append(led, r)
				break
			}
		}
	}
	b.repMu.RUnlock()
	deadline := time.Now().Add(wait)
	for _, r := range led {
		for r.Leading() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// writeMarker writes a transaction marker to p, through its group if it
// is replicated: firstOffset >= 0 only while the producer's open
// transaction starts there (WriteTxnMarkerIfOpen), -1 whatever is open.
func (b *Broker) writeMarker(p *partition.Partition, pid int64, epoch int16, commit bool, coordinatorEpoch int32, firstOffset int64) error {
	if r := b.replicaOf(p); r != nil {
		ctx, cancel := context.WithTimeout(b.ctx, peerTimeout)
		defer cancel()
		return notLeader(r.WriteMarker(ctx, replica.Marker{ProducerID: pid, ProducerEpoch: epoch, Commit: commit,
			CoordinatorEpoch: coordinatorEpoch, FirstOffset: firstOffset}))
	}
	if firstOffset >= 0 {
		return p.WriteTxnMarkerIfOpen(pid, epoch, commit, coordinatorEpoch, firstOffset)
	}
	return p.WriteTxnMarker(pid, epoch, commit, coordinatorEpoch)
}

// deleteRecords raises p's log start offset (DeleteRecords), through its
// group if it is replicated, and returns the new low watermark.
func (b *Broker) deleteRecords(p *partition.Partition, offset int64) (int64, error) {
	if r := b.replicaOf(p); r != nil {
		ctx, cancel := context.WithTimeout(b.ctx, peerTimeout)
		defer cancel()
		lw, err := r.DeleteRecords(ctx, offset)
		return lw, notLeader(err)
	}
	return p.DeleteRecordsBefore(offset)
}

// expireReplicated has the leaders of replicated partitions propose a
// producer expiry: every replica expires at the same point of the log.
func (b *Broker) expireReplicated() {
	b.repMu.RLock()
	var led []*replica.Replica
	for _, r := range b.replicas {
		if r.Leading() {
			led = append(led, r)
		}
	}
	b.repMu.RUnlock()
	for _, r := range led {
		ctx, cancel := context.WithTimeout(b.ctx, peerTimeout)
		if err := r.Expire(ctx); err != nil && !errors.Is(err, quorum.ErrNotLeader) && b.ctx.Err() == nil {
			b.log.Warn("replicating a producer expiry failed", "topic", r.Partition().Topic, "partition", r.Partition().Index, "err", err)
		}
		cancel()
	}
}
