package group

// Group administration: DescribeGroups, ListGroups, DeleteGroups.

import (
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func sortInt32s(s []int32) { sort.Slice(s, func(i, j int) bool { return s[i] < s[j] }) }

func sortFetchTopics(ts []fetchTopic) {
	sort.Slice(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
}

func (m *Machine) describeGroups(req *kmsg.DescribeGroupsRequest) *kmsg.DescribeGroupsResponse {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, name := range req.Groups {
		rg := kmsg.NewDescribeGroupsResponseGroup()
		rg.Group = name
		rg.AuthorizedOperations = math.MinInt32
		g := m.groups[name]
		if name == "" {
			rg.ErrorCode = kerr.InvalidGroupID.Code
		}
		if g == nil || g.state == stateDead {
			rg.State = stateDead.String()
			if req.Version >= 6 {
				// KIP-1043: unknown groups are an error from v6 on.
				rg.ErrorCode = kerr.GroupIDNotFound.Code
				rg.ErrorMessage = kmsg.StringPtr("Group " + name + " not found.")
			}
			resp.Groups = append(resp.Groups, rg)
			continue
		}
		rg.State = g.state.String()
		if g.kind == kindConsumer {
			m.describeConsumerAsClassic(g, &rg)
			resp.Groups = append(resp.Groups, rg)
			continue
		}
		rg.ProtocolType = g.protocolType
		stable := g.state == stateStable
		if stable {
			rg.Protocol = g.protocolName
		}
		for _, id := range g.order {
			mem := g.members[id]
			rm := kmsg.NewDescribeGroupsResponseGroupMember()
			rm.MemberID = id
			rm.InstanceID = cloneStr(mem.instanceID)
			rm.ClientID, rm.ClientHost = mem.clientID, mem.host
			if stable {
				// As Kafka: metadata and assignment only once they are
				// settled.
				rm.ProtocolMetadata = mem.metadataFor(g.protocolName)
				rm.MemberAssignment = mem.assignment
			}
			rg.Members = append(rg.Members, rm)
		}
		resp.Groups = append(resp.Groups, rg)
	}
	return resp
}

// describeConsumerAsClassic presents a KIP-848 group the way classic tools
// expect (Kafka does the same): protocol type "consumer", the assignor as
// protocol, and each member's subscription and assignment encoded as the
// consumer protocol's metadata and assignment.
func (m *Machine) describeConsumerAsClassic(g *group, rg *kmsg.DescribeGroupsResponseGroup) {
	cg := g.cg
	rg.ProtocolType = "consumer"
	rg.Protocol = cg.assignor
	var all []TopicInfo
	if cg.usesRegex() {
		all = m.topics.Topics()
	}
	for _, id := range slices.Sorted(maps.Keys(cg.members)) {
		cm := cg.members[id]
		rm := kmsg.NewDescribeGroupsResponseGroupMember()
		rm.MemberID = id
		rm.InstanceID = cloneStr(cm.instanceID)
		rm.ClientID, rm.ClientHost = cm.clientID, cm.host
		meta := kmsg.ConsumerMemberMetadata{Version: 0}
		for _, t := range m.subscribed(cm, all) {
			meta.Topics = append(meta.Topics, t.Name)
		}
		rm.ProtocolMetadata = meta.AppendTo(nil)
		asg := kmsg.ConsumerMemberAssignment{Version: 0}
		for _, tid := range cm.assigned.ids() {
			t, ok := m.topics.TopicByID(tid)
			if !ok {
				continue
			}
			at := kmsg.NewConsumerMemberAssignmentTopic()
			at.Topic = t.Name
			at.Partitions = append([]int32(nil), cm.assigned[tid]...)
			asg.Topics = append(asg.Topics, at)
		}
		rm.MemberAssignment = asg.AppendTo(nil)
		rg.Members = append(rg.Members, rm)
	}
}

func (m *Machine) listGroups(req *kmsg.ListGroupsRequest) *kmsg.ListGroupsResponse {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	names := m.groupNames()
	matches := func(filter []string, v string) bool {
		if len(filter) == 0 {
			return true
		}
		for _, f := range filter {
			if strings.EqualFold(f, v) {
				return true
			}
		}
		return false
	}
	for _, name := range names {
		g := m.groups[name]
		if g.state == stateDead {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group = name
		lg.ProtocolType = g.protocolType
		lg.GroupState = g.state.String()
		lg.GroupType = g.kind.String()
		if !matches(req.StatesFilter, lg.GroupState) || !matches(req.TypesFilter, lg.GroupType) {
			continue
		}
		resp.Groups = append(resp.Groups, lg)
	}
	return resp
}

func (m *Machine) deleteGroups(tok Token, req *kmsg.DeleteGroupsRequest) {
	resp := req.ResponseKind().(*kmsg.DeleteGroupsResponse)
	var recs []record
	for _, name := range req.Groups {
		rg := kmsg.NewDeleteGroupsResponseGroup()
		rg.Group = name
		g := m.groups[name]
		switch {
		case name == "":
			rg.ErrorCode = kerr.InvalidGroupID.Code
		case g == nil || g.state == stateDead:
			rg.ErrorCode = kerr.GroupIDNotFound.Code
		case g.hasMembers():
			rg.ErrorCode = kerr.NonEmptyGroup.Code
		default:
			// Dead at once (joins and commits are refused), gone once
			// the tombstones are durable.
			g.setState(stateDead, m.now)
			if g.meta != nil || g.kind == kindClassic {
				recs = append(recs, record{kind: recGroupMeta, group: name, delete: true})
				g.meta = nil
			}
			if g.cmeta != nil {
				recs = append(recs, record{kind: recConsumerGroup, group: name, delete: true})
				g.cmeta = nil
			}
			g.eachOffset(func(topic string, p int32, _ Offset) {
				recs = append(recs, record{kind: recOffset, group: name, topic: topic, partition: p, delete: true})
			})
			pids := make([]int64, 0, len(g.txn))
			for pid := range g.txn {
				pids = append(pids, pid)
			}
			sort.Slice(pids, func(i, j int) bool { return pids[i] < pids[j] })
			for _, pid := range pids {
				for _, o := range g.txn[pid].offsets {
					recs = append(recs, record{kind: recTxnOffset, group: name, pid: pid, topic: o.topic, partition: o.partition, delete: true})
				}
			}
			m.maybeDropGroup(g)
		}
		resp.Groups = append(resp.Groups, rg)
	}
	m.persist(recs, Reply{Token: tok, Response: resp})
}
