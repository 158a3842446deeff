package group

import (
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// kind is which membership protocol a group uses. A group holding only
// offsets has none and takes the protocol of whichever member arrives first;
// a group whose members are all gone may switch protocol.
type kind uint8

const (
	kindNone     kind = iota // offsets only (admin commits, simple consumers)
	kindClassic              // JoinGroup / SyncGroup
	kindConsumer             // KIP-848 ConsumerGroupHeartbeat
)

// String is the group type as ListGroups v5 reports it.
func (k kind) String() string {
	if k == kindConsumer {
		return "consumer"
	}
	return "classic"
}

// state is a group's lifecycle state. The classic protocol uses Empty,
// PreparingRebalance, CompletingRebalance, Stable and Dead; KIP-848 groups
// use Empty, Reconciling, Stable and Dead (assignment is computed
// synchronously, so they are never Assigning).
type state uint8

const (
	stateEmpty state = iota
	statePreparing
	stateCompleting
	stateStable
	stateDead
	stateReconciling
)

// String is the state name Kafka uses on the wire.
func (s state) String() string {
	return [...]string{"Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead", "Reconciling"}[s]
}

// group is one consumer group: membership (classic or KIP-848), committed
// offsets and staged transactional offsets.
type group struct {
	name       string
	kind       kind
	state      state
	stateSince time.Time // when state last changed; offsets expiry counts from it

	// Classic protocol.
	protocolType string
	protocolName string
	generation   int32
	leader       string
	members      map[string]*member
	order        []string          // member ids in join order: leader choice, output order
	static       map[string]string // group.instance.id → member id
	pendingIDs   map[string]uint64 // KIP-394 ids handed out, not yet used → timer id
	joinTimer    uint64
	syncTimer    uint64
	// Initial rebalance delay (group.initial.rebalance.delay.ms) while
	// the first rebalance of an empty group is being delayed.
	delaying       bool
	delayRemaining time.Duration
	delayNewMember bool
	// meta is the membership last written to __consumer_offsets (nil if
	// none, or if the group was empty then); snapshots restate it.
	meta *kmsg.GroupMetadataValue
	// cmeta is the KIP-848 state last written (nil: none, or empty).
	cmeta []byte

	// KIP-848 protocol.
	cg *consumerGroup

	offsets map[string]map[int32]Offset
	txn     map[int64]*txnStage // producer id → offsets staged in its open transaction
}

func newGroup(name string, now time.Time) *group {
	return &group{
		name: name, stateSince: now,
		members: map[string]*member{}, static: map[string]string{}, pendingIDs: map[string]uint64{},
	}
}

func (g *group) setState(s state, now time.Time) {
	if g.state != s {
		g.state = s
		g.stateSince = now
	}
}

// hasMembers reports whether anyone is in the group (either protocol).
func (g *group) hasMembers() bool {
	return len(g.members) > 0 || (g.cg != nil && len(g.cg.members) > 0)
}

func (g *group) setOffset(topic string, p int32, o Offset) {
	if g.offsets == nil {
		g.offsets = map[string]map[int32]Offset{}
	}
	ps := g.offsets[topic]
	if ps == nil {
		ps = map[int32]Offset{}
		g.offsets[topic] = ps
	}
	ps[p] = o
}

func (g *group) deleteOffset(topic string, p int32) {
	ps := g.offsets[topic]
	delete(ps, p)
	if len(ps) == 0 {
		delete(g.offsets, topic)
	}
}

func (g *group) offset(topic string, p int32) (Offset, bool) {
	o, ok := g.offsets[topic][p]
	return o, ok
}

// eachOffset visits committed offsets sorted by topic and partition.
func (g *group) eachOffset(fn func(topic string, p int32, o Offset)) {
	topics := make([]string, 0, len(g.offsets))
	for t := range g.offsets {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		ps := g.offsets[t]
		parts := make([]int32, 0, len(ps))
		for p := range ps {
			parts = append(parts, p)
		}
		sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
		for _, p := range parts {
			fn(t, p, ps[p])
		}
	}
}

// hasPendingTxn reports whether any open transaction staged an offset for
// the partition (OffsetFetch RequireStable answers UNSTABLE_OFFSET_COMMIT).
func (g *group) hasPendingTxn(topic string, p int32) bool {
	for _, st := range g.txn {
		for _, o := range st.offsets {
			if o.topic == topic && o.partition == p {
				return true
			}
		}
	}
	return false
}

// txnStage is one producer's offsets staged in its open transaction,
// visible only once a commit marker applies them.
type txnStage struct {
	epoch   int16
	offsets []stagedOffset // in staging order; one entry per partition
}

type stagedOffset struct {
	topic     string
	partition int32
	val       Offset
}

func (st *txnStage) set(topic string, p int32, o Offset) {
	for i := range st.offsets {
		if st.offsets[i].topic == topic && st.offsets[i].partition == p {
			st.offsets[i].val = o
			return
		}
	}
	st.offsets = append(st.offsets, stagedOffset{topic: topic, partition: p, val: o})
}

func (st *txnStage) remove(topic string, p int32) {
	for i := range st.offsets {
		if st.offsets[i].topic == topic && st.offsets[i].partition == p {
			st.offsets = append(st.offsets[:i], st.offsets[i+1:]...)
			return
		}
	}
}
