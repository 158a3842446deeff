package share

// Share-group membership (ShareGroupHeartbeat), the server-side assignor,
// ShareGroupDescribe, listing and deleting share groups, group configs.

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/exactly/exactly/internal/group"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Client identifies the connection a request came from.
type Client struct{ ID, Host string }

type shareGroup struct {
	name            string
	epoch           int32
	assignmentEpoch int32
	members         map[string]*member
}

type member struct {
	id    string
	epoch int32
	// told is the epoch last sent to the member: it may heartbeat with
	// it until it hears of a newer one (the group moved on meanwhile, or
	// the answer was lost).
	told       int32
	rack       *string
	clientID   string
	host       string
	subscribed []string
	deadline   time.Time
	assigned   map[string][]int32 // topic name → partitions
}

// Bounds on one heartbeat (hostile input).
const (
	maxSubscribedTopics = 10000
	maxMemberIDBytes    = 256
)

// Heartbeat serves ShareGroupHeartbeat. exists reports whether a
// non-share group of that name exists (the names share one namespace).
func (c *Coordinator) Heartbeat(req *kmsg.ShareGroupHeartbeatRequest, client Client, otherGroupExists func(string) bool) *kmsg.ShareGroupHeartbeatResponse {
	resp := req.ResponseKind().(*kmsg.ShareGroupHeartbeatResponse)
	fail := func(code int16, msg string) *kmsg.ShareGroupHeartbeatResponse {
		resp.ErrorCode = code
		if msg != "" {
			resp.ErrorMessage = kmsg.StringPtr(msg)
		}
		return resp
	}
	switch {
	case req.GroupID == "":
		return fail(kerr.InvalidGroupID.Code, "GroupId can't be empty.")
	case req.MemberEpoch < -1:
		return fail(kerr.InvalidRequest.Code, "MemberEpoch is invalid.")
	case len(req.MemberID) > maxMemberIDBytes:
		return fail(kerr.InvalidRequest.Code, "MemberId is too long.")
	case req.MemberID == "" && (req.MemberEpoch != 0 || req.Version >= 1):
		return fail(kerr.InvalidRequest.Code, "MemberId can't be empty.")
	case req.MemberEpoch == 0 && len(req.SubscribedTopicNames) == 0:
		return fail(kerr.InvalidRequest.Code, "SubscribedTopicNames must be set in first request.")
	case len(req.SubscribedTopicNames) > maxSubscribedTopics:
		return fail(kerr.InvalidRequest.Code, "Too many subscribed topics.")
	}
	if req.MemberEpoch == 0 && otherGroupExists != nil && otherGroupExists(req.GroupID) {
		return fail(kerr.InconsistentGroupProtocol.Code, "Group "+req.GroupID+" is not a share group.")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil {
		return fail(kerr.CoordinatorNotAvailable.Code, "")
	}
	now := c.now()
	g := c.groups[req.GroupID]
	id := req.MemberID
	if req.MemberEpoch == -1 {
		if g != nil && g.members[id] != nil {
			c.removeMemberLocked(g, id)
		}
		resp.MemberID = kmsg.StringPtr(id)
		resp.MemberEpoch = -1
		return resp
	}
	if req.MemberEpoch == 0 {
		created := false
		if id == "" {
			id = newMemberID()
		}
		if g == nil {
			if !c.knownLocked(req.GroupID) && c.groupCountLocked() >= c.cfg.MaxGroups {
				return fail(kerr.GroupMaxSizeReached.Code, "The share group limit (group.share.max.groups) is reached.")
			}
			g = &shareGroup{name: req.GroupID, members: map[string]*member{}}
			c.groups[req.GroupID] = g
			created = true
		}
		m := g.members[id]
		if m == nil {
			if len(g.members) >= c.cfg.MaxGroupSize {
				return fail(kerr.GroupMaxSizeReached.Code, "The share group has reached its maximum size (group.share.max.size).")
			}
			m = &member{id: id}
			g.members[id] = m
		}
		m.clientID, m.host = client.ID, client.Host
		m.rack = req.RackID
		m.subscribed = sortedUnique(req.SubscribedTopicNames)
		m.deadline = now.Add(c.groupDurationLocked(g.name, "share.session.timeout.ms", c.cfg.SessionTimeout))
		c.reassignLocked(g)
		if created {
			// The group's existence is durable before its first
			// member hears of it.
			end, err := c.persistLocked(nil, groupKV(g.name, true))
			if err == nil {
				c.mu.Unlock()
				err = c.durable(end)
				c.mu.Lock()
			}
			if err != nil {
				return fail(kerr.CoordinatorNotAvailable.Code, "")
			}
		}
		return c.heartbeatAnswer(resp, g, m)
	}
	if g == nil {
		return fail(kerr.GroupIDNotFound.Code, "Group "+req.GroupID+" not found.")
	}
	m := g.members[id]
	if m == nil {
		return fail(kerr.UnknownMemberID.Code, "")
	}
	if req.MemberEpoch != m.epoch && req.MemberEpoch != m.told {
		return fail(kerr.FencedMemberEpoch.Code, "")
	}
	m.deadline = now.Add(c.groupDurationLocked(g.name, "share.session.timeout.ms", c.cfg.SessionTimeout))
	if req.RackID != nil {
		m.rack = req.RackID
	}
	if req.SubscribedTopicNames != nil && len(req.SubscribedTopicNames) > 0 {
		if subs := sortedUnique(req.SubscribedTopicNames); !slices.Equal(subs, m.subscribed) {
			m.subscribed = subs
			c.reassignLocked(g)
		}
	}
	// Topics created or grown since the last assignment.
	if c.assignmentStaleLocked(g) {
		c.reassignLocked(g)
	}
	return c.heartbeatAnswer(resp, g, m)
}

func (c *Coordinator) heartbeatAnswer(resp *kmsg.ShareGroupHeartbeatResponse, g *shareGroup, m *member) *kmsg.ShareGroupHeartbeatResponse {
	resp.MemberID = kmsg.StringPtr(m.id)
	resp.MemberEpoch = m.epoch
	m.told = m.epoch
	resp.HeartbeatIntervalMillis = int32(c.groupDurationLocked(g.name, "share.heartbeat.interval.ms", c.cfg.HeartbeatInterval) / time.Millisecond)
	a := kmsg.NewShareGroupHeartbeatResponseAssignment()
	for _, name := range sortedKeys(m.assigned) {
		t, ok := c.opts.Topics.TopicByName(name)
		if !ok {
			continue
		}
		tp := kmsg.NewShareGroupHeartbeatResponseAssignmentTopicPartition()
		tp.TopicID = t.ID
		tp.Partitions = slices.Clone(m.assigned[name])
		a.TopicPartitions = append(a.TopicPartitions, tp)
	}
	resp.Assignment = &a
	return resp
}

// removeMemberLocked drops a member, closes its sessions, releases what it
// holds and rebalances the rest.
func (c *Coordinator) removeMemberLocked(g *shareGroup, id string) {
	delete(g.members, id)
	for k, s := range c.sessions {
		if k.group == g.name && k.member == id {
			c.closeSessionLocked(k, s)
		}
	}
	released := false
	for k, p := range c.parts {
		if k.Group == g.name && p.ReleaseMember(id, c.cfg.DeliveryCountLimit) {
			released = true
		}
	}
	if released {
		c.wakeLocked()
	}
	c.reassignLocked(g)
}

// assignmentStaleLocked reports whether a subscribed topic's partition
// count or existence changed since the last assignment.
func (c *Coordinator) assignmentStaleLocked(g *shareGroup) bool {
	want := c.computeAssignment(g)
	for id, m := range g.members {
		if !sameAssignment(want[id], m.assigned) {
			return true
		}
	}
	return false
}

// reassignLocked runs the assignor and bumps the group epoch when the
// assignment changed. Share partitions may have many readers, so no
// revocation step is needed: every member moves to the new epoch at once.
func (c *Coordinator) reassignLocked(g *shareGroup) {
	want := c.computeAssignment(g)
	changed := false
	for id, m := range g.members {
		if !sameAssignment(want[id], m.assigned) || m.epoch == 0 {
			changed = true
		}
	}
	if !changed {
		return
	}
	g.epoch++
	g.assignmentEpoch = g.epoch
	for id, m := range g.members {
		m.assigned = want[id]
		m.epoch = g.epoch
	}
}

// computeAssignment is the simple assignor: for each topic, its
// partitions are spread over the members subscribed to it. With fewer
// members than partitions each partition has one member (round robin);
// with more, each member gets one partition and partitions are shared
// evenly, so no member idles.
func (c *Coordinator) computeAssignment(g *shareGroup) map[string]map[string][]int32 {
	out := map[string]map[string][]int32{}
	subs := map[string][]string{}
	for id, m := range g.members {
		out[id] = map[string][]int32{}
		for _, t := range m.subscribed {
			subs[t] = append(subs[t], id)
		}
	}
	for topic, ids := range subs {
		t, ok := c.opts.Topics.TopicByName(topic)
		if !ok || t.Partitions <= 0 {
			continue
		}
		sort.Strings(ids)
		n := int32(len(ids))
		if n <= t.Partitions {
			for p := int32(0); p < t.Partitions; p++ {
				id := ids[p%n]
				out[id][topic] = append(out[id][topic], p)
			}
			continue
		}
		for i, id := range ids {
			out[id][topic] = []int32{int32(i) % t.Partitions}
		}
	}
	return out
}

func sameAssignment(a, b map[string][]int32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func sortedUnique(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Describe serves ShareGroupDescribe.
func (c *Coordinator) Describe(req *kmsg.ShareGroupDescribeRequest) *kmsg.ShareGroupDescribeResponse {
	resp := req.ResponseKind().(*kmsg.ShareGroupDescribeResponse)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, name := range req.GroupIDs {
		rg := kmsg.NewShareGroupDescribeResponseGroup()
		rg.GroupID = name
		rg.AuthorizedOperations = -2147483648
		g := c.groups[name]
		if g == nil && !c.knownLocked(name) {
			rg.ErrorCode = kerr.GroupIDNotFound.Code
			rg.ErrorMessage = kmsg.StringPtr("Group " + name + " not found.")
			rg.GroupState = "Dead"
			resp.Groups = append(resp.Groups, rg)
			continue
		}
		rg.Assignor = "simple"
		rg.GroupState = "Empty"
		if g != nil {
			rg.GroupEpoch, rg.AssignmentEpoch = g.epoch, g.assignmentEpoch
			if len(g.members) > 0 {
				rg.GroupState = "Stable"
			}
			for _, id := range sortedKeys(g.members) {
				m := g.members[id]
				rm := kmsg.NewShareGroupDescribeResponseGroupMember()
				rm.MemberID, rm.RackID, rm.MemberEpoch = m.id, m.rack, m.epoch
				rm.ClientID, rm.ClientHost = m.clientID, m.host
				rm.SubscribedTopicNames = slices.Clone(m.subscribed)
				for _, topic := range sortedKeys(m.assigned) {
					t, ok := c.opts.Topics.TopicByName(topic)
					if !ok {
						continue
					}
					tp := kmsg.NewShareGroupDescribeResponseGroupMemberAssignmentTopicPartition()
					tp.TopicID, tp.Topic, tp.Partitions = t.ID, topic, slices.Clone(m.assigned[topic])
					rm.Assignment.TopicPartitions = append(rm.Assignment.TopicPartitions, tp)
				}
				rg.Members = append(rg.Members, rm)
			}
		}
		resp.Groups = append(resp.Groups, rg)
	}
	return resp
}

// knownLocked reports whether name is a share group (created by a member
// joining or by AlterShareGroupOffsets, not yet deleted) or holds
// share-partition state.
func (c *Coordinator) knownLocked(name string) bool {
	if c.groups[name] != nil {
		return true
	}
	for k := range c.parts {
		if k.Group == name {
			return true
		}
	}
	return false
}

// HasGroup reports whether name is a share group (for the other group
// APIs: one namespace).
func (c *Coordinator) HasGroup(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.groups[name] != nil {
		return true
	}
	for k := range c.parts {
		if k.Group == name {
			return true
		}
	}
	return false
}

// GroupListing is one share group for ListGroups.
type GroupListing struct {
	Name  string
	State string // Empty or Stable
}

// List lists the share groups: those with members or share-partition
// state.
func (c *Coordinator) List() []GroupListing {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := map[string]bool{}
	for name := range c.groups {
		names[name] = true
	}
	for k := range c.parts {
		names[k.Group] = true
	}
	out := make([]GroupListing, 0, len(names))
	for _, name := range sortedKeys(names) {
		st := "Empty"
		if g := c.groups[name]; g != nil && len(g.members) > 0 {
			st = "Stable"
		}
		out = append(out, GroupListing{Name: name, State: st})
	}
	return out
}

// DeleteGroup deletes an empty share group: its share-partition state
// and configs (tombstones), durably before it returns. Codes:
// GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP.
func (c *Coordinator) DeleteGroup(name string) int16 {
	c.mu.Lock()
	if g := c.groups[name]; g != nil && len(g.members) > 0 {
		c.mu.Unlock()
		return kerr.NonEmptyGroup.Code
	}
	if !c.knownLocked(name) {
		c.mu.Unlock()
		return kerr.GroupIDNotFound.Code
	}
	dirty := map[partitionKey]bool{}
	for k := range c.parts {
		if k.Group == name {
			c.dropPartLocked(k)
			dirty[k] = true
		}
	}
	extra := []group.KV{groupKV(name, false)}
	if _, ok := c.configs[name]; ok {
		delete(c.configs, name)
		extra = append(extra, c.configKV(name))
	}
	delete(c.groups, name)
	end, err := c.persistLocked(dirty, extra...)
	c.mu.Unlock()
	if err == nil {
		err = c.durable(end)
	}
	if err != nil {
		return kerr.CoordinatorNotAvailable.Code
	}
	return 0
}

// Group configs (IncrementalAlterConfigs/DescribeConfigs on the GROUP
// resource).

// GroupConfigDef is one group config key.
type GroupConfigDef struct {
	Name, Doc string
	validate  func(string) error
	// broker returns the broker-wide default.
	broker func(Config) string
}

func intRange(lo, hi int64) func(string) error {
	return func(v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < lo || n > hi {
			return fmt.Errorf("must be an integer in [%d, %d]", lo, hi)
		}
		return nil
	}
}

func oneOf(vals ...string) func(string) error {
	return func(v string) error {
		if !slices.Contains(vals, v) {
			return fmt.Errorf("must be one of %s", strings.Join(vals, ", "))
		}
		return nil
	}
}

func ms(d time.Duration) string { return strconv.FormatInt(int64(d/time.Millisecond), 10) }

// GroupConfigDefs lists the group config keys served (share groups).
func GroupConfigDefs(cfg Config) []GroupConfigDef {
	return []GroupConfigDef{
		{Name: "share.auto.offset.reset", validate: oneOf("latest", "earliest"),
			broker: func(Config) string { return "latest" }},
		{Name: "share.isolation.level", validate: oneOf("read_uncommitted", "read_committed"),
			broker: func(Config) string { return "read_uncommitted" }},
		{Name: "share.record.lock.duration.ms",
			validate: intRange(int64(cfg.MinRecordLock/time.Millisecond), int64(cfg.MaxRecordLock/time.Millisecond)),
			broker:   func(c Config) string { return ms(c.RecordLockDuration) }},
		{Name: "share.session.timeout.ms", validate: intRange(1, 1<<31-1),
			broker: func(c Config) string { return ms(c.SessionTimeout) }},
		{Name: "share.heartbeat.interval.ms", validate: intRange(1, 1<<31-1),
			broker: func(c Config) string { return ms(c.HeartbeatInterval) }},
	}
}

// GroupConfigEntry is one described group config.
type GroupConfigEntry struct {
	Name, Value string
	IsDefault   bool
}

// DescribeGroupConfigs lists a group's configs (names nil = all).
func (c *Coordinator) DescribeGroupConfigs(name string, names []string) []GroupConfigEntry {
	c.mu.Lock()
	set := c.configs[name]
	c.mu.Unlock()
	var out []GroupConfigEntry
	for _, d := range GroupConfigDefs(c.cfg) {
		if names != nil && !slices.Contains(names, d.Name) {
			continue
		}
		e := GroupConfigEntry{Name: d.Name, Value: d.broker(c.cfg), IsDefault: true}
		if v, ok := set[d.Name]; ok {
			e.Value, e.IsDefault = v, false
		}
		out = append(out, e)
	}
	return out
}

// ConfigOp is one IncrementalAlterConfigs operation (SET 0, DELETE 1).
type ConfigOp struct {
	Name  string
	Op    int8
	Value *string
}

// maxConfiguredGroups bounds the groups with config overrides.
const maxConfiguredGroups = 10000

// AlterGroupConfigs applies ops to a group's configs, validated as a whole
// first; durable before it returns. The error wraps kerr codes.
func (c *Coordinator) AlterGroupConfigs(name string, ops []ConfigOp, replace, validateOnly bool) error {
	if name == "" {
		return kerr.InvalidGroupID
	}
	defs := map[string]GroupConfigDef{}
	for _, d := range GroupConfigDefs(c.cfg) {
		defs[d.Name] = d
	}
	c.mu.Lock()
	next := map[string]string{}
	if !replace {
		for k, v := range c.configs[name] {
			next[k] = v
		}
	}
	for _, op := range ops {
		d, ok := defs[op.Name]
		if !ok {
			c.mu.Unlock()
			return fmt.Errorf("%w: unknown or unsupported group config %q", kerr.InvalidConfig, op.Name)
		}
		switch op.Op {
		case 0:
			if op.Value == nil {
				c.mu.Unlock()
				return fmt.Errorf("%w: %s: null value", kerr.InvalidConfig, op.Name)
			}
			if err := d.validate(*op.Value); err != nil {
				c.mu.Unlock()
				return fmt.Errorf("%w: %s: %v", kerr.InvalidConfig, op.Name, err)
			}
			next[op.Name] = *op.Value
		case 1:
			delete(next, op.Name)
		default:
			c.mu.Unlock()
			return fmt.Errorf("%w: %s is not a list config", kerr.InvalidConfig, op.Name)
		}
	}
	_, had := c.configs[name]
	if validateOnly {
		c.mu.Unlock()
		return nil
	}
	if !had && len(next) > 0 && len(c.configs) >= maxConfiguredGroups {
		c.mu.Unlock()
		return fmt.Errorf("%w: too many groups with configs", kerr.PolicyViolation)
	}
	if len(next) == 0 {
		delete(c.configs, name)
	} else {
		c.configs[name] = next
	}
	end, err := c.persistLocked(nil, c.configKV(name))
	c.mu.Unlock()
	if err == nil {
		err = c.durable(end)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", kerr.CoordinatorNotAvailable, err)
	}
	return nil
}

// groupConfigLocked returns a group's effective config value.
func (c *Coordinator) groupConfigLocked(name, key string) string {
	if v, ok := c.configs[name][key]; ok {
		return v
	}
	for _, d := range GroupConfigDefs(c.cfg) {
		if d.Name == key {
			return d.broker(c.cfg)
		}
	}
	return ""
}

func (c *Coordinator) lockDurationLocked(name string) time.Duration {
	return c.groupDurationLocked(name, "share.record.lock.duration.ms", c.cfg.RecordLockDuration)
}

// groupDurationLocked is a group's millisecond config key, else def.
func (c *Coordinator) groupDurationLocked(name, key string, def time.Duration) time.Duration {
	n, err := strconv.ParseInt(c.groupConfigLocked(name, key), 10, 64)
	if err != nil || n <= 0 {
		return def
	}
	return time.Duration(n) * time.Millisecond
}

func encodeConfig(cfg map[string]string) []byte {
	b, _ := json.Marshal(cfg)
	return b
}
