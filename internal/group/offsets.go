package group

// Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete.
//
// A commit is validated against the group's membership (generation or
// member epoch), turned into records and handed to the caller to persist;
// it becomes visible to OffsetFetch, and is acknowledged, only once those
// records are durable.

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func fillCommitResponse(req *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, code int16) {
	resp.Topics = resp.Topics[:0]
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetCommitResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetCommitResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
}

// validateClassicCommit applies Kafka's checks for a commit to a classic
// (or offsets-only) group. txn relaxes them as for TxnOffsetCommit, where a
// rebalance in progress is no reason to refuse.
func (m *Machine) validateClassicCommit(g *group, memberID string, generation int32, instanceID *string, txn bool) int16 {
	if g == nil {
		if generation < 0 {
			return 0 // not using group management: the group is created
		}
		return kerr.IllegalGeneration.Code
	}
	if g.state == stateDead {
		return kerr.CoordinatorNotAvailable.Code
	}
	if generation < 0 && g.state == stateEmpty {
		return 0
	}
	if txn {
		if instanceID != nil {
			if owner, ok := g.static[*instanceID]; ok && owner != memberID {
				return kerr.FencedInstanceID.Code
			}
		}
		if memberID != "" && g.members[memberID] == nil {
			return kerr.UnknownMemberID.Code
		}
		if generation >= 0 && generation != g.generation {
			return kerr.IllegalGeneration.Code
		}
		return 0
	}
	if generation >= 0 || memberID != "" || instanceID != nil {
		if code := g.validateMember(memberID, instanceID); code != 0 {
			return code
		}
		if generation != g.generation {
			return kerr.IllegalGeneration.Code
		}
	} else if g.hasMembers() {
		return kerr.UnknownMemberID.Code
	}
	if g.state == stateCompleting {
		return kerr.RebalanceInProgress.Code
	}
	return 0
}

func (m *Machine) offsetCommit(tok Token, req *kmsg.OffsetCommitRequest) {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	fillCommitResponse(req, resp, 0)
	generation := req.Generation
	if req.Version == 0 {
		generation = -1
	}
	g := m.groups[req.Group]
	var code int16
	var perPartition func([16]byte, int32) int16
	switch {
	case req.Group == "":
		code = kerr.InvalidGroupID.Code
	case g != nil && g.kind == kindConsumer:
		code, perPartition = m.validateConsumerCommit(g, req.MemberID, generation, req.Version, false)
	default:
		code = m.validateClassicCommit(g, req.MemberID, generation, req.InstanceID, false)
	}
	if code != 0 {
		fillCommitResponse(req, resp, code)
		m.reply(tok, resp)
		return
	}
	if g != nil && g.kind == kindClassic {
		if mem := g.members[req.MemberID]; mem != nil {
			m.armSession(g, mem)
		}
	}
	var recs []record
	for ti, rt := range req.Topics {
		var t TopicInfo
		var known bool
		unknown := kerr.UnknownTopicOrPartition.Code
		if req.Version >= 10 {
			t, known = m.topics.TopicByID(rt.TopicID)
			unknown = kerr.UnknownTopicID.Code
		} else {
			t, known = m.topics.TopicByName(rt.Topic)
		}
		for pi, rp := range rt.Partitions {
			sp := &resp.Topics[ti].Partitions[pi]
			meta := ""
			if rp.Metadata != nil {
				meta = *rp.Metadata
			}
			switch {
			case !known:
				sp.ErrorCode = unknown
				continue
			case rp.Partition < 0 || rp.Partition >= t.Partitions:
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				continue
			case len(meta) > m.cfg.MaxMetadataBytes:
				sp.ErrorCode = kerr.OffsetMetadataTooLarge.Code
				continue
			}
			if perPartition != nil {
				if c := perPartition(t.ID, rp.Partition); c != 0 {
					sp.ErrorCode = c
					continue
				}
			}
			le := rp.LeaderEpoch
			if req.Version < 6 {
				le = -1
			}
			recs = append(recs, record{kind: recOffset, group: req.Group, topic: t.Name, partition: rp.Partition,
				val: Offset{Offset: rp.Offset, LeaderEpoch: le, Metadata: meta, CommitTime: m.now.UnixMilli()}})
		}
	}
	m.persist(recs, Reply{Token: tok, Response: resp})
}

// fetchTopic is one topic of an OffsetFetch, by name or (v10+) id.
type fetchTopic struct {
	name       string
	id         [16]byte
	partitions []int32
}

type fetchedPartition struct {
	partition   int32
	offset      int64
	leaderEpoch int32
	metadata    string
	code        int16
}

type fetchedTopic struct {
	name       string
	id         [16]byte
	partitions []fetchedPartition
}

// fetchGroup answers one group of an OffsetFetch. topics nil means every
// topic with a committed offset.
func (m *Machine) fetchGroup(name string, memberID *string, memberEpoch int32, topics []fetchTopic, byID, requireStable bool) (int16, []fetchedTopic) {
	if name == "" {
		return kerr.InvalidGroupID.Code, nil
	}
	g := m.groups[name]
	if g != nil && g.state == stateDead {
		g = nil // being deleted: nothing to see
	}
	if memberID != nil && *memberID != "" && memberEpoch >= 0 && g != nil && g.kind == kindConsumer {
		cm := g.cg.members[*memberID]
		if cm == nil || cm.left {
			return kerr.UnknownMemberID.Code, nil
		}
		if memberEpoch != cm.epoch {
			return kerr.StaleMemberEpoch.Code, nil
		}
	}
	if topics == nil && g != nil {
		for t, ps := range g.offsets {
			ft := fetchTopic{name: t}
			if byID {
				info, ok := m.topics.TopicByName(t)
				if !ok {
					continue
				}
				ft.id = info.ID
			}
			for p := range ps {
				ft.partitions = append(ft.partitions, p)
			}
			sortInt32s(ft.partitions)
			topics = append(topics, ft)
		}
		sortFetchTopics(topics)
	}
	var out []fetchedTopic
	for _, ft := range topics {
		rt := fetchedTopic{name: ft.name, id: ft.id}
		name := ft.name
		idKnown := true
		if byID {
			info, ok := m.topics.TopicByID(ft.id)
			name, idKnown = info.Name, ok
		}
		for _, p := range ft.partitions {
			fp := fetchedPartition{partition: p, offset: -1, leaderEpoch: -1}
			switch {
			case !idKnown:
				fp.code = kerr.UnknownTopicID.Code
			case g == nil:
			case requireStable && g.hasPendingTxn(name, p):
				fp.code = kerr.UnstableOffsetCommit.Code
			default:
				if o, ok := g.offset(name, p); ok {
					fp.offset, fp.leaderEpoch, fp.metadata = o.Offset, o.LeaderEpoch, o.Metadata
				}
			}
			rt.partitions = append(rt.partitions, fp)
		}
		out = append(out, rt)
	}
	return 0, out
}

// offsetFetchAfterPending answers an OffsetFetch once every record already
// handed out for its groups is applied: requests are served in arrival
// order, so a fetch that follows a commit (say, pipelined on the same
// connection) must not miss it just because its fsync is still running.
func (m *Machine) offsetFetchAfterPending(tok Token, req *kmsg.OffsetFetchRequest) {
	groups := map[string]bool{req.Group: req.Version < 8}
	for _, rg := range req.Groups {
		groups[rg.Group] = true
	}
	for i := len(m.pending) - 1; i >= 0; i-- {
		pp := &m.pending[i]
		for _, r := range pp.recs {
			if groups[r.group] {
				pp.reads = append(pp.reads, func() Reply { return Reply{Token: tok, Response: m.offsetFetch(req)} })
				return
			}
		}
	}
	m.reply(tok, m.offsetFetch(req))
}

func (m *Machine) offsetFetch(req *kmsg.OffsetFetchRequest) *kmsg.OffsetFetchResponse {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if req.Version < 8 {
		var topics []fetchTopic
		if req.Topics != nil || req.Version < 2 {
			topics = []fetchTopic{}
			for _, rt := range req.Topics {
				topics = append(topics, fetchTopic{name: rt.Topic, partitions: rt.Partitions})
			}
		}
		code, fetched := m.fetchGroup(req.Group, nil, -1, topics, false, req.RequireStable)
		if code != 0 && req.Version < 2 {
			// No group-level error field before v2: report it per partition.
			for _, ft := range topics {
				for _, p := range ft.partitions {
					fetched = appendFetched(fetched, ft.name, fetchedPartition{partition: p, offset: -1, leaderEpoch: -1, code: code})
				}
			}
		}
		resp.ErrorCode = code
		for _, ft := range fetched {
			st := kmsg.NewOffsetFetchResponseTopic()
			st.Topic = ft.name
			for _, fp := range ft.partitions {
				sp := kmsg.NewOffsetFetchResponseTopicPartition()
				sp.Partition, sp.Offset, sp.LeaderEpoch, sp.ErrorCode = fp.partition, fp.offset, fp.leaderEpoch, fp.code
				sp.Metadata = kmsg.StringPtr(fp.metadata)
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	}
	byID := req.Version >= 10
	for _, rg := range req.Groups {
		var topics []fetchTopic
		if rg.Topics != nil {
			topics = []fetchTopic{}
			for _, rt := range rg.Topics {
				topics = append(topics, fetchTopic{name: rt.Topic, id: rt.TopicID, partitions: rt.Partitions})
			}
		}
		code, fetched := m.fetchGroup(rg.Group, rg.MemberID, rg.MemberEpoch, topics, byID, req.RequireStable)
		sg := kmsg.NewOffsetFetchResponseGroup()
		sg.Group = rg.Group
		sg.ErrorCode = code
		for _, ft := range fetched {
			st := kmsg.NewOffsetFetchResponseGroupTopic()
			st.Topic, st.TopicID = ft.name, ft.id
			for _, fp := range ft.partitions {
				sp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				sp.Partition, sp.Offset, sp.LeaderEpoch, sp.ErrorCode = fp.partition, fp.offset, fp.leaderEpoch, fp.code
				sp.Metadata = kmsg.StringPtr(fp.metadata)
				st.Partitions = append(st.Partitions, sp)
			}
			sg.Topics = append(sg.Topics, st)
		}
		resp.Groups = append(resp.Groups, sg)
	}
	return resp
}

func appendFetched(out []fetchedTopic, name string, fp fetchedPartition) []fetchedTopic {
	for i := range out {
		if out[i].name == name {
			out[i].partitions = append(out[i].partitions, fp)
			return out
		}
	}
	return append(out, fetchedTopic{name: name, partitions: []fetchedPartition{fp}})
}

// subscribedTopics is what the group's members currently subscribe to
// (OffsetDelete refuses to delete those offsets).
func (m *Machine) subscribedTopics(g *group) map[string]bool {
	out := map[string]bool{}
	switch g.kind {
	case kindClassic:
		if g.protocolType != "consumer" {
			return out
		}
		for _, mem := range g.members {
			for _, p := range mem.protocols {
				if g.protocolName != "" && p.Name != g.protocolName {
					continue
				}
				var meta kmsg.ConsumerMemberMetadata
				if meta.ReadFrom(p.Metadata) == nil {
					for _, t := range meta.Topics {
						out[t] = true
					}
				}
			}
		}
	case kindConsumer:
		var all []TopicInfo
		if g.cg.usesRegex() {
			all = m.topics.Topics()
		}
		for _, cm := range g.cg.members {
			for _, t := range cm.topics {
				out[t] = true
			}
			for _, t := range m.subscribed(cm, all) {
				out[t.Name] = true
			}
		}
	}
	return out
}

func (m *Machine) offsetDelete(tok Token, req *kmsg.OffsetDeleteRequest) {
	resp := req.ResponseKind().(*kmsg.OffsetDeleteResponse)
	g := m.groups[req.Group]
	switch {
	case req.Group == "":
		resp.ErrorCode = kerr.InvalidGroupID.Code
	case g == nil || g.state == stateDead:
		resp.ErrorCode = kerr.GroupIDNotFound.Code
	case g.kind == kindClassic && g.hasMembers() && g.protocolType != "consumer":
		resp.ErrorCode = kerr.NonEmptyGroup.Code
	}
	if resp.ErrorCode != 0 {
		m.reply(tok, resp)
		return
	}
	subscribed := map[string]bool{}
	if g.hasMembers() {
		subscribed = m.subscribedTopics(g)
	}
	var recs []record
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetDeleteResponseTopic()
		st.Topic = rt.Topic
		t, known := m.topics.TopicByName(rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetDeleteResponseTopicPartition()
			sp.Partition = rp.Partition
			switch {
			case subscribed[rt.Topic]:
				sp.ErrorCode = kerr.GroupSubscribedToTopic.Code
			case !known || rp.Partition < 0 || rp.Partition >= t.Partitions:
				if _, has := g.offset(rt.Topic, rp.Partition); has {
					// The topic is gone but its offset is not: delete it.
					recs = append(recs, record{kind: recOffset, group: req.Group, topic: rt.Topic, partition: rp.Partition, delete: true})
				} else {
					sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				}
			default:
				if _, has := g.offset(rt.Topic, rp.Partition); has {
					recs = append(recs, record{kind: recOffset, group: req.Group, topic: rt.Topic, partition: rp.Partition, delete: true})
				}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	m.persist(recs, Reply{Token: tok, Response: resp})
}
