package cluster

// Brokers of a cluster and where partitions live.

import (
	"errors"
	"fmt"
	"slices"
)

// ErrStaleBrokerEpoch is a fence or unfence of a registration the broker
// has since replaced.
var ErrStaleBrokerEpoch = errors.New("stale broker epoch")

// ErrInvalidReplicaAssignment is a replica list the cluster cannot hold
// (Kafka's INVALID_REPLICA_ASSIGNMENT).
var ErrInvalidReplicaAssignment = errors.New("invalid replica assignment")

// ErrNoBrokers is a placement with no unfenced broker to place on.
var ErrNoBrokers = errors.New("no unfenced broker to place partitions on")

// Broker is one broker's registration in a cluster.
type Broker struct {
	ID int32 `json:"id"`
	// Incarnation is the registering data directory's id: a broker whose
	// directory was replaced registers as a new incarnation.
	Incarnation string `json:"incarnation"`
	// Epoch grows with every registration of the broker; fencing names
	// the epoch it decided about.
	Epoch     int64      `json:"epoch"`
	Listeners []Endpoint `json:"listeners"`
	Rack      string     `json:"rack,omitempty"`
	// Fenced brokers lead nothing: the controller fences a broker that
	// stopped heartbeating and unfences it when it is back.
	Fenced bool `json:"fenced,omitempty"`
}

// Endpoint is one advertised listener of a broker.
type Endpoint struct {
	Name             string `json:"name"`
	Host             string `json:"host"`
	Port             int32  `json:"port"`
	SecurityProtocol string `json:"security_protocol"`
}

// register adds or replaces a registration; the epoch grows across them.
func (s *state) register(b *Broker) *Broker {
	nb := *b
	nb.Listeners = slices.Clone(b.Listeners)
	nb.Epoch = 1
	if old, ok := s.brokers[b.ID]; ok {
		nb.Epoch = old.Epoch + 1
	}
	nb.Fenced = false
	s.brokers[nb.ID] = &nb
	return &nb
}

// checkReplicas checks the replica lists of n new partitions: none on a
// single node (no brokers registered), else one list per partition naming
// registered brokers, each at most once.
func (s *state) checkReplicas(replicas [][]int32, n int32) error {
	if len(s.brokers) == 0 {
		if len(replicas) > 0 {
			return fmt.Errorf("%w: replicas given, but no broker is registered", ErrInvalidReplicaAssignment)
		}
		return nil
	}
	if int32(len(replicas)) != n {
		return fmt.Errorf("%w: %d replica lists for %d partitions", ErrInvalidReplicaAssignment, len(replicas), n)
	}
	for i, rs := range replicas {
		if len(rs) == 0 {
			return fmt.Errorf("%w: partition %d has no replica", ErrInvalidReplicaAssignment, i)
		}
		for j, id := range rs {
			if _, ok := s.brokers[id]; !ok {
				return fmt.Errorf("%w: replica %d is not a registered broker", ErrInvalidReplicaAssignment, id)
			}
			if slices.Contains(rs[:j], id) {
				return fmt.Errorf("%w: replica %d listed twice", ErrInvalidReplicaAssignment, id)
			}
		}
	}
	return nil
}

func cloneReplicas(rs [][]int32) [][]int32 {
	if rs == nil {
		return nil
	}
	out := make([][]int32, len(rs))
	for i, r := range rs {
		out[i] = slices.Clone(r)
	}
	return out
}

// Brokers returns the registered brokers by id.
func (c *Catalog) Brokers() []*Broker {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*Broker, 0, len(c.st.brokers))
	for _, b := range c.st.brokers {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *Broker) int { return int(a.ID - b.ID) })
	return out
}

// Broker returns one registration.
func (c *Catalog) Broker(id int32) (*Broker, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	b, ok := c.st.brokers[id]
	return b, ok
}

// Place chooses replicas for n new partitions of replication factor rf
// among the unfenced brokers: round robin from start, so that a topic's
// partitions spread over the brokers, each partition's replicas on
// distinct ones.
func Place(brokers []*Broker, n, rf int32, start int) ([][]int32, error) {
	var live []int32
	for _, b := range brokers {
		if !b.Fenced {
			live = append(live, b.ID)
		}
	}
	slices.Sort(live)
	if len(live) == 0 {
		return nil, ErrNoBrokers
	}
	if int(rf) > len(live) {
		return nil, fmt.Errorf("%w: replication factor %d is more than the %d unfenced brokers", ErrInvalidReplicationFactor, rf, len(live))
	}
	out := make([][]int32, n)
	for p := range out {
		rs := make([]int32, rf)
		for r := range rs {
			rs[r] = live[(start+p+r)%len(live)]
		}
		out[p] = rs
	}
	return out, nil
}

// ErrInvalidReplicationFactor is a replication factor the cluster cannot
// place.
var ErrInvalidReplicationFactor = errors.New("invalid replication factor")

// RegisterBroker records a broker's registration and returns it with its
// new epoch; the broker is unfenced.
func (c *Catalog) RegisterBroker(b Broker) (*Broker, error) {
	res, err := c.commit(Command{Op: OpRegisterBroker, Broker: &b})
	if err != nil {
		return nil, err
	}
	return res.(*Broker), nil
}

// FenceBroker fences (fence true) or unfences a broker's registration of
// the given epoch; ErrStaleBrokerEpoch if it registered again since.
func (c *Catalog) FenceBroker(id int32, epoch int64, fence bool) error {
	op := OpUnfenceBroker
	if fence {
		op = OpFenceBroker
	}
	_, err := c.commit(Command{Op: op, BrokerID: id, BrokerEpoch: epoch})
	return err
}

// ClusterProducerIDBase is where the producer-id blocks reserved for nodes
// start: the transaction coordinator's own ids count up from 1 and never
// get there.
const ClusterProducerIDBase = 1 << 50

// AllocateProducerIDs reserves count producer ids for node and returns
// the first; no id is reserved twice.
func (c *Catalog) AllocateProducerIDs(node int32, count int64) (int64, error) {
	res, err := c.commit(Command{Op: OpAllocateProducerIDs, BrokerID: node, Count: count})
	if err != nil {
		return -1, err
	}
	return res.(int64), nil
}
