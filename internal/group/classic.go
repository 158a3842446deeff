package group

// The classic group protocol: JoinGroup, SyncGroup, Heartbeat, LeaveGroup.
//
// A rebalance moves a group Empty/Stable → PreparingRebalance (every member
// must rejoin; JoinGroup requests are parked) → CompletingRebalance (the
// generation is bumped, the protocol chosen, the leader is sent every
// member's subscription; SyncGroup requests are parked) → Stable (the
// leader's SyncGroup carries everyone's assignment; parked syncs are
// answered). The join phase ends when every known member has rejoined or
// the largest rebalance timeout passes (members that did not rejoin are
// removed, except static members, which only their session timeout
// removes). An empty group's first rebalance is delayed by
// group.initial.rebalance.delay.ms, extended while members keep arriving.
//
// Sessions: every member has a session deadline refreshed by joins, syncs,
// heartbeats and commits; a member parked in a join or sync is kept alive
// (its deadline is re-armed) because it is waiting on the group, not dead.
// After a join completes, members that do not sync within the rebalance
// timeout are removed.
//
// Static membership (KIP-345): a JoinGroup with a known group.instance.id
// and no member id replaces the old member (same assignment, new member
// id); the old id is fenced (FENCED_INSTANCE_ID) everywhere. If nothing
// about the member changed and the group is Stable, no rebalance happens.

import (
	"bytes"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// member is a classic group member.
type member struct {
	id               string
	instanceID       *string
	clientID, host   string
	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	protocolType     string
	protocols        []kmsg.JoinGroupRequestProtocol
	assignment       []byte

	join *waiter // parked JoinGroup
	sync *waiter // parked SyncGroup

	sessionTimer uint64
	synced       bool // sent SyncGroup for the current generation
}

type waiter struct {
	tok     Token
	version int16
}

func (mem *member) matches(protocolType string, protocols []kmsg.JoinGroupRequestProtocol) bool {
	if mem.protocolType != protocolType || len(mem.protocols) != len(protocols) {
		return false
	}
	for i := range protocols {
		if mem.protocols[i].Name != protocols[i].Name || !bytes.Equal(mem.protocols[i].Metadata, protocols[i].Metadata) {
			return false
		}
	}
	return true
}

func (mem *member) metadataFor(protocol string) []byte {
	for _, p := range mem.protocols {
		if p.Name == protocol {
			return p.Metadata
		}
	}
	return nil
}

func cloneProtocols(ps []kmsg.JoinGroupRequestProtocol) []kmsg.JoinGroupRequestProtocol {
	out := make([]kmsg.JoinGroupRequestProtocol, len(ps))
	for i, p := range ps {
		out[i] = kmsg.JoinGroupRequestProtocol{Name: p.Name, Metadata: append([]byte(nil), p.Metadata...)}
	}
	return out
}

func cloneStr(s *string) *string {
	if s == nil {
		return nil
	}
	v := *s
	return &v
}

// newMemberID builds a member id the way Kafka does: the client id (or
// instance id) plus a unique suffix.
func (m *Machine) newMemberID(prefix string) string {
	return prefix + "-" + m.cfg.NewID()
}

func (m *Machine) armSession(g *group, mem *member) {
	mem.sessionTimer = m.schedule(m.now.Add(mem.sessionTimeout), tSession, g.name, mem.id)
}

func (g *group) maxRebalanceTimeout() time.Duration {
	var d time.Duration
	for _, mem := range g.members {
		d = max(d, mem.rebalanceTimeout)
	}
	return d
}

// canAccept reports whether a member with these protocols may be in the
// group: same protocol type as the others and at least one protocol every
// member supports. self is ignored (a rejoining member replaces its old
// protocols).
func (g *group) canAccept(self string, protocolType string, protocols []kmsg.JoinGroupRequestProtocol) bool {
	others := 0
	candidates := map[string]bool{}
	for _, p := range protocols {
		candidates[p.Name] = true
	}
	for id, mem := range g.members {
		if id == self {
			continue
		}
		others++
		if mem.protocolType != protocolType {
			return false
		}
		has := map[string]bool{}
		for _, p := range mem.protocols {
			has[p.Name] = true
		}
		for name := range candidates {
			if !has[name] {
				delete(candidates, name)
			}
		}
	}
	return others == 0 || len(candidates) > 0
}

// selectProtocol picks the protocol every member supports that most
// members prefer (each member votes for its first supported candidate);
// ties go to the leader's preference order.
func (g *group) selectProtocol() string {
	candidates := map[string]bool{}
	first := true
	for _, mem := range g.members {
		has := map[string]bool{}
		for _, p := range mem.protocols {
			has[p.Name] = true
		}
		if first {
			candidates, first = has, false
			continue
		}
		for name := range candidates {
			if !has[name] {
				delete(candidates, name)
			}
		}
	}
	votes := map[string]int{}
	for _, mem := range g.members {
		for _, p := range mem.protocols {
			if candidates[p.Name] {
				votes[p.Name]++
				break
			}
		}
	}
	best, bestVotes := "", -1
	pref := g.members[g.leader]
	if pref == nil {
		pref = g.members[g.order[0]]
	}
	for _, p := range pref.protocols {
		if candidates[p.Name] && votes[p.Name] > bestVotes {
			best, bestVotes = p.Name, votes[p.Name]
		}
	}
	return best
}

// validateMember applies Kafka's member check: with an instance id, the
// id must map to this member id (else FENCED_INSTANCE_ID); without, the
// member must exist.
func (g *group) validateMember(memberID string, instanceID *string) int16 {
	if instanceID != nil {
		owner, ok := g.static[*instanceID]
		if !ok {
			return kerr.UnknownMemberID.Code
		}
		if owner != memberID {
			return kerr.FencedInstanceID.Code
		}
		return 0
	}
	if g.members[memberID] == nil {
		return kerr.UnknownMemberID.Code
	}
	return 0
}

func (m *Machine) joinGroup(tok Token, client Client, req *kmsg.JoinGroupRequest) {
	fail := func(code int16) {
		resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = code
		resp.MemberID = req.MemberID
		m.reply(tok, resp)
	}
	session := time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	rebalance := session
	if req.Version >= 1 && req.RebalanceTimeoutMillis > 0 {
		rebalance = time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
	}
	switch {
	case req.Group == "":
		fail(kerr.InvalidGroupID.Code)
		return
	case session < m.cfg.MinSessionTimeout || session > m.cfg.MaxSessionTimeout:
		fail(kerr.InvalidSessionTimeout.Code)
		return
	case req.ProtocolType == "" || len(req.Protocols) == 0:
		fail(kerr.InconsistentGroupProtocol.Code)
		return
	}
	g := m.groups[req.Group]
	if g != nil && g.state == stateDead {
		fail(kerr.CoordinatorNotAvailable.Code)
		return
	}
	if g != nil && g.kind == kindConsumer {
		if g.hasMembers() {
			// Classic members joining a KIP-848 group (online migration)
			// are not supported.
			fail(kerr.InconsistentGroupProtocol.Code)
			return
		}
		g.kind, g.cg = kindNone, nil
	}
	if g == nil {
		if req.MemberID != "" {
			fail(kerr.UnknownMemberID.Code)
			return
		}
		g = m.groupOrNew(req.Group)
		defer m.maybeDropGroup(g)
	}
	if !g.canAccept(req.MemberID, req.ProtocolType, req.Protocols) {
		fail(kerr.InconsistentGroupProtocol.Code)
		return
	}
	w := &waiter{tok: tok, version: req.Version}

	if req.MemberID == "" {
		if req.InstanceID != nil {
			if oldID, ok := g.static[*req.InstanceID]; ok {
				m.replaceStatic(g, g.members[oldID], client, req, session, rebalance, w)
				return
			}
		}
		if len(g.members)+len(g.pendingIDs) >= m.cfg.MaxGroupSize {
			fail(kerr.GroupMaxSizeReached.Code)
			return
		}
		if req.InstanceID != nil {
			m.addMember(g, m.newMemberID(*req.InstanceID), client, req, session, rebalance, w)
			return
		}
		id := m.newMemberID(client.ID)
		if req.Version >= 4 {
			// KIP-394: hand out the id and make the client come back
			// with it, so a client that times out and retries does not
			// leave a ghost member behind.
			g.pendingIDs[id] = m.schedule(m.now.Add(session), tPending, g.name, id)
			resp := req.ResponseKind().(*kmsg.JoinGroupResponse)
			resp.ErrorCode = kerr.MemberIDRequired.Code
			resp.MemberID = id
			m.reply(tok, resp)
			return
		}
		m.addMember(g, id, client, req, session, rebalance, w)
		return
	}

	if _, ok := g.pendingIDs[req.MemberID]; ok && g.members[req.MemberID] == nil {
		if req.InstanceID != nil {
			if _, taken := g.static[*req.InstanceID]; taken {
				fail(kerr.FencedInstanceID.Code)
				return
			}
		}
		delete(g.pendingIDs, req.MemberID)
		m.addMember(g, req.MemberID, client, req, session, rebalance, w)
		return
	}
	if code := g.validateMember(req.MemberID, req.InstanceID); code != 0 {
		fail(code)
		return
	}
	mem := g.members[req.MemberID]
	if mem.instanceID != nil && req.InstanceID == nil {
		fail(kerr.FencedInstanceID.Code)
		return
	}
	mem.clientID, mem.host = client.ID, client.Host
	switch g.state {
	case statePreparing:
		m.updateMember(g, mem, req, session, rebalance, w)
		m.maybeCompleteJoin(g)
	case stateCompleting:
		if mem.matches(req.ProtocolType, req.Protocols) {
			// A retried join of this generation: answer it again.
			m.armSession(g, mem)
			m.reply(tok, m.joinResponse(g, mem, w.version, mem.id == g.leader, false))
			return
		}
		m.updateMember(g, mem, req, session, rebalance, w)
		m.prepareRebalance(g)
	case stateStable:
		if mem.id == g.leader || !mem.matches(req.ProtocolType, req.Protocols) {
			m.updateMember(g, mem, req, session, rebalance, w)
			m.prepareRebalance(g)
			return
		}
		m.armSession(g, mem)
		m.reply(tok, m.joinResponse(g, mem, w.version, false, false))
	default:
		fail(kerr.UnknownMemberID.Code)
	}
}

// addMember adds a new member waiting in join and starts or advances the
// rebalance.
func (m *Machine) addMember(g *group, id string, client Client, req *kmsg.JoinGroupRequest, session, rebalance time.Duration, w *waiter) {
	if !g.hasMembers() {
		g.kind = kindClassic
		g.protocolType = req.ProtocolType
	}
	mem := &member{id: id, instanceID: cloneStr(req.InstanceID), clientID: client.ID, host: client.Host,
		sessionTimeout: session, rebalanceTimeout: rebalance,
		protocolType: req.ProtocolType, protocols: cloneProtocols(req.Protocols), join: w}
	g.members[id] = mem
	g.order = append(g.order, id)
	if mem.instanceID != nil {
		g.static[*mem.instanceID] = id
	}
	m.armSession(g, mem)
	if g.state == statePreparing {
		if g.delaying {
			g.delayNewMember = true
		}
		m.maybeCompleteJoin(g)
		return
	}
	m.prepareRebalance(g)
}

// updateMember records a rejoining member's new protocols and parks its
// join.
func (m *Machine) updateMember(g *group, mem *member, req *kmsg.JoinGroupRequest, session, rebalance time.Duration, w *waiter) {
	if mem.join != nil && mem.join.tok != w.tok {
		// A second join while the first is parked: the first is stale.
		old := kmsg.NewPtrJoinGroupResponse()
		old.Version = mem.join.version
		old.ErrorCode = kerr.RebalanceInProgress.Code
		old.MemberID = mem.id
		m.reply(mem.join.tok, old)
	}
	mem.protocolType = req.ProtocolType
	mem.protocols = cloneProtocols(req.Protocols)
	mem.sessionTimeout, mem.rebalanceTimeout = session, rebalance
	mem.join = w
	m.armSession(g, mem)
}

// replaceStatic gives a static member's place (and assignment) to a new
// member id and fences the old one.
func (m *Machine) replaceStatic(g *group, old *member, client Client, req *kmsg.JoinGroupRequest, session, rebalance time.Duration, w *waiter) {
	oldID := old.id
	if old.join != nil {
		m.reply(old.join.tok, m.fencedJoin(old.join.version, oldID))
		old.join = nil
	}
	if old.sync != nil {
		resp := kmsg.NewPtrSyncGroupResponse()
		resp.Version = old.sync.version
		resp.ErrorCode = kerr.FencedInstanceID.Code
		m.reply(old.sync.tok, resp)
		old.sync = nil
	}
	newID := m.newMemberID(*req.InstanceID)
	delete(g.members, oldID)
	old.id = newID
	g.members[newID] = old
	for i, id := range g.order {
		if id == oldID {
			g.order[i] = newID
		}
	}
	g.static[*req.InstanceID] = newID
	if g.leader == oldID {
		g.leader = newID
	}
	old.clientID, old.host = client.ID, client.Host
	changed := !old.matches(req.ProtocolType, req.Protocols)
	switch g.state {
	case stateStable:
		isLeader := newID == g.leader
		if changed || (isLeader && req.Version < 9) {
			m.updateMember(g, old, req, session, rebalance, w)
			m.prepareRebalance(g)
			return
		}
		old.sessionTimeout, old.rebalanceTimeout = session, rebalance
		m.armSession(g, old)
		// KIP-814: a static leader that rejoins keeps the current
		// assignment; it gets the member list but must not reassign.
		// The new member id is durable before the member learns it.
		m.persistMembership(g, Reply{Token: w.tok, Response: m.joinResponse(g, old, w.version, isLeader, isLeader)})
	case statePreparing:
		m.updateMember(g, old, req, session, rebalance, w)
		m.maybeCompleteJoin(g)
	default:
		m.updateMember(g, old, req, session, rebalance, w)
		m.prepareRebalance(g)
	}
}

func (m *Machine) fencedJoin(version int16, memberID string) *kmsg.JoinGroupResponse {
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.Version = version
	resp.ErrorCode = kerr.FencedInstanceID.Code
	resp.MemberID = memberID
	return resp
}

// joinResponse is a successful JoinGroup answer for mem in the current
// generation; withMembers sends the member list (to the leader).
func (m *Machine) joinResponse(g *group, mem *member, version int16, withMembers, skipAssignment bool) *kmsg.JoinGroupResponse {
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.Version = version
	resp.Generation = g.generation
	resp.ProtocolType = kmsg.StringPtr(g.protocolType)
	resp.Protocol = kmsg.StringPtr(g.protocolName)
	resp.LeaderID = g.leader
	resp.MemberID = mem.id
	resp.SkipAssignment = skipAssignment
	if withMembers {
		for _, id := range g.order {
			other := g.members[id]
			rm := kmsg.NewJoinGroupResponseMember()
			rm.MemberID = id
			rm.InstanceID = cloneStr(other.instanceID)
			rm.ProtocolMetadata = other.metadataFor(g.protocolName)
			resp.Members = append(resp.Members, rm)
		}
	}
	return resp
}

// prepareRebalance starts (or restarts) the join phase.
func (m *Machine) prepareRebalance(g *group) {
	if g.state == stateCompleting {
		m.failSyncs(g, kerr.RebalanceInProgress.Code)
	}
	for _, mem := range g.members {
		mem.assignment = nil
	}
	g.syncTimer = 0
	wasEmpty := g.state == stateEmpty
	g.setState(statePreparing, m.now)
	m.stats.ClassicRebalances++
	rt := g.maxRebalanceTimeout()
	if wasEmpty && m.cfg.InitialRebalanceDelay > 0 {
		delay := min(m.cfg.InitialRebalanceDelay, rt)
		g.delaying, g.delayNewMember, g.delayRemaining = true, false, rt-delay
		g.joinTimer = m.schedule(m.now.Add(delay), tJoin, g.name, "")
		return
	}
	g.delaying = false
	if len(g.members) == 0 {
		m.completeJoin(g) // the last member left: straight to Empty
		return
	}
	g.joinTimer = m.schedule(m.now.Add(rt), tJoin, g.name, "")
	m.maybeCompleteJoin(g)
}

func (m *Machine) failSyncs(g *group, code int16) {
	for _, id := range g.order {
		mem := g.members[id]
		if mem.sync != nil {
			resp := kmsg.NewPtrSyncGroupResponse()
			resp.Version = mem.sync.version
			resp.ErrorCode = code
			m.reply(mem.sync.tok, resp)
			mem.sync = nil
		}
	}
}

// maybeCompleteJoin ends the join phase early once every member (and every
// handed-out KIP-394 id) has joined.
func (m *Machine) maybeCompleteJoin(g *group) {
	if g.state != statePreparing || g.delaying || len(g.pendingIDs) > 0 {
		return
	}
	for _, mem := range g.members {
		if mem.join == nil {
			return
		}
	}
	m.completeJoin(g)
}

// joinDeadline fires at the end of the join phase or of an initial-delay
// step.
func (m *Machine) joinDeadline(g *group) {
	if g.state != statePreparing {
		return
	}
	if g.delaying {
		if g.delayNewMember && g.delayRemaining > 0 {
			d := min(m.cfg.InitialRebalanceDelay, g.delayRemaining)
			g.delayRemaining -= d
			g.delayNewMember = false
			g.joinTimer = m.schedule(m.now.Add(d), tJoin, g.name, "")
			return
		}
		g.delaying = false
	}
	m.completeJoin(g)
}

// completeJoin ends the join phase: members that did not rejoin go
// (static ones stay until their session expires), the generation is
// bumped, and parked joins are answered.
func (m *Machine) completeJoin(g *group) {
	g.joinTimer = 0
	for _, id := range append([]string(nil), g.order...) {
		mem := g.members[id]
		if mem.join == nil && mem.instanceID == nil {
			m.removeMember(g, mem)
		}
	}
	joined := 0
	for _, mem := range g.members {
		if mem.join != nil {
			joined++
		}
	}
	if len(g.members) > 0 && joined == 0 {
		// Only static members that have not rejoined are left: wait
		// for them (or for their sessions to expire).
		g.joinTimer = m.schedule(m.now.Add(g.maxRebalanceTimeout()), tJoin, g.name, "")
		return
	}
	if g.generation < m.cfg.GenerationBase {
		g.generation = m.cfg.GenerationBase
	}
	g.generation++
	if g.generation > m.maxGeneration {
		m.maxGeneration = g.generation
	}
	if len(g.members) == 0 {
		g.protocolName, g.leader = "", ""
		g.setState(stateEmpty, m.now)
		if g.kind == kindClassic {
			m.persistMembership(g) // a restart must not bring the members back
		}
		return
	}
	if mem := g.members[g.leader]; mem == nil || mem.join == nil {
		g.leader = ""
		for _, id := range g.order {
			if g.members[id].join != nil {
				g.leader = id
				break
			}
		}
	}
	g.protocolName = g.selectProtocol()
	g.setState(stateCompleting, m.now)
	for _, id := range g.order {
		mem := g.members[id]
		mem.synced = false
		if mem.join == nil {
			continue
		}
		m.reply(mem.join.tok, m.joinResponse(g, mem, mem.join.version, id == g.leader, false))
		mem.join = nil
		m.armSession(g, mem)
	}
	g.syncTimer = m.schedule(m.now.Add(g.maxRebalanceTimeout()), tSync, g.name, "")
}

// syncDeadline removes members that did not sync within the rebalance
// timeout after the join completed.
func (m *Machine) syncDeadline(g *group) {
	if g.state != stateCompleting && g.state != stateStable {
		return
	}
	removed := false
	for _, id := range append([]string(nil), g.order...) {
		if mem := g.members[id]; !mem.synced {
			m.removeMember(g, mem)
			removed = true
		}
	}
	if removed {
		m.prepareRebalance(g)
	}
}

func (m *Machine) sessionExpired(g *group, mem *member) {
	if mem.join != nil || mem.sync != nil {
		m.armSession(g, mem) // waiting on the group, not dead
		return
	}
	m.removeMember(g, mem)
	m.afterRemoval(g)
}

// afterRemoval moves the group on after members left.
func (m *Machine) afterRemoval(g *group) {
	switch g.state {
	case stateStable, stateCompleting:
		m.prepareRebalance(g)
	case statePreparing:
		m.maybeCompleteJoin(g)
	}
}

// removeMember drops a member, answering its parked requests.
func (m *Machine) removeMember(g *group, mem *member) {
	if mem.join != nil {
		resp := kmsg.NewPtrJoinGroupResponse()
		resp.Version = mem.join.version
		resp.ErrorCode = kerr.UnknownMemberID.Code
		resp.MemberID = mem.id
		m.reply(mem.join.tok, resp)
		mem.join = nil
	}
	if mem.sync != nil {
		resp := kmsg.NewPtrSyncGroupResponse()
		resp.Version = mem.sync.version
		resp.ErrorCode = kerr.UnknownMemberID.Code
		m.reply(mem.sync.tok, resp)
		mem.sync = nil
	}
	mem.sessionTimer = 0
	delete(g.members, mem.id)
	for i, id := range g.order {
		if id == mem.id {
			g.order = append(g.order[:i:i], g.order[i+1:]...)
			break
		}
	}
	if mem.instanceID != nil && g.static[*mem.instanceID] == mem.id {
		delete(g.static, *mem.instanceID)
	}
	if g.leader == mem.id {
		g.leader = ""
	}
}

func (m *Machine) syncGroup(tok Token, req *kmsg.SyncGroupRequest) {
	fail := func(code int16) {
		resp := req.ResponseKind().(*kmsg.SyncGroupResponse)
		resp.ErrorCode = code
		m.reply(tok, resp)
	}
	g := m.groups[req.Group]
	switch {
	case req.Group == "":
		fail(kerr.InvalidGroupID.Code)
		return
	case g == nil || g.kind == kindConsumer:
		fail(kerr.UnknownMemberID.Code)
		return
	case g.state == stateDead:
		fail(kerr.CoordinatorNotAvailable.Code)
		return
	}
	if code := g.validateMember(req.MemberID, req.InstanceID); code != 0 {
		fail(code)
		return
	}
	if req.Generation != g.generation {
		fail(kerr.IllegalGeneration.Code)
		return
	}
	if (req.ProtocolType != nil && *req.ProtocolType != g.protocolType) || (req.Protocol != nil && *req.Protocol != g.protocolName) {
		fail(kerr.InconsistentGroupProtocol.Code)
		return
	}
	mem := g.members[req.MemberID]
	switch g.state {
	case stateEmpty:
		fail(kerr.UnknownMemberID.Code)
	case statePreparing:
		fail(kerr.RebalanceInProgress.Code)
	case stateCompleting:
		mem.sync = &waiter{tok: tok, version: req.Version}
		mem.synced = true
		m.armSession(g, mem)
		if mem.id != g.leader {
			return
		}
		for _, a := range req.GroupAssignment {
			if other := g.members[a.MemberID]; other != nil {
				other.assignment = append([]byte(nil), a.MemberAssignment...)
			}
		}
		g.setState(stateStable, m.now)
		// The generation is answered only once it is durable, so a
		// restarted broker knows every member a client was told about.
		var replies []Reply
		for _, id := range g.order {
			other := g.members[id]
			if other.sync == nil {
				continue
			}
			replies = append(replies, Reply{Token: other.sync.tok, Response: m.syncResponse(g, other, other.sync.version)})
			other.sync = nil
		}
		m.persistMembership(g, replies...)
		m.maybeAllSynced(g)
	case stateStable:
		mem.synced = true
		m.armSession(g, mem)
		m.reply(tok, m.syncResponse(g, mem, req.Version))
		m.maybeAllSynced(g)
	}
}

func (m *Machine) maybeAllSynced(g *group) {
	for _, mem := range g.members {
		if !mem.synced {
			return
		}
	}
	g.syncTimer = 0
}

func (m *Machine) syncResponse(g *group, mem *member, version int16) *kmsg.SyncGroupResponse {
	resp := kmsg.NewPtrSyncGroupResponse()
	resp.Version = version
	resp.ProtocolType = kmsg.StringPtr(g.protocolType)
	resp.Protocol = kmsg.StringPtr(g.protocolName)
	resp.MemberAssignment = mem.assignment
	if resp.MemberAssignment == nil {
		resp.MemberAssignment = []byte{}
	}
	return resp
}

func (m *Machine) heartbeat(req *kmsg.HeartbeatRequest) *kmsg.HeartbeatResponse {
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	g := m.groups[req.Group]
	switch {
	case req.Group == "":
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	case g == nil || g.kind == kindConsumer:
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp
	case g.state == stateDead:
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	if code := g.validateMember(req.MemberID, req.InstanceID); code != 0 {
		resp.ErrorCode = code
		return resp
	}
	if req.Generation != g.generation {
		resp.ErrorCode = kerr.IllegalGeneration.Code
		return resp
	}
	mem := g.members[req.MemberID]
	switch g.state {
	case stateEmpty:
		resp.ErrorCode = kerr.UnknownMemberID.Code
	case statePreparing:
		m.armSession(g, mem)
		resp.ErrorCode = kerr.RebalanceInProgress.Code
	default:
		m.armSession(g, mem)
	}
	return resp
}

func (m *Machine) leaveGroup(req *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	g := m.groups[req.Group]
	switch {
	case req.Group == "":
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	case g == nil || g.kind == kindConsumer:
		resp.ErrorCode = kerr.UnknownMemberID.Code
		return resp
	case g.state == stateDead:
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
	leaving := req.Members
	if req.Version < 3 {
		leaving = []kmsg.LeaveGroupRequestMember{{MemberID: req.MemberID}}
	}
	removed := false
	for _, lm := range leaving {
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID = lm.MemberID
		rm.InstanceID = cloneStr(lm.InstanceID)
		var mem *member
		switch {
		case lm.InstanceID != nil:
			owner, ok := g.static[*lm.InstanceID]
			switch {
			case !ok:
				rm.ErrorCode = kerr.UnknownMemberID.Code
			case lm.MemberID != "" && lm.MemberID != owner:
				rm.ErrorCode = kerr.FencedInstanceID.Code
			default:
				mem = g.members[owner]
			}
		default:
			if _, ok := g.pendingIDs[lm.MemberID]; ok {
				delete(g.pendingIDs, lm.MemberID)
				removed = true
				break
			}
			if mem = g.members[lm.MemberID]; mem == nil {
				rm.ErrorCode = kerr.UnknownMemberID.Code
			}
		}
		if mem != nil {
			m.removeMember(g, mem)
			removed = true
		}
		resp.Members = append(resp.Members, rm)
	}
	if req.Version < 3 {
		resp.ErrorCode = resp.Members[0].ErrorCode
		resp.Members = nil
	}
	if removed {
		m.afterRemoval(g)
	}
	return resp
}
