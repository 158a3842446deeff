package broker

// The broker as one node of a cluster (docs/DESIGN.md, "Cluster").
//
// The catalog is replicated by the metadata quorum (internal/quorum over
// etcd raft, on the controller listener): every node applies the same
// changes in the same order, so every node answers Metadata alike. Each
// partition lives on its replicas; until partitions are replicated,
// topics have one replica, which leads it, and other nodes answer
// NOT_LEADER_OR_FOLLOWER for it. Nodes open the partitions they hold as
// the catalog assigns them (reconcile) and delete their directories of
// deleted topics.
//
// Liveness goes through the quorum too: every broker commits a heartbeat
// each broker.heartbeat.interval.ms, and the quorum's leader fences a
// broker it has not heard for broker.session.timeout.ms (its partitions
// go offline: leader -1) and unfences it when it is heard again.
//
// The coordinators' internal topics (__consumer_offsets,
// __transaction_state, __share_group_state) have one partition each, all
// on one node: the group, transaction and share coordinators run there,
// FindCoordinator points at it, and every other node answers
// NOT_COORDINATOR.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/quorum"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/share"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ClusterConfig makes the broker one node of a cluster.
type ClusterConfig struct {
	// Voters are controller.quorum.voters.
	Voters []cluster.Voter
	// Controller accepts the other controllers' connections (the
	// controller listener); the quorum closes it.
	Controller net.Listener
	// ElectionTimeout is controller.quorum.election.timeout.ms.
	ElectionTimeout time.Duration
	// HeartbeatInterval and SessionTimeout are broker.heartbeat.interval.ms
	// and broker.session.timeout.ms.
	HeartbeatInterval, SessionTimeout time.Duration
	// Listeners are this broker's advertised client listeners, registered
	// so that every node can name them in its answers.
	Listeners []cluster.Endpoint
	// InterBrokerListener is inter.broker.listener.name: the listener of
	// the other nodes this node's requests to them use ("" : each node's
	// first).
	InterBrokerListener string
	// Join starts a node with empty metadata storage without bootstrapping
	// the quorum: it waits to be added (AddRaftVoter) and learns the log
	// from the leader. A new node, or one whose disk was wiped.
	Join bool
	// Learner makes a broker-only node (process.roles=broker): it follows
	// the metadata log as a non-voting member of the quorum, admitted on
	// its own request, and is never counted in a quorum.
	Learner bool
	// Adopt makes the single-node catalog of the data directory the new
	// cluster's (growing a single node into a cluster): the node must be
	// the voter with the lowest id, and the cluster have no topics yet.
	Adopt bool
}

// nodeState is what a cluster node keeps beside the catalog.
type nodeState struct {
	quorum *quorum.Node
	// epoch is this broker's registration epoch.
	epoch int64

	// heardMu guards heard: when the controller (the quorum's leader)
	// last applied a heartbeat of each broker registration.
	heardMu sync.Mutex
	heard   map[int32]heardAt
	// leaderSince is when this node last became the quorum's leader (its
	// clock for brokers not heard since).
	leaderSince time.Time

	// pidMu guards the producer-id block this node hands out to
	// idempotent producers when the transaction coordinator is elsewhere.
	pidMu           sync.Mutex
	pidNext, pidEnd int64

	// peers are the clients to the other nodes (interbroker.go).
	peers peers
}

type heardAt struct {
	epoch int64
	at    time.Time
}

// clustered reports whether this broker is a node of a cluster.
func (b *Broker) clustered() bool { return b.node != nil }

// leaderOf is the node leading partition p of t: its first replica while
// that broker is unfenced, else -1 (offline). A single node leads
// everything.
func (b *Broker) leaderOf(t *cluster.Topic, p int32) int32 {
	if !b.clustered() {
		return b.cfg.NodeID
	}
	if p < 0 || int(p) >= len(t.Replicas) || len(t.Replicas[p]) == 0 {
		return -1
	}
	if len(t.Replicas[p]) > 1 {
		id, _, _ := b.publishedLeader(t, p)
		return id
	}
	id := t.Replicas[p][0]
	if br, ok := b.catalog.Broker(id); !ok || br.Fenced {
		return -1
	}
	return id
}

// holds reports whether partition p of t lives on this node.
func (b *Broker) holds(t *cluster.Topic, p int32) bool {
	if !b.clustered() {
		return true
	}
	return int(p) < len(t.Replicas) && slices.Contains(t.Replicas[p], b.cfg.NodeID)
}

// absentCode is the error for a partition this node does not serve:
// NOT_LEADER_OR_FOLLOWER when the cluster has it elsewhere (or it is not
// open here yet), UNKNOWN_TOPIC_OR_PARTITION otherwise.
func (b *Broker) absentCode(topic string, index int32) int16 {
	if b.clustered() {
		if t, ok := b.catalog.Topic(topic); ok && index >= 0 && index < t.Partitions {
			return kerr.NotLeaderForPartition.Code
		}
	}
	return kerr.UnknownTopicOrPartition.Code
}

// listenerOf is the listener a request came in on ("" for in-process
// calls).
func listenerOf(r *server.Request) string {
	if r != nil && r.Conn != nil {
		return r.Conn.Listener()
	}
	return ""
}

// endpointOf is the address of node id for clients of listener: this
// node's advertised address, another's registered one (false if it has
// none on that listener, or is not registered).
func (b *Broker) endpointOf(r *server.Request, id int32) (string, int32, bool) {
	if id == b.cfg.NodeID {
		h, p := b.advertised(r)
		return h, p, true
	}
	br, ok := b.catalog.Broker(id)
	if !ok {
		return "", 0, false
	}
	name := listenerOf(r)
	for _, e := range br.Listeners {
		if e.Name == name || name == "" {
			return e.Host, e.Port, true
		}
	}
	return "", 0, false
}

// metadataBrokers are the brokers Metadata lists: this one alone, or
// every unfenced broker of the cluster with an endpoint on the request's
// listener.
func (b *Broker) metadataBrokers(r *server.Request) []kmsg.MetadataResponseBroker {
	if !b.clustered() {
		return []kmsg.MetadataResponseBroker{b.brokerEntry(r)}
	}
	var out []kmsg.MetadataResponseBroker
	for _, br := range b.catalog.Brokers() {
		if br.Fenced && br.ID != b.cfg.NodeID {
			continue
		}
		host, port, ok := b.endpointOf(r, br.ID)
		if !ok {
			continue
		}
		e := kmsg.NewMetadataResponseBroker()
		e.NodeID, e.Host, e.Port = br.ID, host, port
		if br.Rack != "" {
			e.Rack = kmsg.StringPtr(br.Rack)
		}
		out = append(out, e)
	}
	return out
}

// controllerID is the node Metadata and DescribeCluster name as the
// controller: the quorum's leader (-1 while there is none).
func (b *Broker) controllerID() int32 {
	if !b.clustered() {
		return b.cfg.NodeID
	}
	if l := b.node.quorum.Status().Leader; l != 0 { // raft's "no leader" is 0: node ids start at 1
		return int32(l)
	}
	return -1
}

// partitionMetadata fills a Metadata partition: leader, replicas, ISR
// (the leader while it is online) and offline replicas.
func (b *Broker) partitionMetadata(t *cluster.Topic, i int32, mp *kmsg.MetadataResponseTopicPartition) {
	if !b.clustered() {
		mp.Leader = b.cfg.NodeID
		mp.Replicas = []int32{b.cfg.NodeID}
		mp.ISR = []int32{b.cfg.NodeID}
		return
	}
	mp.Leader = b.leaderOf(t, i)
	mp.Replicas = []int32{}
	mp.ISR = []int32{}
	if int(i) < len(t.Replicas) {
		mp.Replicas = slices.Clone(t.Replicas[i])
	}
	var isr []int32
	if replicated(t, i) {
		var epoch int32
		mp.Leader, epoch, isr = b.publishedLeader(t, i)
		mp.LeaderEpoch = max(epoch, 0)
	}
	for _, id := range mp.Replicas {
		if br, ok := b.catalog.Broker(id); !ok || br.Fenced {
			mp.OfflineReplicas = append(mp.OfflineReplicas, id)
		} else if id == mp.Leader || slices.Contains(isr, id) {
			mp.ISR = append(mp.ISR, id)
		}
	}
	if mp.Leader < 0 {
		mp.ErrorCode = kerr.LeaderNotAvailable.Code
	}
}

// coordinatorTopic is the internal topic whose partition's node runs the
// coordinator of a FindCoordinator key type.
func coordinatorTopic(keyType int8) string {
	switch keyType {
	case 1:
		return txnStateTopic
	case 2:
		return share.StateTopic
	}
	return group.OffsetsTopic
}

// coordinatorNode is the node running the coordinator of keyType, -1 if
// it is offline or not placed yet.
func (b *Broker) coordinatorNode(keyType int8) int32 {
	if !b.clustered() {
		return b.cfg.NodeID
	}
	t, ok := b.catalog.Topic(coordinatorTopic(keyType))
	if !ok {
		return -1
	}
	return b.leaderOf(t, 0)
}

// clusterGate answers coordinator requests on a node that does not run
// the coordinators: NOT_COORDINATOR, or COORDINATOR_LOAD_IN_PROGRESS
// where they are loading (notHostingCode); nil lets the request through.
func (b *Broker) clusterGate(r *server.Request) kmsg.Response {
	if !b.clustered() || b.hosting() {
		return nil
	}
	notHere := b.notHostingCode()
	switch req := r.Msg.(type) {
	case *kmsg.JoinGroupRequest, *kmsg.SyncGroupRequest, *kmsg.HeartbeatRequest, *kmsg.LeaveGroupRequest,
		*kmsg.OffsetCommitRequest, *kmsg.OffsetFetchRequest, *kmsg.OffsetDeleteRequest,
		*kmsg.ConsumerGroupHeartbeatRequest, *kmsg.ConsumerGroupDescribeRequest, *kmsg.DescribeGroupsRequest:
		if !b.hosting() {
			return group.ErrorResponse(req, notHere)
		}
	case *kmsg.ListGroupsRequest:
		if !b.hosting() {
			// Each node lists the groups its coordinator runs: none here.
			return req.ResponseKind()
		}
	case *kmsg.DeleteGroupsRequest:
		if !b.hosting() {
			resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
			for _, g := range req.Groups {
				rg := kmsg.NewDeleteGroupsResponseGroup()
				rg.Group, rg.ErrorCode = g, notHere
				resp.Groups = append(resp.Groups, rg)
			}
			return resp
		}
	case *kmsg.InitProducerIDRequest:
		if req.TransactionalID != nil && !b.hosting() {
			resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
			resp.ProducerID, resp.ProducerEpoch, resp.ErrorCode = -1, -1, notHere
			return resp
		}
	case *kmsg.AddPartitionsToTxnRequest:
		if !b.hosting() {
			return addPartitionsError(req, notHere)
		}
	case *kmsg.AddOffsetsToTxnRequest:
		if !b.hosting() {
			resp := req.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
			resp.ErrorCode = notHere
			return resp
		}
	case *kmsg.EndTxnRequest:
		if !b.hosting() {
			resp := req.ResponseKind().(*kmsg.EndTxnResponse)
			resp.ProducerID, resp.ProducerEpoch, resp.ErrorCode = -1, -1, notHere
			return resp
		}
	case *kmsg.TxnOffsetCommitRequest:
		if !b.hosting() {
			return txnOffsetCommitError(req, notHere)
		}
	case *kmsg.DescribeTransactionsRequest:
		if !b.hosting() {
			resp := req.ResponseKind().(*kmsg.DescribeTransactionsResponse)
			for _, id := range req.TransactionalIDs {
				s := kmsg.NewDescribeTransactionsResponseTransactionState()
				s.TransactionalID, s.ErrorCode = id, notHere
				s.ProducerID, s.ProducerEpoch = -1, -1
				resp.TransactionStates = append(resp.TransactionStates, s)
			}
			return resp
		}
	case *kmsg.ListTransactionsRequest:
		if !b.hosting() {
			// Each node lists what its coordinator runs: nothing here.
			return req.ResponseKind()
		}
	case *kmsg.ShareGroupHeartbeatRequest:
		if !b.hosting() {
			resp := req.ResponseKind().(*kmsg.ShareGroupHeartbeatResponse)
			resp.ErrorCode = notHere
			return resp
		}
	case *kmsg.ShareGroupDescribeRequest:
		if !b.hosting() {
			resp := req.ResponseKind().(*kmsg.ShareGroupDescribeResponse)
			for _, g := range req.GroupIDs {
				rg := kmsg.NewShareGroupDescribeResponseGroup()
				rg.GroupID, rg.ErrorCode = g, notHere
				resp.Groups = append(resp.Groups, rg)
			}
			return resp
		}
	case *kmsg.ShareFetchRequest:
		if !b.hosting() {
			resp := req.ResponseKind().(*kmsg.ShareFetchResponse)
			resp.ErrorCode = notHere
			return resp
		}
	case *kmsg.ShareAcknowledgeRequest:
		if !b.hosting() {
			resp := req.ResponseKind().(*kmsg.ShareAcknowledgeResponse)
			resp.ErrorCode = notHere
			return resp
		}
	case *kmsg.DescribeShareGroupOffsetsRequest, *kmsg.AlterShareGroupOffsetsRequest, *kmsg.DeleteShareGroupOffsetsRequest:
		if !b.hosting() {
			return shareOffsetsError(req, notHere)
		}
	}
	return nil
}

// notHostingCode is the error for a coordinator request here while the
// coordinators are not loaded: COORDINATOR_LOAD_IN_PROGRESS if this node
// leads the offsets partition (they are about to load: the client waits
// and retries here), else NOT_COORDINATOR (the client looks again).
func (b *Broker) notHostingCode() int16 {
	if r := b.replicaOf(b.localPartition(group.OffsetsTopic, 0)); r != nil && r.Leading() {
		return kerr.CoordinatorLoadInProgress.Code
	}
	return kerr.NotCoordinator.Code
}

func addPartitionsError(req *kmsg.AddPartitionsToTxnRequest, code int16) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	if req.Version >= 4 {
		resp.ErrorCode = code
		return resp
	}
	for _, t := range req.Topics {
		rt := kmsg.NewAddPartitionsToTxnResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p, code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// txnOffsetCommitError answers every partition of a TxnOffsetCommit with
// code.
func txnOffsetCommitError(req *kmsg.TxnOffsetCommitRequest, code int16) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	for _, t := range req.Topics {
		rt := kmsg.NewTxnOffsetCommitResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

func shareOffsetsError(req kmsg.Request, code int16) kmsg.Response {
	switch r := req.(type) {
	case *kmsg.DescribeShareGroupOffsetsRequest:
		resp := r.ResponseKind().(*kmsg.DescribeShareGroupOffsetsResponse)
		for _, g := range r.Groups {
			rg := kmsg.NewDescribeShareGroupOffsetsResponseGroup()
			rg.GroupID, rg.ErrorCode = g.GroupID, code
			resp.Groups = append(resp.Groups, rg)
		}
		return resp
	case *kmsg.AlterShareGroupOffsetsRequest:
		resp := r.ResponseKind().(*kmsg.AlterShareGroupOffsetsResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.DeleteShareGroupOffsetsRequest:
		resp := r.ResponseKind().(*kmsg.DeleteShareGroupOffsetsResponse)
		resp.ErrorCode = code
		return resp
	}
	return nil
}

// placeNew chooses the replicas of n new partitions (replication factor
// 1) over the unfenced brokers, starting at a random one so that topics
// spread; nil on a single node.
func (b *Broker) placeNew(n, rf int32) ([][]int32, error) {
	if !b.clustered() {
		return nil, nil
	}
	return cluster.Place(b.catalog.Brokers(), n, rf, rand.IntN(1<<16))
}

// coordinatorsNode is where the coordinators' internal topics live: the
// voter with the lowest node id. They run together (a transaction's
// offsets complete in a group coordinator on the same node), and only
// that node creates the topics, so no two nodes racing at their first
// start place them apart.
func (b *Broker) coordinatorsNode() int32 {
	return slices.MinFunc(b.cfg.Cluster.Voters, func(x, y cluster.Voter) int { return int(x.ID - y.ID) }).ID
}

// errNotHere is an internal topic whose partition lives on another node.
var errNotHere = errors.New("the partition lives on another node")

// reconcile brings the open partitions in line with the catalog: it
// closes those of topics deleted (or replaced by a new topic of the same
// name), deletes their directories, and opens every partition assigned to
// this node that is not open yet.
func (b *Broker) reconcile() error {
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	return b.reconcileLocked()
}

func (b *Broker) reconcileLocked() error {
	b.partsMu.Lock()
	var stale []*partition.Partition
	for name, ps := range b.parts {
		t, ok := b.catalog.Topic(name)
		for i, p := range ps {
			if p == nil {
				continue
			}
			if !ok || partition.TopicID(t.ID) != p.TopicID() || !b.holds(t, int32(i)) {
				stale = append(stale, p)
				ps[i] = nil
			}
		}
		if !ok {
			delete(b.parts, name)
		}
	}
	b.partsMu.Unlock()
	var errs []error
	for _, p := range stale {
		if err := b.closeReplica(p); err != nil {
			errs = append(errs, err)
		}
		if err := p.Close(); err != nil {
			errs = append(errs, err)
		}
		b.metrics.forgetTopic(p.Topic)
	}
	if err := b.finishDeletions(""); err != nil {
		errs = append(errs, err)
	}
	for _, t := range b.catalog.Topics() {
		b.partsMu.RLock()
		have := b.parts[t.Name]
		b.partsMu.RUnlock()
		ps := make([]*partition.Partition, t.Partitions)
		copy(ps, have)
		opened := false
		for i := range ps {
			if ps[i] != nil || !b.holds(t, int32(i)) {
				continue
			}
			p, err := b.openPartition(t, int32(i))
			if err == nil && replicated(t, int32(i)) {
				if err = b.openReplica(t, int32(i), p); err != nil {
					p.Close()
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("opening %s-%d: %w", t.Name, i, err))
				continue
			}
			ps[i], opened = p, true
		}
		if opened {
			if cur, ok := b.catalog.TopicByID(t.ID); !ok || cur.Name != t.Name {
				// Deleted while this pass opened it: this node may have
				// reported its deletion done already, so nothing would
				// remove what was just created. Remove it now.
				for i, p := range ps {
					if p == nil || slices.Contains(have, p) {
						continue
					}
					if err := b.closeReplica(p); err != nil {
						errs = append(errs, err)
					}
					if _, err := p.Delete(); err != nil {
						errs = append(errs, fmt.Errorf("removing %s-%d of a topic deleted meanwhile: %w", t.Name, i, err))
					}
				}
				continue
			}
		}
		if opened || len(have) != len(ps) {
			b.partsMu.Lock()
			b.parts[t.Name] = ps
			b.partsMu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// reconcileLoop reconciles after every catalog change.
func (b *Broker) reconcileLoop() {
	defer b.bg.Done()
	for {
		changed := b.catalog.Changed()
		if err := b.reconcile(); err != nil {
			b.log.Error("bringing partitions in line with the cluster's metadata", "err", err)
		}
		select {
		case <-changed:
		case <-b.ctx.Done():
			return
		case <-time.After(5 * time.Second): // retry what failed
		}
	}
}

// heartbeatLoop commits this broker's heartbeat every
// broker.heartbeat.interval.ms; a heartbeat of a fenced registration
// (a restart elsewhere took its place, or the controller fenced it while
// this node was cut off) registers again.
func (b *Broker) heartbeatLoop() {
	defer b.bg.Done()
	t := time.NewTicker(b.cfg.Cluster.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		err := b.catalog.Heartbeat(b.cfg.NodeID, b.node.epoch)
		if errors.Is(err, cluster.ErrStaleBrokerEpoch) {
			err = b.register()
		}
		if err != nil && b.ctx.Err() == nil {
			b.log.Warn("broker heartbeat not committed", "err", err)
		}
	}
}

// register (re)registers this broker and keeps its new epoch.
func (b *Broker) register() error {
	reg, err := b.catalog.RegisterBroker(cluster.Broker{
		ID: b.cfg.NodeID, Incarnation: b.dataDir.DirectoryID(), Listeners: b.cfg.Cluster.Listeners,
	})
	if err != nil {
		return fmt.Errorf("registering broker %d: %w", b.cfg.NodeID, err)
	}
	b.node.epoch = reg.Epoch
	b.log.Info("registered with the cluster", "node_id", b.cfg.NodeID, "broker_epoch", reg.Epoch)
	return nil
}

// registerAtStart registers this broker, trying again while the metadata
// quorum cannot commit (a node cut off or paused, no leader yet), as
// Kafka's brokers keep trying: a node started into a degraded cluster
// waits for it rather than exiting.
func (b *Broker) registerAtStart() error {
	for {
		err := b.register()
		if err == nil || !(errors.Is(err, cluster.ErrNoQuorum) || errors.Is(err, quorum.ErrProposalDropped)) {
			return err
		}
		b.log.Warn("registering with the cluster failed; retrying", "err", err)
		time.Sleep(time.Second)
	}
}

// heardHeartbeat is the catalog's heartbeat hook: the controller's clock.
func (b *Broker) heardHeartbeat(id int32, epoch int64) {
	b.node.heardMu.Lock()
	b.node.heard[id] = heardAt{epoch: epoch, at: time.Now()}
	b.node.heardMu.Unlock()
}

// controllerLoop runs the controller's duties while this node leads the
// quorum: fence brokers not heard for broker.session.timeout.ms, unfence
// those heard again.
func (b *Broker) controllerLoop() {
	defer b.bg.Done()
	t := time.NewTicker(b.cfg.Cluster.HeartbeatInterval / 2)
	defer t.Stop()
	wasLeader := false
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		leader := b.node.quorum.Status().Leader == uint64(b.cfg.NodeID)
		if leader && !wasLeader {
			// Heartbeats applied before are the old leader's to judge:
			// every broker gets a full session from now.
			b.node.heardMu.Lock()
			b.node.leaderSince = time.Now()
			b.node.heardMu.Unlock()
		}
		wasLeader = leader
		if !leader {
			continue
		}
		now := time.Now()
		for _, br := range b.catalog.Brokers() {
			b.node.heardMu.Lock()
			h, ok := b.node.heard[br.ID]
			since := b.node.leaderSince
			b.node.heardMu.Unlock()
			last := since
			if ok && h.epoch == br.Epoch && h.at.After(since) {
				last = h.at
			}
			alive := now.Sub(last) < b.cfg.Cluster.SessionTimeout
			if alive == !br.Fenced {
				continue
			}
			if !alive && !(ok && h.epoch == br.Epoch) && now.Sub(since) < b.cfg.Cluster.SessionTimeout {
				continue
			}
			if err := b.catalog.FenceBroker(br.ID, br.Epoch, !alive); err != nil {
				if !errors.Is(err, cluster.ErrStaleBrokerEpoch) {
					b.log.Warn("changing a broker's fencing", "broker", br.ID, "fence", !alive, "err", err)
				}
				continue
			}
			if alive {
				b.log.Info("unfenced broker: heard again", "broker", br.ID, "broker_epoch", br.Epoch)
			} else {
				b.log.Warn("fenced broker: no heartbeat within broker.session.timeout.ms", "broker", br.ID,
					"broker_epoch", br.Epoch, "session_timeout", b.cfg.Cluster.SessionTimeout)
			}
		}
	}
}

// pidBlockSize is how many producer ids one catalog reservation covers.
const pidBlockSize = 1000

// idempotentPID hands out a producer id for an idempotent producer on a
// node without the transaction coordinator, from a block the catalog
// reserved for this node (a block is never handed out twice: a restart
// reserves a new one).
func (b *Broker) idempotentPID() (int64, error) {
	b.node.pidMu.Lock()
	defer b.node.pidMu.Unlock()
	if b.node.pidNext >= b.node.pidEnd {
		first, err := b.catalog.AllocateProducerIDs(b.cfg.NodeID, pidBlockSize)
		if err != nil {
			return -1, err
		}
		b.node.pidNext, b.node.pidEnd = first, first+pidBlockSize
	}
	id := b.node.pidNext
	b.node.pidNext++
	return id, nil
}

// startNode joins the metadata quorum with the catalog as its state
// machine and waits until this node has a leader to talk to, has the
// cluster's id and is registered.
func startNode(cfg Config, dd *cluster.DataDir) (*cluster.Catalog, *nodeState, error) {
	single := cluster.SingleNodeCatalog(cfg.FS, cfg.DataDir)
	lowest := slices.MinFunc(cfg.Cluster.Voters, func(x, y cluster.Voter) int { return int(x.ID - y.ID) }).ID
	switch {
	case single && !cfg.Cluster.Adopt:
		return nil, nil, fmt.Errorf("%w: %s holds a single node's catalog (cluster.json); to make its topics the new cluster's, start this node once with --adopt", cluster.ErrDataDir, cfg.DataDir)
	case cfg.Cluster.Adopt && !single:
		return nil, nil, fmt.Errorf("--adopt: %s holds no single-node catalog (cluster.json) to adopt", cfg.DataDir)
	case cfg.Cluster.Adopt && cfg.NodeID != lowest:
		return nil, nil, fmt.Errorf("--adopt: a single node becomes the voter with the lowest id (node %d here), which holds the coordinators; this is node %d", lowest, cfg.NodeID)
	}
	ns := &nodeState{heard: map[int32]heardAt{}}
	var qmu sync.Mutex
	var q *quorum.Node
	cat := cluster.NewReplica(cfg.Static, func(ctx context.Context, data []byte) (any, error) {
		qmu.Lock()
		node := q
		qmu.Unlock()
		if node == nil {
			return nil, errors.New("the metadata quorum is not started")
		}
		return node.Propose(ctx, data)
	})
	// The id is known before any node can talk: formatted into the
	// directory, or derived from the voters alike on every node.
	clusterID := dd.ClusterID()
	if clusterID == "" {
		clusterID = cluster.DerivedClusterID(cfg.Cluster.Voters)
	}
	voters := map[uint64]string{}
	for _, v := range cfg.Cluster.Voters {
		voters[uint64(v.ID)] = v.Addr
	}
	node, err := quorum.Start(quorum.Config{
		NodeID:          uint64(cfg.NodeID),
		Voters:          voters,
		FS:              cfg.FS,
		Dir:             filepath.Join(cfg.DataDir, cluster.MetadataDirName),
		Listener:        cfg.Cluster.Controller,
		ClusterID:       clusterID,
		ElectionTimeout: cfg.Cluster.ElectionTimeout,
		Join:            cfg.Cluster.Join,
		Learner:         cfg.Cluster.Learner,
		Logger:          cfg.Logger.With("component", "metadata-quorum"),
		SM:              cat,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("starting the metadata quorum: %w", err)
	}
	qmu.Lock()
	q = node
	qmu.Unlock()
	ns.quorum = node
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		leader, err := node.WaitLeader(ctx)
		cancel()
		if err == nil {
			cfg.Logger.Info("metadata quorum has a leader", "leader", leader)
			break
		}
		cfg.Logger.Warn("waiting for a quorum of controller.quorum.voters to start", "voters", voterList(cfg.Cluster.Voters))
	}
	var id string
	for {
		id, err = cat.InitCluster(clusterID)
		if err == nil {
			break
		}
		if !errors.Is(err, cluster.ErrNoQuorum) {
			node.Close()
			return nil, nil, err
		}
		cfg.Logger.Warn("waiting for the metadata quorum to commit", "err", err)
	}
	if err := dd.Claim(id, cfg.NodeID); err != nil {
		node.Close()
		return nil, nil, err
	}
	return cat, ns, nil
}

func voterList(vs []cluster.Voter) string {
	s := ""
	for i, v := range vs {
		if i > 0 {
			s += ","
		}
		s += strconv.Itoa(int(v.ID)) + "@" + v.Addr
	}
	return s
}

// adopt makes this directory's single-node catalog the cluster's (once:
// the file is renamed after) — see ClusterConfig.Adopt.
func (b *Broker) adopt() error {
	single, err := cluster.ReadCatalog(b.cfg.FS, b.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("--adopt: reading the single node's catalog: %w", err)
	}
	if err := b.catalog.Adopt(single, b.cfg.NodeID); err != nil && !errors.Is(err, cluster.ErrAdopted) {
		return fmt.Errorf("--adopt: %w", err)
	}
	if err := cluster.MarkAdopted(b.cfg.FS, b.cfg.DataDir); err != nil {
		return fmt.Errorf("--adopt: the catalog is the cluster's, but renaming cluster.json failed: %w", err)
	}
	b.log.Info("the single node's topics are the cluster's now", "topics", len(single.Topics()), "node_id", b.cfg.NodeID)
	return nil
}

// leaderHint is where a partition this node does not serve is led (KIP-951:
// Produce v10+ and Fetch v12+ name the new leader, and the broker's
// address, beside NOT_LEADER_OR_FOLLOWER, so the client need not refresh
// its metadata); ok is false when there is no leader to name.
func (b *Broker) leaderHint(r *server.Request, topic string, index int32) (kmsg.MetadataResponseBroker, bool) {
	var out kmsg.MetadataResponseBroker
	if !b.clustered() {
		return out, false
	}
	t, ok := b.catalog.Topic(topic)
	if !ok || index < 0 || index >= t.Partitions {
		return out, false
	}
	id := b.leaderOf(t, index)
	if id < 0 || id == b.cfg.NodeID {
		return out, false
	}
	host, port, ok := b.endpointOf(r, id)
	if !ok {
		return out, false
	}
	out.NodeID, out.Host, out.Port = id, host, port
	return out, true
}
