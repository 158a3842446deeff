package cluster

// Catalog changes as commands.
//
// Every change to the catalog is a Command applied to a copy of the state
// by apply, a pure function of the state and the command. A single node
// applies it and rewrites cluster.json; a cluster (the metadata quorum)
// replicates the encoded command and every node applies it in log order,
// so every decision that depends on the state (does the topic exist? is
// the new partition count larger?) is taken in apply, never only when the
// command is made. Anything random (topic ids) is chosen before, and
// travels in the command.

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/exactly/exactly/internal/acl"
)

// Op names a catalog command.
type Op string

// The catalog's commands.
const (
	OpCreateTopic             Op = "create-topic"
	OpDeleteTopic             Op = "delete-topic"
	OpDeletionDone            Op = "deletion-done"
	OpSetPartitions           Op = "set-partitions"
	OpSetTopicConfigs         Op = "set-topic-configs"
	OpSetBrokerConfigs        Op = "set-broker-configs"
	OpReserveGroupGenerations Op = "reserve-group-generations"
	OpSetClientQuotas         Op = "set-client-quotas"
	OpSetScramCredentials     Op = "set-scram-credentials"
	OpSetACLs                 Op = "set-acls"
	OpRegisterBroker          Op = "register-broker"
	OpFenceBroker             Op = "fence-broker"
	OpUnfenceBroker           Op = "unfence-broker"
	// OpInitCluster sets the cluster id once: the first one committed
	// stands.
	OpInitCluster Op = "init-cluster"
	// OpBrokerHeartbeat changes nothing; the controller notes when it
	// applied one (Catalog.OnHeartbeat) to tell live brokers from dead.
	OpBrokerHeartbeat Op = "broker-heartbeat"
	// OpAllocateProducerIDs reserves a block of producer ids for a node.
	OpAllocateProducerIDs Op = "allocate-producer-ids"
	// OpAdopt makes a single node's catalog the cluster's, its
	// partitions on that node (BrokerID): growing a single node into a
	// cluster.
	OpAdopt Op = "adopt"
)

// Command is one change to the catalog. Op says which fields it uses.
type Command struct {
	Op Op `json:"op"`
	// Topic is the topic create-topic adds, its id included.
	Topic *Topic `json:"topic,omitempty"`
	// Name is the topic of delete-topic, set-partitions and
	// set-topic-configs.
	Name string `json:"name,omitempty"`
	// ID is the deleted topic deletion-done forgets.
	ID TopicID `json:"id,omitzero"`
	// Partitions is set-partitions' new count.
	Partitions int32 `json:"partitions,omitempty"`
	// Replicas are the replicas of set-partitions' new partitions (in a
	// cluster).
	Replicas [][]int32 `json:"replicas,omitempty"`
	// Broker is register-broker's registration; fence-broker and
	// unfence-broker name the broker and the epoch they act on.
	Broker      *Broker `json:"broker,omitempty"`
	BrokerID    int32   `json:"broker_id,omitempty"`
	BrokerEpoch int64   `json:"broker_epoch,omitempty"`
	// Count is allocate-producer-ids' block size.
	Count int64 `json:"count,omitempty"`
	// Catalog is adopt's single-node catalog, in its file form.
	Catalog json.RawMessage `json:"catalog,omitempty"`
	// ClusterID is init-cluster's id.
	ClusterID string `json:"cluster_id,omitempty"`
	// Configs are set-topic-configs' overrides or set-broker-configs'
	// dynamic broker keys (replacing the previous ones).
	Configs map[string]string `json:"configs,omitempty"`
	// GroupGenerations is reserve-group-generations' new reservation.
	GroupGenerations int32 `json:"group_generations,omitempty"`
	// ClientQuotas, ScramCredentials and ACLs replace the stored ones.
	ClientQuotas     []ClientQuota                         `json:"client_quotas,omitempty"`
	ScramCredentials map[string]map[string]ScramCredential `json:"scram_credentials,omitempty"`
	ACLs             []acl.Binding                         `json:"acls,omitempty"`
	// Leaders are set-leaders' reports.
	Leaders []LeaderReport `json:"leaders,omitempty"`
}

// maxCommandBytes bounds a command read back from a replicated log: the
// largest legitimate one is a full ACL or credential set.
const maxCommandBytes = 16 << 20

// EncodeCommand is the command's replicated form.
func EncodeCommand(cmd Command) ([]byte, error) { return json.Marshal(cmd) }

// DecodeCommand parses a replicated command; anything malformed or of an
// unknown op is an error.
func DecodeCommand(data []byte) (Command, error) {
	var cmd Command
	if len(data) > maxCommandBytes {
		return cmd, fmt.Errorf("%w: %d bytes", errBadCommand, len(data))
	}
	if err := json.Unmarshal(data, &cmd); err != nil {
		return cmd, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	switch cmd.Op {
	case OpCreateTopic:
		if cmd.Topic == nil {
			return cmd, fmt.Errorf("%w: create-topic without a topic", errBadCommand)
		}
	case OpRegisterBroker:
		if cmd.Broker == nil {
			return cmd, fmt.Errorf("%w: register-broker without a registration", errBadCommand)
		}
	case OpAdopt, OpAllocateProducerIDs, OpInitCluster, OpBrokerHeartbeat, OpFenceBroker, OpUnfenceBroker, OpDeleteTopic, OpDeletionDone, OpSetPartitions, OpSetTopicConfigs, OpSetBrokerConfigs,
		OpReserveGroupGenerations, OpSetClientQuotas, OpSetScramCredentials, OpSetACLs, OpSetLeaders:
	default:
		return cmd, fmt.Errorf("%w: unknown op %q", errBadCommand, cmd.Op)
	}
	return cmd, nil
}

var errBadCommand = errors.New("cluster: malformed catalog command")

// state is the catalog's content. A state is never changed once the
// catalog holds it: apply works on a clone, so readers holding the old one
// (and a failed write, which keeps it) see a consistent catalog.
type state struct {
	clusterID string
	byName    map[string]*Topic
	byID      map[TopicID]*Topic
	dynamic   map[string]string
	groupGens int32
	quotas    []ClientQuota
	scram     map[string]map[string]ScramCredential
	acls      *acl.Index
	deleting  []*Topic
	brokers   map[int32]*Broker
	// nextProducerID is the first producer id not yet reserved for a
	// node (allocate-producer-ids).
	nextProducerID int64
}

func newState(clusterID string) *state {
	return &state{clusterID: clusterID, byName: map[string]*Topic{}, byID: map[TopicID]*Topic{},
		dynamic: map[string]string{}, acls: acl.NewIndex(nil), brokers: map[int32]*Broker{}}
}

// clone copies the containers apply changes in place; everything else
// apply replaces whole.
func (s *state) clone() *state {
	n := *s
	n.byName = maps.Clone(s.byName)
	n.byID = maps.Clone(s.byID)
	n.deleting = slices.Clip(s.deleting)
	n.brokers = maps.Clone(s.brokers)
	return &n
}

// apply changes s by cmd and returns the command's result (the topic, for
// the topic commands). s must be a clone nobody else reads.
func (s *state) apply(cmd Command) (any, error) {
	switch cmd.Op {
	case OpCreateTopic:
		t := cmd.Topic
		if err := ValidateTopicName(t.Name); err != nil {
			return nil, err
		}
		if t.Partitions < 1 || t.Partitions > maxPartitions {
			return nil, fmt.Errorf("%w: %d (1 to %d)", ErrInvalidPartitions, t.Partitions, maxPartitions)
		}
		if _, ok := s.byName[t.Name]; ok {
			return nil, fmt.Errorf("%w: %q", ErrTopicExists, t.Name)
		}
		if other, ok := s.collision(t.Name); ok {
			return nil, fmt.Errorf("%w: %q collides with existing topic %q ('.' and '_' are interchangeable in metric names)", ErrInvalidTopic, t.Name, other)
		}
		if _, ok := s.byID[t.ID]; ok || t.ID == (TopicID{}) {
			return nil, fmt.Errorf("%w: topic id %s of %q is in use", ErrInvalidTopic, t.ID, t.Name)
		}
		if err := s.checkReplicas(t.Replicas, t.Partitions); err != nil {
			return nil, fmt.Errorf("topic %q: %w", t.Name, err)
		}
		t = &Topic{Name: t.Name, ID: t.ID, Partitions: t.Partitions, Configs: cloneMap(t.Configs), Internal: t.Internal, Replicas: cloneReplicas(t.Replicas)}
		s.byName[t.Name], s.byID[t.ID] = t, t
		return t, nil
	case OpDeleteTopic:
		t, ok := s.byName[cmd.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, cmd.Name)
		}
		delete(s.byName, t.Name)
		delete(s.byID, t.ID)
		gone := *t
		for _, rs := range t.Replicas {
			for _, id := range rs {
				if !slices.Contains(gone.Pending, id) {
					gone.Pending = append(gone.Pending, id)
				}
			}
		}
		slices.Sort(gone.Pending)
		s.deleting = append(s.deleting, &gone)
		return t, nil
	case OpDeletionDone:
		s.deleting = slices.Clone(s.deleting)
		for i, t := range s.deleting {
			if t.ID != cmd.ID {
				continue
			}
			if len(t.Pending) > 0 {
				nt := *t
				nt.Pending = slices.DeleteFunc(slices.Clone(t.Pending), func(id int32) bool { return id == cmd.BrokerID })
				s.deleting[i] = &nt
			}
		}
		s.deleting = slices.DeleteFunc(s.deleting, func(t *Topic) bool {
			return t.ID == cmd.ID && len(t.Pending) == 0
		})
		return nil, nil
	case OpSetPartitions:
		return s.update(cmd.Name, func(t *Topic) error {
			if cmd.Partitions <= t.Partitions {
				return fmt.Errorf("%w: topic %q has %d partitions; the new count %d must be larger", ErrInvalidPartitions, t.Name, t.Partitions, cmd.Partitions)
			}
			if cmd.Partitions > maxPartitions {
				return fmt.Errorf("%w: %d is more than this broker allows (%d)", ErrInvalidPartitions, cmd.Partitions, maxPartitions)
			}
			if err := s.checkReplicas(cmd.Replicas, cmd.Partitions-t.Partitions); err != nil {
				return err
			}
			t.Partitions = cmd.Partitions
			if len(cmd.Replicas) > 0 {
				t.Replicas = append(cloneReplicas(t.Replicas), cloneReplicas(cmd.Replicas)...)
			}
			return nil
		})
	case OpSetTopicConfigs:
		return s.update(cmd.Name, func(t *Topic) error {
			t.Configs = cloneMap(cmd.Configs)
			return nil
		})
	case OpSetBrokerConfigs:
		s.dynamic = cloneMap(cmd.Configs)
		if s.dynamic == nil {
			s.dynamic = map[string]string{}
		}
		return nil, nil
	case OpReserveGroupGenerations:
		s.groupGens = max(s.groupGens, cmd.GroupGenerations)
		return nil, nil
	case OpSetClientQuotas:
		s.quotas = cmd.ClientQuotas
		return nil, nil
	case OpSetScramCredentials:
		s.scram = cmd.ScramCredentials
		return nil, nil
	case OpSetACLs:
		s.acls = acl.NewIndex(cmd.ACLs)
		return nil, nil
	case OpAdopt:
		return nil, s.adopt(cmd.Catalog, cmd.BrokerID)
	case OpAllocateProducerIDs:
		if cmd.Count < 1 || cmd.Count > 1<<20 {
			return nil, fmt.Errorf("%w: a block of %d producer ids", errBadCommand, cmd.Count)
		}
		first := max(s.nextProducerID, ClusterProducerIDBase)
		s.nextProducerID = first + cmd.Count
		return first, nil
	case OpInitCluster:
		if s.clusterID == "" {
			if cmd.ClusterID == "" {
				return nil, fmt.Errorf("%w: empty cluster id", errBadCommand)
			}
			s.clusterID = cmd.ClusterID
		}
		return s.clusterID, nil
	case OpSetLeaders:
		return nil, s.setLeaders(cmd.Leaders)
	case OpBrokerHeartbeat:
		if b, ok := s.brokers[cmd.BrokerID]; !ok || b.Epoch != cmd.BrokerEpoch {
			return nil, fmt.Errorf("%w: broker %d epoch %d", ErrStaleBrokerEpoch, cmd.BrokerID, cmd.BrokerEpoch)
		}
		return nil, nil
	case OpRegisterBroker:
		if cmd.Broker.ID < 0 {
			return nil, fmt.Errorf("%w: broker id %d", errBadCommand, cmd.Broker.ID)
		}
		return s.register(cmd.Broker), nil
	case OpFenceBroker, OpUnfenceBroker:
		b, ok := s.brokers[cmd.BrokerID]
		if !ok || b.Epoch != cmd.BrokerEpoch {
			// Decided about an earlier registration: the broker
			// registered again since, and that one stands.
			return nil, fmt.Errorf("%w: broker %d epoch %d", ErrStaleBrokerEpoch, cmd.BrokerID, cmd.BrokerEpoch)
		}
		nb := *b
		nb.Fenced = cmd.Op == OpFenceBroker
		s.brokers[nb.ID] = &nb
		return &nb, nil
	}
	return nil, fmt.Errorf("%w: unknown op %q", errBadCommand, cmd.Op)
}

// update replaces the topic name by a changed copy.
func (s *state) update(name string, fn func(*Topic) error) (*Topic, error) {
	old, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTopic, name)
	}
	nt := *old
	nt.Configs = cloneMap(old.Configs)
	if err := fn(&nt); err != nil {
		return nil, err
	}
	s.byName[name], s.byID[nt.ID] = &nt, &nt
	return &nt, nil
}

// collision finds an existing topic whose name Kafka's metrics would
// confuse with name ('.' vs '_').
func (s *state) collision(name string) (string, bool) {
	key := collisionKey(name)
	for other := range s.byName {
		if collisionKey(other) == key {
			return other, true
		}
	}
	return "", false
}

// ErrAdopted is an adoption the cluster already made: every topic of the
// single node's catalog is the cluster's, with the same id.
var ErrAdopted = errors.New("the single node's catalog is the cluster's already")

// adopt makes a single node's catalog the cluster's: its topics (each
// partition on node), deleted topics, configs, quotas, credentials, ACLs
// and group generation reservation. Only into a cluster without topics.
func (s *state) adopt(data []byte, node int32) error {
	single, err := decodeState(data)
	if err != nil {
		return fmt.Errorf("%w: adopt: %v", errBadCommand, err)
	}
	if _, ok := s.brokers[node]; !ok {
		return fmt.Errorf("adopting node %d's catalog: it is not a registered broker", node)
	}
	if len(s.byName) > 0 {
		for _, t := range single.byName {
			if have, ok := s.byID[t.ID]; !ok || have.Name != t.Name {
				return fmt.Errorf("adopting node %d's catalog: the cluster has topics of its own already (%d); a single node joins only a cluster without topics", node, len(s.byName))
			}
		}
		return ErrAdopted
	}
	for _, t := range single.byName {
		nt := *t
		nt.Replicas = make([][]int32, t.Partitions)
		for i := range nt.Replicas {
			nt.Replicas[i] = []int32{node}
		}
		s.byName[nt.Name], s.byID[nt.ID] = &nt, &nt
	}
	for _, t := range single.deleting {
		nt := *t
		nt.Pending = []int32{node}
		s.deleting = append(s.deleting, &nt)
	}
	s.dynamic = single.dynamic
	s.quotas = single.quotas
	s.scram = single.scram
	s.acls = single.acls
	s.groupGens = max(s.groupGens, single.groupGens)
	return nil
}
