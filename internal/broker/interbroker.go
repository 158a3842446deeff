package broker

// Requests from one node of a cluster to another: the transaction
// coordinator's markers for partitions held elsewhere, a partition's
// check of a transactional produce with a coordinator elsewhere, and
// GROUP config requests forwarded to the node keeping them. They go
// over the Kafka protocol to the other node's first registered listener,
// as Kafka's brokers talk to each other, with a client id that marks them
// as a node's (peerClientID). inter.broker.listener.name picks another
// listener.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/txn"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// peerClientIDPrefix starts the client id of a node's requests to
// another node; the rest is the sender's node id.
const peerClientIDPrefix = "exactly-node-"

// peerTimeout bounds one request to another node.
const peerTimeout = 10 * time.Second

// fromPeer reports whether a request says it comes from another node of
// the cluster. Nothing proves it: like Kafka without an authorizer, the
// inter-broker requests trust the network; with ACLs they need
// CLUSTER_ACTION, which only the brokers' principals should have.
func (b *Broker) fromPeer(r *server.Request) bool {
	return b.clustered() && strings.HasPrefix(r.Header.ClientID, peerClientIDPrefix)
}

// peers holds one client per other node, to its first registered
// listener.
type peers struct {
	mu      sync.Mutex
	clients map[int32]peerClient
}

type peerClient struct {
	addr string
	cl   *kgo.Client
}

// peer returns a client for node id's first registered listener.
func (b *Broker) peer(id int32) (*kgo.Broker, error) {
	br, ok := b.catalog.Broker(id)
	if !ok || len(br.Listeners) == 0 {
		return nil, fmt.Errorf("node %d is not registered", id)
	}
	if br.Fenced {
		return nil, fmt.Errorf("node %d is fenced", id)
	}
	e := br.Listeners[0]
	if name := b.cfg.Cluster.InterBrokerListener; name != "" {
		i := slices.IndexFunc(br.Listeners, func(e cluster.Endpoint) bool { return e.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("node %d has no listener %s (inter.broker.listener.name)", id, name)
		}
		e = br.Listeners[i]
	}
	addr := net.JoinHostPort(e.Host, strconv.Itoa(int(e.Port)))
	ps := &b.node.peers
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.clients == nil {
		ps.clients = map[int32]peerClient{}
	}
	pc, ok := ps.clients[id]
	if !ok || pc.addr != addr {
		if ok {
			pc.cl.Close()
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ClientID(peerClientIDPrefix+strconv.Itoa(int(b.cfg.NodeID))),
			kgo.RequestTimeoutOverhead(peerTimeout))
		if err != nil {
			return nil, err
		}
		pc = peerClient{addr: addr, cl: cl}
		ps.clients[id] = pc
	}
	return pc.cl.SeedBrokers()[0], nil
}

// closePeers closes the clients to other nodes.
func (b *Broker) closePeers() {
	ps := &b.node.peers
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, pc := range ps.clients {
		pc.cl.Close()
	}
	ps.clients = nil
}

// writeRemoteMarker sends one transaction marker to the node leading tp.
func (b *Broker) writeRemoteMarker(tp txn.TopicPartition, pid int64, epoch int16, commit bool, coordinatorEpoch int32) error {
	t, ok := b.catalog.Topic(tp.Topic)
	if !ok || tp.Partition < 0 || tp.Partition >= t.Partitions {
		return txn.ErrPartitionGone
	}
	leader := b.leaderOf(t, tp.Partition)
	if leader < 0 {
		return fmt.Errorf("%s-%d is offline", tp.Topic, tp.Partition)
	}
	if leader == b.cfg.NodeID {
		return fmt.Errorf("%s-%d is not open here yet", tp.Topic, tp.Partition)
	}
	peer, err := b.peer(leader)
	if err != nil {
		return err
	}
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	req.Version = 1
	m := kmsg.NewWriteTxnMarkersRequestMarker()
	m.ProducerID, m.ProducerEpoch, m.Committed, m.CoordinatorEpoch = pid, epoch, commit, coordinatorEpoch
	mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
	mt.Topic, mt.Partitions = tp.Topic, []int32{tp.Partition}
	m.Topics = append(m.Topics, mt)
	req.Markers = append(req.Markers, m)
	ctx, cancel := context.WithTimeout(b.ctx, peerTimeout)
	defer cancel()
	resp, err := req.RequestWith(ctx, peer)
	if err != nil {
		return fmt.Errorf("sending the marker for %s-%d to node %d: %w", tp.Topic, tp.Partition, leader, err)
	}
	for _, rm := range resp.Markers {
		for _, rt := range rm.Topics {
			for _, rp := range rt.Partitions {
				if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
					if errors.Is(err, kerr.UnknownTopicOrPartition) {
						if _, ok := b.catalog.Topic(tp.Topic); !ok {
							return txn.ErrPartitionGone
						}
					}
					return fmt.Errorf("node %d refused the marker for %s-%d: %w", leader, tp.Topic, tp.Partition, err)
				}
			}
		}
	}
	return nil
}

// checkRemoteTransactionalProduce is checkTransactionalProduce with the
// transaction coordinator on another node: the partition asks it with
// AddPartitionsToTxn (v5 adds, for Produce v12+; v4 verifies), as Kafka's
// partition leaders do.
func (b *Broker) checkRemoteTransactionalProduce(txnID string, pid int64, epoch int16, topic string, partition int32, implicitAdd bool) error {
	describe := func(e *kerr.Error) error {
		return &kerrError{e, fmt.Sprintf("transactional produce to %s/%d by producer %d epoch %d of %q: %s", topic, partition, pid, epoch, txnID, e.Message)}
	}
	node := b.coordinatorNode(1)
	if node < 0 {
		return describe(kerr.CoordinatorNotAvailable)
	}
	peer, err := b.peer(node)
	if err != nil {
		return describe(kerr.CoordinatorNotAvailable)
	}
	req := kmsg.NewPtrAddPartitionsToTxnRequest()
	req.Version = 4
	if implicitAdd {
		req.Version = 5
	}
	tx := kmsg.NewAddPartitionsToTxnRequestTransaction()
	tx.TransactionalID, tx.ProducerID, tx.ProducerEpoch, tx.VerifyOnly = txnID, pid, epoch, !implicitAdd
	tt := kmsg.NewAddPartitionsToTxnRequestTransactionTopic()
	tt.Topic, tt.Partitions = topic, []int32{partition}
	tx.Topics = append(tx.Topics, tt)
	req.Transactions = append(req.Transactions, tx)
	ctx, cancel := context.WithTimeout(b.ctx, peerTimeout)
	defer cancel()
	resp, err := req.RequestWith(ctx, peer)
	if err != nil {
		return describe(kerr.CoordinatorNotAvailable)
	}
	code := resp.ErrorCode
	for _, rtx := range resp.Transactions {
		for _, rt := range rtx.Topics {
			for _, rp := range rt.Partitions {
				if code == 0 {
					code = rp.ErrorCode
				}
			}
		}
	}
	e, _ := kerr.ErrorForCode(code).(*kerr.Error)
	switch {
	case e == nil:
		return nil
	case e == kerr.ProducerFenced:
		// A produce reports a stale epoch as Kafka's partition leaders
		// do (see txn.AddRequest.Produce).
		e = kerr.InvalidProducerEpoch
	case e == kerr.NotCoordinator:
		e = kerr.CoordinatorNotAvailable
	}
	return describe(e)
}

// errGroupConfigsNotHere answers a GROUP config request that reached a
// node without the coordinators after forwarding (they moved meanwhile).
var errGroupConfigsNotHere = &kerrError{kerr.NotCoordinator, "group configs are kept by the node running the group coordinators"}

// groupConfigsElsewhere reports whether this node must forward a GROUP
// config request: group configs live in the share coordinator's state,
// which only the node running the coordinators has, while admin tools
// send config requests to any node (Kafka's brokers forward them to the
// controller). A request that is itself forwarded is answered here
// (NOT_COORDINATOR while the coordinators move) rather than sent on again.
func (b *Broker) groupConfigsElsewhere(r *server.Request) bool {
	return b.clustered() && !b.hosting() && !b.fromPeer(r)
}

// forwardGroupConfigs sends req, about GROUP resources only, to the node
// running the coordinators. The caller has authorized the user; that
// node checks only that the request comes from a node (CLUSTER_ACTION,
// as for markers).
func (b *Broker) forwardGroupConfigs(req kmsg.Request) (kmsg.Response, int32, error) {
	node := b.coordinatorNode(0) // the offsets partition's leader hosts them all (coordhost.go)
	switch {
	case node < 0:
		return nil, node, &kerrError{kerr.CoordinatorNotAvailable, "no node runs the group coordinators now (their partition has no leader)"}
	case node == b.cfg.NodeID:
		return nil, node, &kerrError{kerr.TypedErrorForCode(b.notHostingCode()), "the group coordinators are loading on this node"}
	}
	peer, err := b.peer(node)
	if err != nil {
		return nil, node, &kerrError{kerr.CoordinatorNotAvailable, fmt.Sprintf("group configs are kept by node %d: %v", node, err)}
	}
	ctx, cancel := context.WithTimeout(b.ctx, peerTimeout)
	defer cancel()
	resp, err := peer.Request(ctx, req)
	if err != nil {
		return nil, node, &kerrError{kerr.CoordinatorNotAvailable, fmt.Sprintf("forwarding to node %d, which keeps group configs: %v", node, err)}
	}
	return resp, node, nil
}

// forwardedError turns node's answer for a forwarded resource back into
// the error the local handler reports. The user passed this node's check,
// so a refusal there is this node's: its principal lacks CLUSTER_ACTION.
func forwardedError(node int32, code int16, msg *string) error {
	if code == 0 {
		return nil
	}
	e := kerr.TypedErrorForCode(code)
	if e == nil {
		e = kerr.UnknownServerError
	}
	m := e.Message
	if msg != nil {
		m = *msg
	}
	if e == kerr.GroupAuthorizationFailed {
		m = fmt.Sprintf("node %d, which keeps group configs, refused this node's forwarded request: the inter-broker listener's principal needs CLUSTER_ACTION", node)
	}
	return &kerrError{e, m}
}

// peerAnswer is one resource of a forwarded request's answer.
type peerAnswer struct {
	name    string
	code    int16
	msg     *string
	configs []kmsg.DescribeConfigsResponseResourceConfig // DescribeConfigs only
}

// forwardedAnswer is what the local handler reports for one forwarded
// resource.
type forwardedAnswer struct {
	err     error
	configs []kmsg.DescribeConfigsResponseResourceConfig
}

// forwardGroupResources sends req, holding the GROUP resources named
// names (in order), to the coordinators' node in one round trip, however
// many there are, and returns each one's answer; answers reads the
// response's resources.
func (b *Broker) forwardGroupResources(req kmsg.Request, names []string, answers func(kmsg.Response) []peerAnswer) []forwardedAnswer {
	out := make([]forwardedAnswer, len(names))
	resp, node, err := b.forwardGroupConfigs(req)
	if err == nil {
		got := answers(resp)
		if len(got) != len(names) {
			err = &kerrError{kerr.UnknownServerError, fmt.Sprintf("node %d answered %d resources for %d", node, len(got), len(names))}
		} else {
			for k, a := range got {
				if a.name != names[k] {
					out[k].err = &kerrError{kerr.UnknownServerError, fmt.Sprintf("node %d answered resource %q for %q", node, a.name, names[k])}
					continue
				}
				out[k] = forwardedAnswer{err: forwardedError(node, a.code, a.msg), configs: a.configs}
			}
		}
	}
	if err != nil {
		for k := range out {
			out[k].err = err
		}
	}
	return out
}

// forwardsGroupConfigs reports whether a config request names a GROUP
// resource this node must forward, so that its answer waits on the
// connection's writer, not on the reader. The request has
// n resources, the type of resource i given by typ.
func (b *Broker) forwardsGroupConfigs(r *server.Request, n int, typ func(i int) int8) bool {
	if !b.groupConfigsElsewhere(r) {
		return false
	}
	for i := range n {
		if typ(i) == resourceGroup {
			return true
		}
	}
	return false
}
