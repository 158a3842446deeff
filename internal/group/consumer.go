package group

// The KIP-848 consumer group protocol: ConsumerGroupHeartbeat and
// ConsumerGroupDescribe.
//
// The broker owns the assignment. Every change of membership, subscription
// or subscribed-topic metadata bumps the group epoch and recomputes the
// target assignment at once (the assignors are cheap and synchronous, so a
// group is never left "Assigning"). Each member then reconciles towards its
// target one heartbeat at a time:
//
//   - partitions it holds that are no longer in its target are revoked
//     first; until the member reports (in a heartbeat's owned partitions)
//     that it let them go, it keeps its epoch and gets nothing new
//     (UNREVOKED_PARTITIONS). It has its rebalance timeout to do so.
//   - then it moves to the target epoch and gets the new partitions that
//     nobody else still holds; partitions another member has not released
//     yet follow on a later heartbeat (UNRELEASED_PARTITIONS).
//
// So a partition is never owned by two members, and a member's epoch only
// advances once it holds nothing outside its target. The partition owner
// map is that invariant's bookkeeping.
//
// Offsets committed by a member are checked against epochs as in KIP-1251:
// the member's current epoch is accepted, a newer one is STALE_MEMBER_EPOCH,
// and an older one only for partitions the member has held since that epoch.

import (
	"encoding/binary"
	"hash/fnv"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type cstate uint8

const (
	cStable     cstate = iota // holds exactly its target (or all of it that is free) at the target epoch
	cUnrevoked                // must release partitions before anything else
	cUnreleased               // at the target epoch, waiting for partitions others still hold
)

// consumerGroup is the KIP-848 part of a group.
type consumerGroup struct {
	epoch       int32
	targetEpoch int32
	assignor    string
	members     map[string]*consumerMember
	static      map[string]string // instance id → member id
	owners      map[[16]byte]map[int32]string
	metaHash    uint64
}

// consumerMember is a KIP-848 member.
type consumerMember struct {
	id               string
	instanceID       *string
	rackID           *string
	clientID, host   string
	rebalanceTimeout time.Duration
	topics           []string // sorted
	regex            string
	re               *regexp.Regexp
	assignor         string

	epoch, prevEpoch int32
	state            cstate
	assigned         assignment
	revoking         assignment
	target           assignment
	assignEpochs     map[[16]byte]map[int32]int32 // when each held partition was assigned (KIP-1251)

	sessionTimer uint64
	revokeTimer  uint64
	left         bool // static member that left with epoch -2: its partitions stay reserved
}

func newCgroup() *consumerGroup {
	return &consumerGroup{members: map[string]*consumerMember{}, static: map[string]string{}, owners: map[[16]byte]map[int32]string{}}
}

var serverAssignors = []string{"uniform", "range"}

func (cg *consumerGroup) owner(id [16]byte, p int32) string { return cg.owners[id][p] }

func (cg *consumerGroup) setOwner(id [16]byte, p int32, mid string) {
	if cg.owners[id] == nil {
		cg.owners[id] = map[int32]string{}
	}
	cg.owners[id][p] = mid
}

func (cg *consumerGroup) release(id [16]byte, p int32, mid string) {
	if ps := cg.owners[id]; ps != nil && ps[p] == mid {
		delete(ps, p)
		if len(ps) == 0 {
			delete(cg.owners, id)
		}
	}
}

// active counts members that have not left.
func (cg *consumerGroup) active() int {
	n := 0
	for _, cm := range cg.members {
		if !cm.left {
			n++
		}
	}
	return n
}

func compileSubscriptionRegex(s string) (*regexp.Regexp, error) {
	// Kafka matches the whole topic name.
	return regexp.Compile("^(?:" + s + ")$")
}

func (m *Machine) consumerHeartbeat(client Client, req *kmsg.ConsumerGroupHeartbeatRequest) *kmsg.ConsumerGroupHeartbeatResponse {
	resp := req.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
	resp.HeartbeatIntervalMillis = int32(m.cfg.ConsumerHeartbeatInterval.Milliseconds())
	fail := func(code int16, msg string) *kmsg.ConsumerGroupHeartbeatResponse {
		resp.ErrorCode = code
		if msg != "" {
			resp.ErrorMessage = kmsg.StringPtr(msg)
		}
		return resp
	}
	memberID := req.MemberID
	switch {
	case req.Group == "":
		return fail(kerr.InvalidGroupID.Code, "")
	case req.MemberEpoch < -2:
		return fail(kerr.InvalidRequest.Code, "MemberEpoch is invalid.")
	case memberID == "" && (req.Version >= 1 || req.MemberEpoch != 0):
		return fail(kerr.InvalidRequest.Code, "MemberId can't be empty.")
	}
	if req.MemberEpoch == 0 {
		switch {
		case req.RebalanceTimeoutMillis < 0:
			return fail(kerr.InvalidRequest.Code, "RebalanceTimeoutMs must be provided in first request.")
		case req.SubscribedTopicNames == nil && req.SubscribedTopicRegex == nil:
			return fail(kerr.InvalidRequest.Code, "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.")
		case req.Topics == nil || len(req.Topics) > 0:
			return fail(kerr.InvalidRequest.Code, "TopicPartitions must be empty when (re-)joining.")
		}
	}
	if req.ServerAssignor != nil && !slices.Contains(serverAssignors, *req.ServerAssignor) {
		return fail(kerr.UnsupportedAssignor.Code, "ServerAssignor "+*req.ServerAssignor+" is not supported; supported: uniform, range.")
	}
	var re *regexp.Regexp
	if req.SubscribedTopicRegex != nil && *req.SubscribedTopicRegex != "" {
		var err error
		if re, err = compileSubscriptionRegex(*req.SubscribedTopicRegex); err != nil {
			return fail(kerr.InvalidRegularExpression.Code, err.Error())
		}
	}

	g := m.groups[req.Group]
	switch {
	case g != nil && g.state == stateDead:
		return fail(kerr.CoordinatorNotAvailable.Code, "")
	case g != nil && g.kind == kindClassic && g.hasMembers():
		return fail(kerr.GroupIDNotFound.Code, "Group "+req.Group+" is not a consumer group.")
	case req.MemberEpoch != 0 && (g == nil || g.cg == nil):
		return fail(kerr.UnknownMemberID.Code, "")
	}
	if g == nil {
		g = m.groupOrNew(req.Group)
		defer m.maybeDropGroup(g)
	}
	if g.kind != kindConsumer {
		g.kind, g.cg = kindConsumer, newCgroup()
		g.protocolType, g.protocolName, g.leader = "consumer", "", ""
		g.setState(stateEmpty, m.now)
	}
	cg := g.cg

	switch req.MemberEpoch {
	case -1, -2:
		cm := cg.members[memberID]
		if cm == nil {
			return fail(kerr.UnknownMemberID.Code, "")
		}
		resp.MemberID = kmsg.StringPtr(memberID)
		resp.MemberEpoch = req.MemberEpoch
		if req.MemberEpoch == -2 && cm.instanceID != nil {
			m.consumerStaticLeave(g, cm)
		} else {
			m.consumerRemove(g, cm)
			resp.MemberEpoch = -1
		}
		return resp
	case 0:
		if memberID == "" {
			memberID = m.cfg.NewID()
		}
		return m.consumerJoin(g, client, req, memberID, re, resp)
	}

	cm := cg.members[memberID]
	if cm == nil {
		if req.InstanceID != nil {
			if owner, ok := cg.static[*req.InstanceID]; ok && owner != memberID {
				return fail(kerr.FencedInstanceID.Code, "")
			}
		}
		return fail(kerr.UnknownMemberID.Code, "")
	}
	if req.MemberEpoch != cm.epoch {
		// The previous epoch is accepted when the member evidently
		// missed our last answer: what it reports holding is a subset
		// of what we assigned.
		if cm.left || req.MemberEpoch != cm.prevEpoch || req.Topics == nil || !ownedSubset(req.Topics, cm.assigned) {
			return fail(kerr.FencedMemberEpoch.Code, "The consumer group member has a smaller member epoch than expected, or is fenced.")
		}
	}
	cm.clientID, cm.host = client.ID, client.Host
	changed := m.updateSubscription(g, cm, req, re)
	full := req.RebalanceTimeoutMillis != -1 && (req.SubscribedTopicNames != nil || req.SubscribedTopicRegex != nil) && req.Topics != nil
	return m.consumerStep(g, cm, changed, req.Topics, full, resp)
}

func ownedSubset(owned []kmsg.ConsumerGroupHeartbeatRequestTopic, assigned assignment) bool {
	for _, t := range owned {
		for _, p := range t.Partitions {
			if !assigned.has(t.TopicID, p) {
				return false
			}
		}
	}
	return true
}

func (m *Machine) consumerJoin(g *group, client Client, req *kmsg.ConsumerGroupHeartbeatRequest, memberID string, re *regexp.Regexp, resp *kmsg.ConsumerGroupHeartbeatResponse) *kmsg.ConsumerGroupHeartbeatResponse {
	cg := g.cg
	cm := cg.members[memberID]
	changed := false
	if req.InstanceID != nil {
		if ownerID, ok := cg.static[*req.InstanceID]; ok && ownerID != memberID {
			prev := cg.members[ownerID]
			if prev != nil && !prev.left {
				resp.ErrorCode = kerr.UnreleasedInstanceID.Code
				resp.ErrorMessage = kmsg.StringPtr("Static member " + *req.InstanceID + " is still in use by member " + ownerID + ".")
				return resp
			}
			if prev != nil {
				// The new incarnation takes over the old one's place,
				// epoch and partitions.
				delete(cg.members, ownerID)
				for _, a := range []assignment{prev.assigned, prev.revoking} {
					for id, ps := range a {
						for _, p := range ps {
							cg.setOwner(id, p, memberID)
						}
					}
				}
				prev.id, prev.left = memberID, false
				prev.sessionTimer, prev.revokeTimer = 0, 0
				cg.members[memberID] = prev
				cm = prev
			}
		}
	}
	if cm == nil {
		if cg.active() >= m.cfg.ConsumerMaxGroupSize {
			resp.ErrorCode = kerr.GroupMaxSizeReached.Code
			return resp
		}
		cm = &consumerMember{id: memberID, assigned: assignment{}, revoking: assignment{}, target: assignment{}, assignEpochs: map[[16]byte]map[int32]int32{}}
		cg.members[memberID] = cm
		changed = true
	}
	cm.left = false
	if req.InstanceID != nil {
		cm.instanceID = cloneStr(req.InstanceID)
		cg.static[*req.InstanceID] = memberID
	}
	cm.clientID, cm.host = client.ID, client.Host
	if m.updateSubscription(g, cm, req, re) {
		changed = true
	}
	return m.consumerStep(g, cm, changed, req.Topics, true, resp)
}

// updateSubscription applies the optional fields a heartbeat carries and
// reports whether the subscription (or assignor) changed.
func (m *Machine) updateSubscription(g *group, cm *consumerMember, req *kmsg.ConsumerGroupHeartbeatRequest, re *regexp.Regexp) bool {
	changed := false
	if req.RackID != nil {
		cm.rackID = cloneStr(req.RackID)
	}
	if req.RebalanceTimeoutMillis > 0 {
		cm.rebalanceTimeout = time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
	}
	if cm.rebalanceTimeout <= 0 {
		cm.rebalanceTimeout = m.cfg.ConsumerSessionTimeout
	}
	if req.SubscribedTopicNames != nil {
		names := slices.Clone(req.SubscribedTopicNames)
		sort.Strings(names)
		names = slices.Compact(names)
		if !slices.Equal(names, cm.topics) {
			cm.topics, changed = names, true
		}
	}
	if req.SubscribedTopicRegex != nil && *req.SubscribedTopicRegex != cm.regex {
		cm.regex, cm.re, changed = *req.SubscribedTopicRegex, re, true
	}
	if req.ServerAssignor != nil && *req.ServerAssignor != cm.assignor {
		cm.assignor, changed = *req.ServerAssignor, true
	}
	return changed
}

// subscribed resolves a member's subscription against the existing topics.
func (m *Machine) subscribed(cm *consumerMember, all []TopicInfo) []TopicInfo {
	var out []TopicInfo
	for _, name := range cm.topics {
		if t, ok := m.topics.TopicByName(name); ok {
			out = append(out, t)
		}
	}
	if cm.re != nil {
		for _, t := range all {
			if cm.re.MatchString(t.Name) && !slices.Contains(cm.topics, t.Name) {
				out = append(out, t)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	}
	return out
}

func (cg *consumerGroup) usesRegex() bool {
	for _, cm := range cg.members {
		if cm.re != nil {
			return true
		}
	}
	return false
}

// subscriptionHash fingerprints the metadata of every topic the group
// subscribes to: a topic appearing, vanishing or growing changes it, which
// is how the group notices it must reassign.
func (m *Machine) subscriptionHash(cg *consumerGroup) uint64 {
	var all []TopicInfo
	if cg.usesRegex() {
		all = m.topics.Topics()
	}
	seen := map[string]TopicInfo{}
	for _, cm := range cg.members {
		for _, t := range m.subscribed(cm, all) {
			seen[t.Name] = t
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	h := fnv.New64a()
	var buf [4]byte
	for _, n := range names {
		t := seen[n]
		h.Write([]byte(n))
		h.Write(t.ID[:])
		binary.BigEndian.PutUint32(buf[:], uint32(t.Partitions))
		h.Write(buf[:])
	}
	return h.Sum64()
}

// bumpEpoch starts a new group epoch and computes its target assignment.
func (m *Machine) bumpEpoch(g *group) {
	cg := g.cg
	cg.epoch++
	m.stats.ConsumerEpochBumps++
	votes := map[string]int{}
	for _, cm := range cg.members {
		if cm.assignor != "" {
			votes[cm.assignor]++
		}
	}
	cg.assignor = "uniform"
	best := 0
	for _, name := range serverAssignors {
		if votes[name] > best {
			cg.assignor, best = name, votes[name]
		}
	}
	var all []TopicInfo
	if cg.usesRegex() {
		all = m.topics.Topics()
	}
	in := assignInput{subs: map[string][]TopicInfo{}, prev: map[string]assignment{}}
	for id, cm := range cg.members {
		in.members = append(in.members, id)
		in.subs[id] = m.subscribed(cm, all)
		in.prev[id] = cm.target
	}
	sort.Strings(in.members)
	target := assignTarget(cg.assignor, in)
	for id, cm := range cg.members {
		cm.target = target[id]
	}
	cg.targetEpoch = cg.epoch
	cg.metaHash = m.subscriptionHash(cg)
}

// consumerStep is the common tail of a join or heartbeat: keep the member
// alive, refresh the target if anything changed, reconcile, answer.
func (m *Machine) consumerStep(g *group, cm *consumerMember, subChanged bool, owned []kmsg.ConsumerGroupHeartbeatRequestTopic, full bool, resp *kmsg.ConsumerGroupHeartbeatResponse) *kmsg.ConsumerGroupHeartbeatResponse {
	cg := g.cg
	cm.sessionTimer = m.schedule(m.now.Add(m.cfg.ConsumerSessionTimeout), tCSession, g.name, cm.id)
	if subChanged || cg.targetEpoch != cg.epoch || m.subscriptionHash(cg) != cg.metaHash {
		m.bumpEpoch(g)
	}
	before := cm.assigned.clone()
	m.reconcile(g, cm, owned)
	m.updateConsumerState(g)
	resp.MemberID = kmsg.StringPtr(cm.id)
	resp.MemberEpoch = cm.epoch
	if full || !before.equal(cm.assigned) {
		a := &kmsg.ConsumerGroupHeartbeatResponseAssignment{}
		for _, id := range cm.assigned.ids() {
			t := kmsg.NewConsumerGroupHeartbeatResponseAssignmentTopic()
			t.TopicID = id
			t.Partitions = slices.Clone(cm.assigned[id])
			a.Topics = append(a.Topics, t)
		}
		resp.Assignment = a
	}
	return resp
}

// reconcile moves a member one step towards its target (see the package
// comment of this file). owned is what the member reports holding (nil:
// unchanged since its last full report).
func (m *Machine) reconcile(g *group, cm *consumerMember, owned []kmsg.ConsumerGroupHeartbeatRequestTopic) {
	cg := g.cg
	if owned != nil && len(cm.revoking) > 0 {
		holds := assignment{}
		for _, t := range owned {
			for _, p := range t.Partitions {
				holds.add(t.TopicID, p)
			}
		}
		for _, id := range cm.revoking.ids() {
			for _, p := range slices.Clone(cm.revoking[id]) {
				if !holds.has(id, p) {
					cm.revoking.remove(id, p)
					cg.release(id, p, cm.id)
					delete(cm.assignEpochs[id], p)
				}
			}
		}
	}
	if len(cm.revoking) == 0 {
		cm.revokeTimer = 0
	}
	switch {
	case cm.state == cUnrevoked && len(cm.revoking) > 0:
		return
	case cm.state == cStable && cm.epoch == cg.targetEpoch:
		return
	}
	keep, revoke, add := assignment{}, assignment{}, assignment{}
	for id, ps := range cm.assigned {
		for _, p := range ps {
			if cm.target.has(id, p) {
				keep.add(id, p)
			} else {
				revoke.add(id, p)
			}
		}
	}
	for id, ps := range cm.target {
		for _, p := range ps {
			if !cm.assigned.has(id, p) {
				add.add(id, p)
			}
		}
	}
	if len(revoke) > 0 {
		cm.assigned = keep
		for id, ps := range revoke {
			for _, p := range ps {
				cm.revoking.add(id, p)
			}
		}
		cm.state = cUnrevoked
		if cm.revokeTimer == 0 {
			cm.revokeTimer = m.schedule(m.now.Add(cm.rebalanceTimeout), tCRevoke, g.name, cm.id)
		}
		return
	}
	cm.prevEpoch, cm.epoch = cm.epoch, cg.targetEpoch
	blocked := false
	for _, id := range add.ids() {
		for _, p := range add[id] {
			if o := cg.owner(id, p); o != "" && o != cm.id {
				blocked = true
				continue
			}
			cg.setOwner(id, p, cm.id)
			keep.add(id, p)
			if cm.assignEpochs[id] == nil {
				cm.assignEpochs[id] = map[int32]int32{}
			}
			cm.assignEpochs[id][p] = cm.epoch
		}
	}
	cm.assigned = keep
	cm.state = cStable
	if blocked {
		cm.state = cUnreleased
	}
}

func (m *Machine) updateConsumerState(g *group) {
	cg := g.cg
	if cg.active() == 0 {
		g.setState(stateEmpty, m.now)
		return
	}
	for _, cm := range cg.members {
		if !cm.left && (cm.state != cStable || cm.epoch != cg.targetEpoch) {
			g.setState(stateReconciling, m.now)
			return
		}
	}
	g.setState(stateStable, m.now)
}

// consumerRemove drops a member for good (leave, session timeout, fencing)
// and reassigns its partitions.
func (m *Machine) consumerRemove(g *group, cm *consumerMember) {
	cg := g.cg
	for _, a := range []assignment{cm.assigned, cm.revoking} {
		for id, ps := range a {
			for _, p := range ps {
				cg.release(id, p, cm.id)
			}
		}
	}
	cm.sessionTimer, cm.revokeTimer = 0, 0
	delete(cg.members, cm.id)
	if cm.instanceID != nil && cg.static[*cm.instanceID] == cm.id {
		delete(cg.static, *cm.instanceID)
	}
	m.bumpEpoch(g)
	m.updateConsumerState(g)
}

func (m *Machine) consumerFence(g *group, cm *consumerMember, _ string) { m.consumerRemove(g, cm) }

// consumerStaticLeave handles epoch -2: the static member is going away
// temporarily. It keeps its target and partitions (nobody else gets them)
// until it comes back under the same instance id or its session expires.
func (m *Machine) consumerStaticLeave(g *group, cm *consumerMember) {
	cg := g.cg
	for id, ps := range cm.revoking {
		for _, p := range ps {
			cg.release(id, p, cm.id)
			delete(cm.assignEpochs[id], p)
		}
	}
	cm.revoking = assignment{}
	cm.revokeTimer = 0
	cm.left = true
	cm.state = cStable
	m.updateConsumerState(g)
}

// validateConsumerCommit checks an offset commit's member and epoch for a
// KIP-848 group. It returns a group-level error code, or 0 and a function
// giving the per-partition code.
func (m *Machine) validateConsumerCommit(g *group, memberID string, epoch int32, version int16, txn bool) (int16, func(id [16]byte, p int32) int16) {
	cg := g.cg
	ok := func([16]byte, int32) int16 { return 0 }
	if epoch < 0 && len(cg.members) == 0 {
		return 0, ok // an admin commit to a group nobody is in
	}
	cm := cg.members[memberID]
	if cm == nil || cm.left {
		return kerr.UnknownMemberID.Code, nil
	}
	stale := kerr.StaleMemberEpoch.Code
	if txn {
		stale = kerr.IllegalGeneration.Code
	} else if version < 9 {
		return kerr.UnsupportedVersion.Code, nil
	}
	switch {
	case epoch == cm.epoch:
		return 0, ok
	case epoch > cm.epoch:
		return stale, nil
	}
	return 0, func(id [16]byte, p int32) int16 {
		if !cm.assigned.has(id, p) && !cm.revoking.has(id, p) {
			return stale
		}
		if e, held := cm.assignEpochs[id][p]; !held || epoch < e {
			return stale
		}
		return 0
	}
}

func toAssignment(a assignment, topics TopicView) kmsg.Assignment {
	var out kmsg.Assignment
	for _, id := range a.ids() {
		tp := kmsg.NewAssignmentTopicPartition()
		tp.TopicID = id
		if t, ok := topics.TopicByID(id); ok {
			tp.Topic = t.Name
		}
		tp.Partitions = slices.Clone(a[id])
		out.TopicPartitions = append(out.TopicPartitions, tp)
	}
	return out
}

func (m *Machine) consumerDescribe(req *kmsg.ConsumerGroupDescribeRequest) *kmsg.ConsumerGroupDescribeResponse {
	resp := req.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
	for _, name := range req.Groups {
		rg := kmsg.NewConsumerGroupDescribeResponseGroup()
		rg.Group = name
		rg.AuthorizedOperations = math.MinInt32
		g := m.groups[name]
		if g == nil || g.kind != kindConsumer || g.state == stateDead {
			rg.ErrorCode = kerr.GroupIDNotFound.Code
			rg.ErrorMessage = kmsg.StringPtr("Group " + name + " not found.")
			resp.Groups = append(resp.Groups, rg)
			continue
		}
		cg := g.cg
		rg.State = g.state.String()
		rg.Epoch = cg.epoch
		rg.AssignmentEpoch = cg.targetEpoch
		rg.AssignorName = cg.assignor
		if rg.AssignorName == "" {
			rg.AssignorName = "uniform"
		}
		for _, id := range slices.Sorted(maps.Keys(cg.members)) {
			cm := cg.members[id]
			rm := kmsg.NewConsumerGroupDescribeResponseGroupMember()
			rm.MemberID = id
			rm.InstanceID = cloneStr(cm.instanceID)
			rm.RackID = cloneStr(cm.rackID)
			rm.MemberEpoch = cm.epoch
			if cm.left {
				rm.MemberEpoch = -2
			}
			rm.ClientID = cm.clientID
			rm.ClientHost = cm.host
			rm.SubscribedTopics = slices.Clone(cm.topics)
			if cm.regex != "" {
				rm.SubscribedTopicRegex = kmsg.StringPtr(cm.regex)
			}
			rm.Assignment = toAssignment(cm.assigned, m.topics)
			rm.TargetAssignment = toAssignment(cm.target, m.topics)
			rm.MemberType = 1 // consumer protocol
			rg.Members = append(rg.Members, rm)
		}
		resp.Groups = append(resp.Groups, rg)
	}
	return resp
}
