package broker

// Where the coordinators run on a cluster: on the leader of their
// internal topics' partitions. __consumer_offsets, __transaction_state and
// __share_group_state (one partition each) are replicated like any topic,
// on one replica set; the node leading all three, once its raft group has
// applied everything before its term (so it replays every entry a former
// leader committed), loads the coordinators on them, writing through the
// groups (replicatedStateLog). It unloads them when it stops leading any
// of the three or a term changes. Meanwhile FindCoordinator points at the
// published leader and other nodes answer NOT_COORDINATOR (clusterGate).
// The transaction and share partitions follow the offsets partition's
// leader (followCoordinatorLeader), so the three come together after a
// failover. A cluster whose internal topics were created with replication
// factor 1 keeps them on their node, which then always hosts.

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/quorum"
	"github.com/exactly/exactly/internal/replica"
	"github.com/exactly/exactly/internal/share"
)

// coordinatorTopics are the coordinators' internal topics; the first one's
// leader hosts them all.
var coordinatorTopics = []string{group.OffsetsTopic, txnStateTopic, share.StateTopic}

// coordHostInterval is how often a node checks whether it should host the
// coordinators (besides every leadership change it sees).
const coordHostInterval = 100 * time.Millisecond

// hostCoordinatorsPass creates the internal topics once (on the lowest
// voter) and loads or unloads the coordinators as leadership moved; it
// runs every coordHostInterval.
func (b *Broker) hostCoordinatorsPass(time.Time) {
	if err := b.createCoordinatorTopics(); err != nil && b.ctx.Err() == nil {
		b.log.Warn("creating the coordinators' internal topics failed; retrying", "err", err)
	}
	b.hostCoordinators()
}

// hostCoordinators loads or unloads the coordinators to match this node's
// leaderships.
func (b *Broker) hostCoordinators() {
	b.coordMu.Lock()
	defer b.coordMu.Unlock()
	if b.closing {
		return
	}
	rs, ps, epochs, ok := b.coordinatorPartitions()
	if c := b.coords(); b.hosting() {
		failed := c.groups.Failed() || c.txn.d.Failed()
		if ok && slices.Equal(c.epochs, epochs) && !failed {
			return
		}
		b.log.Info("unloading the coordinators", "leading", ok, "failed", failed)
		b.unloadCoordinators()
	}
	if !ok {
		return
	}
	ctx, stop := context.WithCancel(b.ctx)
	var logs [3]partition.StateLog
	for i := range coordinatorTopics {
		if rs[i] != nil {
			logs[i] = newReplicatedStateLog(ctx, rs[i])
		} else {
			logs[i] = ps[i]
		}
	}
	start := time.Now()
	if err := b.loadCoordinators(stateLogs{offsets: logs[0], txnState: logs[1], shareState: logs[2]}, epochs, stop); err != nil {
		stop()
		b.log.Error("loading the coordinators failed; retrying", "err", err)
		return
	}
	b.log.Info("loaded the coordinators", "epochs", epochs, "took", time.Since(start).Round(time.Millisecond))
}

// coordinatorPartitions returns the internal partitions if this node may
// host the coordinators on them: it holds all three and leads each that is
// replicated, with its term's first entry applied. epochs are their
// leader epochs (-1: not replicated).
func (b *Broker) coordinatorPartitions() (rs [3]*replica.Replica, ps [3]*partition.Partition, epochs []int32, ok bool) {
	epochs = make([]int32, len(coordinatorTopics))
	for i, name := range coordinatorTopics {
		p := b.localPartition(name, 0)
		if p == nil {
			return rs, ps, nil, false
		}
		ps[i], epochs[i] = p, -1
		r := b.replicaOf(p)
		if r == nil {
			continue
		}
		st := r.Status()
		if st.Role != quorum.RoleLeader || !st.Ready {
			return rs, ps, nil, false
		}
		rs[i], epochs[i] = r, int32(st.Term)
	}
	return rs, ps, epochs, true
}

// createCoordinatorTopics creates the internal topics that do not exist
// yet, on the lowest voter only (no two nodes race to place them), once
// enough brokers registered for their replication factor: the largest of
// offsets.topic.replication.factor,
// transaction.state.log.replication.factor and
// share.coordinator.state.topic.replication.factor, capped by the voters.
// All three get the same replicas, so that one node can lead them all.
func (b *Broker) createCoordinatorTopics() error {
	if b.cfg.NodeID != b.coordinatorsNode() {
		return nil
	}
	var missing []string
	var replicas [][]int32
	for _, name := range coordinatorTopics {
		if t, ok := b.catalog.Topic(name); ok {
			replicas = t.Replicas
		} else {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if replicas == nil {
		rf := max(b.brokerInt("offsets.topic.replication.factor"), b.brokerInt("transaction.state.log.replication.factor"),
			b.brokerInt("share.coordinator.state.topic.replication.factor"))
		rf = min(rf, int64(len(b.cfg.Cluster.Voters)))
		live := 0
		for _, br := range b.catalog.Brokers() {
			if !br.Fenced {
				live++
			}
		}
		if int64(live) < rf {
			return nil // wait for the brokers to register
		}
		var err error
		if replicas, err = cluster.Place(b.catalog.Brokers(), 1, int32(rf), rand.IntN(1<<16)); err != nil {
			return err
		}
	}
	for _, name := range missing {
		configs := coordinatorTopicConfigs(b, name, len(replicas[0]))
		if _, err := b.catalog.CreateTopicOn(name, 1, configs, true, replicas); err != nil && !errors.Is(err, cluster.ErrTopicExists) {
			return err
		}
		b.log.Info("created internal topic", "topic", name, "replicas", replicas[0])
	}
	return b.reconcile()
}

// coordinatorTopicConfigs are an internal topic's configs: never deleted
// by retention (its coordinator compacts it itself by snapshots), and for
// __transaction_state the min.insync.replicas of
// transaction.state.log.min.isr, capped by its replicas.
func coordinatorTopicConfigs(b *Broker, name string, rf int) map[string]string {
	if name == txnStateTopic {
		out := map[string]string{}
		for k, v := range txnStateConfigs {
			out[k] = v
		}
		out["min.insync.replicas"] = strconv.FormatInt(min(b.brokerInt("transaction.state.log.min.isr"), int64(rf)), 10)
		return out
	}
	segment, _ := b.catalog.BrokerConfig("offsets.topic.segment.bytes")
	out := map[string]string{"retention.ms": "-1", "retention.bytes": "-1", "segment.bytes": segment}
	if name == share.StateTopic {
		out["min.insync.replicas"] = strconv.FormatInt(min(b.brokerInt("share.coordinator.state.topic.min.isr"), int64(rf)), 10)
	}
	return out
}

// followCoordinatorLeader is, for the leader of an internal partition
// other than the offsets partition (follows), the replica to hand its
// leadership to: the offsets partition's published leader, if in sync
// here and not this node (0 otherwise). Such partitions follow only that
// leader, never their preferred replica, or the two rules would hand an
// empty partition back and forth.
func (b *Broker) followCoordinatorLeader(topic string, inSync []uint64) (to int32, follows bool) {
	if topic != txnStateTopic && topic != share.StateTopic {
		return 0, false
	}
	t, ok := b.catalog.Topic(group.OffsetsTopic)
	if !ok {
		return 0, true
	}
	l, ok := t.Leader(0)
	if !ok || l.Leader == b.cfg.NodeID || !slices.Contains(inSync, uint64(l.Leader)) {
		return 0, true
	}
	return l.Leader, true
}
