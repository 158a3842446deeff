package group

// Durable classic membership.
//
// Every completed rebalance (the leader's SyncGroup), every static member
// replacement that skips a rebalance, and every group that empties writes
// the group's generation, protocol, leader and members (with their
// subscription and assignment) to __consumer_offsets, and the SyncGroup /
// JoinGroup answers wait until that record is durable. A restarted broker
// therefore knows every member of the last completed generation: the
// members keep heartbeating and committing as if nothing happened, instead
// of rejoining a fresh group whose new leader hands their partitions to
// someone else while they are still processing them (two owners of one
// partition, and commit-before-processing consumers then process records
// twice). Loaded members get a fresh session timeout from the load.

import (
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// membershipRecord restates g's current classic membership.
func (m *Machine) membershipRecord(g *group) record {
	v := kmsg.NewGroupMetadataValue()
	v.Version = 3
	v.ProtocolType = g.protocolType
	v.Generation = g.generation
	if g.protocolName != "" {
		v.Protocol = kmsg.StringPtr(g.protocolName)
	}
	if g.leader != "" {
		v.Leader = kmsg.StringPtr(g.leader)
	}
	v.CurrentStateTimestamp = m.now.UnixMilli()
	for _, id := range g.order {
		mem := g.members[id]
		vm := kmsg.NewGroupMetadataValueMember()
		vm.MemberID = id
		vm.InstanceID = cloneStr(mem.instanceID)
		vm.ClientID, vm.ClientHost = mem.clientID, mem.host
		vm.RebalanceTimeoutMillis = int32(mem.rebalanceTimeout / time.Millisecond)
		vm.SessionTimeoutMillis = int32(mem.sessionTimeout / time.Millisecond)
		vm.Subscription = append([]byte{}, mem.metadataFor(g.protocolName)...)
		vm.Assignment = append([]byte{}, mem.assignment...)
		v.Members = append(v.Members, vm)
	}
	return record{kind: recGroupMeta, group: g.name, meta: &v}
}

// persistMembership writes g's membership; replies wait for it.
func (m *Machine) persistMembership(g *group, replies ...Reply) {
	r := m.membershipRecord(g)
	g.meta = r.meta
	if len(r.meta.Members) == 0 {
		g.meta = nil // an empty group's record need not outlive a snapshot
	}
	m.persist([]record{r}, replies...)
}

// loadMembership rebuilds a classic group's membership from a replayed
// record: the group is Stable in the recorded generation (Empty if it had
// no members), and every member's session starts now.
func (m *Machine) loadMembership(r *record) {
	g := m.groups[r.group]
	if r.delete {
		if g != nil {
			m.clearClassicMembers(g)
			g.meta = nil
			g.setState(stateDead, m.now) // deleted; gone once its offsets are
			m.maybeDropGroup(g)
		}
		return
	}
	v := r.meta
	if v.Generation > m.maxGeneration {
		m.maxGeneration = v.Generation
	}
	if g == nil {
		g = m.groupOrNew(r.group)
	}
	if g.kind == kindConsumer && g.hasMembers() {
		return // never written so: a name changes protocol only when empty
	}
	g.cg, g.cmeta = nil, nil
	m.clearClassicMembers(g)
	g.generation = max(g.generation, v.Generation)
	g.protocolType = v.ProtocolType
	g.protocolName, g.leader = "", ""
	if v.Protocol != nil {
		g.protocolName = *v.Protocol
	}
	if len(v.Members) == 0 {
		g.meta = nil
		if g.state != stateDead {
			g.setState(stateEmpty, m.now)
		}
		m.maybeDropGroup(g)
		return
	}
	if v.Leader != nil {
		g.leader = *v.Leader
	}
	g.kind = kindClassic
	g.setState(stateStable, m.now)
	for _, vm := range v.Members {
		if vm.MemberID == "" || g.members[vm.MemberID] != nil {
			continue // never written so; member ids must stay unique in g.order
		}
		mem := &member{
			id: vm.MemberID, instanceID: cloneStr(vm.InstanceID), clientID: vm.ClientID, host: vm.ClientHost,
			sessionTimeout:   time.Duration(vm.SessionTimeoutMillis) * time.Millisecond,
			rebalanceTimeout: time.Duration(max(vm.RebalanceTimeoutMillis, vm.SessionTimeoutMillis)) * time.Millisecond,
			protocolType:     v.ProtocolType,
			protocols:        []kmsg.JoinGroupRequestProtocol{{Name: g.protocolName, Metadata: vm.Subscription}},
			assignment:       vm.Assignment,
			synced:           true,
		}
		g.members[mem.id] = mem
		g.order = append(g.order, mem.id)
		if mem.instanceID != nil {
			g.static[*mem.instanceID] = mem.id
		}
		m.armSession(g, mem)
	}
	g.meta = v
}

// clearClassicMembers forgets classic members without answering anyone
// (used only while replaying, when nobody is waiting).
func (m *Machine) clearClassicMembers(g *group) {
	g.members = map[string]*member{}
	g.order = nil
	g.static = map[string]string{}
	g.joinTimer, g.syncTimer = 0, 0
}
