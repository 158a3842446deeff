package group

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Config holds the coordinator's tunables, named after Kafka's broker keys.
type Config struct {
	// GenerationBase is the floor for classic group generations: a group's
	// next generation is above it. The driver passes a value durably
	// reserved above every generation handed out before a restart, since
	// group membership is not persisted: without it a restarted broker
	// would hand out generation 1 again, and a member still holding a
	// pre-restart generation would look newer than the real owner to
	// client-side sticky assignors.
	GenerationBase int32
	// MinSessionTimeout and MaxSessionTimeout bound a classic member's
	// session timeout (group.min/max.session.timeout.ms).
	MinSessionTimeout, MaxSessionTimeout time.Duration
	// InitialRebalanceDelay is group.initial.rebalance.delay.ms: the first
	// rebalance of an empty classic group waits this long (extended while
	// members keep arriving, up to the rebalance timeout) so that a fleet
	// starting together gets one rebalance instead of one per member.
	InitialRebalanceDelay time.Duration
	// MaxGroupSize is group.max.size for classic groups.
	MaxGroupSize int
	// ConsumerSessionTimeout and ConsumerHeartbeatInterval are
	// group.consumer.session.timeout.ms and group.consumer.heartbeat.interval.ms
	// (KIP-848 groups: the broker, not the client, sets them).
	ConsumerSessionTimeout, ConsumerHeartbeatInterval time.Duration
	// ConsumerMaxGroupSize is group.consumer.max.size.
	ConsumerMaxGroupSize int
	// OffsetsRetention is offsets.retention.minutes: committed offsets of a
	// group without members expire this long after the later of their
	// commit and the group becoming empty (KIP-211).
	OffsetsRetention time.Duration
	// MaxMetadataBytes is offset.metadata.max.bytes.
	MaxMetadataBytes int
	// NewID returns a fresh unique string; member ids are built from it.
	// It must not repeat across restarts (a stale member's id must never
	// name a new member), so production uses random UUIDs; transcript
	// tests inject a counter.
	NewID func() string
}

// DefaultConfig returns Kafka's defaults (NewID must still be set).
func DefaultConfig() Config {
	return Config{
		MinSessionTimeout:         6 * time.Second,
		MaxSessionTimeout:         30 * time.Minute,
		InitialRebalanceDelay:     3 * time.Second,
		MaxGroupSize:              int(^uint32(0) >> 1),
		ConsumerSessionTimeout:    45 * time.Second,
		ConsumerHeartbeatInterval: 5 * time.Second,
		ConsumerMaxGroupSize:      int(^uint32(0) >> 1),
		OffsetsRetention:          7 * 24 * time.Hour,
		MaxMetadataBytes:          4096,
	}
}

// TopicInfo is what the coordinator needs to know about a topic.
type TopicInfo struct {
	Name       string
	ID         [16]byte
	Partitions int32
}

// TopicView answers topic questions from the broker's catalog. It must be
// safe to call from the coordinator's goroutine at any time; the machine
// treats each answer as the truth at that instant.
type TopicView interface {
	TopicByName(name string) (TopicInfo, bool)
	TopicByID(id [16]byte) (TopicInfo, bool)
	// Topics lists every topic sorted by name (for regex subscriptions).
	Topics() []TopicInfo
}

// Token identifies one request whose reply the caller is waiting for.
type Token uint64

// Client identifies who sent a request, for DescribeGroups.
type Client struct {
	ID   string
	Host string
}

// Reply is the answer to the request identified by Token: a Kafka response,
// or for transaction operations (which have no response of their own) Err.
type Reply struct {
	Token    Token
	Response kmsg.Response
	Err      error
}

// Persist is a set of records the caller must append to __consumer_offsets
// and make durable, then report with Persisted(Seq) (or PersistFailed).
type Persist struct {
	Seq     uint64
	Records []KV
}

// Output is what one step of the machine asks its caller to do.
type Output struct {
	// Replies to send now. Replies that depend on records being durable are
	// held back until Persisted.
	Replies []Reply
	// Persist, if non-nil, must be appended before anything later is.
	Persist *Persist
	// Wake is when Tick must next be called; zero means no deadline.
	Wake time.Time
}

// Stats are cumulative counters for metrics.
type Stats struct {
	// ClassicRebalances counts classic rebalances started.
	ClassicRebalances uint64
	// ConsumerEpochBumps counts KIP-848 group epoch bumps (new target
	// assignments).
	ConsumerEpochBumps uint64
	// ExpiredOffsets counts offsets removed by retention.
	ExpiredOffsets uint64
}

// Machine is the group coordinator state machine: classic groups (join,
// sync, heartbeat, leave, static membership), KIP-848 consumer groups,
// committed offsets and transactional offset staging.
//
// It has no goroutines, no I/O and no clock. Every entry point takes the
// current time and returns an Output: replies, records to persist, and when
// to call Tick next. State derived from records (committed offsets, staged
// transactional offsets) changes only when records become durable
// (Persisted) or are replayed at start (Replay), so nobody ever reads an
// offset that a crash could take back. Membership is not persisted: after a
// restart, members rejoin, as with Kafka.
type Machine struct {
	cfg    Config
	topics TopicView

	groups map[string]*group

	timers   timerHeap
	timerSeq uint64

	maxGeneration int32 // highest classic generation handed out

	seq     uint64 // last Persist.Seq handed out
	pending []pendingPersist
	failed  error // set by PersistFailed: every later request is refused

	now time.Time
	out *Output

	stats Stats
}

// pendingPersist holds records handed out for persistence and the replies
// that wait for them.
type pendingPersist struct {
	seq     uint64
	recs    []record
	replies []Reply
	// reads answered only once recs are applied (an OffsetFetch that
	// arrived after a commit to the same group must see it).
	reads []func() Reply
}

// NewMachine returns an empty coordinator.
func NewMachine(cfg Config, topics TopicView) *Machine {
	d := DefaultConfig()
	if cfg.MinSessionTimeout <= 0 {
		cfg.MinSessionTimeout = d.MinSessionTimeout
	}
	if cfg.MaxSessionTimeout <= 0 {
		cfg.MaxSessionTimeout = d.MaxSessionTimeout
	}
	if cfg.MaxGroupSize <= 0 {
		cfg.MaxGroupSize = d.MaxGroupSize
	}
	if cfg.ConsumerSessionTimeout <= 0 {
		cfg.ConsumerSessionTimeout = d.ConsumerSessionTimeout
	}
	if cfg.ConsumerHeartbeatInterval <= 0 {
		cfg.ConsumerHeartbeatInterval = d.ConsumerHeartbeatInterval
	}
	if cfg.ConsumerMaxGroupSize <= 0 {
		cfg.ConsumerMaxGroupSize = d.ConsumerMaxGroupSize
	}
	if cfg.OffsetsRetention <= 0 {
		cfg.OffsetsRetention = d.OffsetsRetention
	}
	if cfg.MaxMetadataBytes <= 0 {
		cfg.MaxMetadataBytes = d.MaxMetadataBytes
	}
	if cfg.NewID == nil {
		panic("group: Config.NewID is required")
	}
	return &Machine{cfg: cfg, topics: topics, groups: map[string]*group{}}
}

// begin starts a step at now.
func (m *Machine) begin(now time.Time) {
	m.now = now
	m.out = &Output{}
}

// end finishes a step and returns its output.
func (m *Machine) end() Output {
	out := m.out
	m.out = nil
	out.Wake = m.nextWake()
	return *out
}

func (m *Machine) reply(tok Token, resp kmsg.Response) {
	m.out.Replies = append(m.out.Replies, Reply{Token: tok, Response: resp})
}

// persist hands recs out for persistence; replies are sent when they are
// durable and applied. All records of one step share one Persist.
func (m *Machine) persist(recs []record, replies ...Reply) {
	if len(recs) == 0 {
		m.out.Replies = append(m.out.Replies, replies...)
		return
	}
	if m.out.Persist == nil {
		m.seq++
		m.out.Persist = &Persist{Seq: m.seq}
		m.pending = append(m.pending, pendingPersist{seq: m.seq})
	}
	pp := &m.pending[len(m.pending)-1]
	for i := range recs {
		m.out.Persist.Records = append(m.out.Persist.Records, recs[i].encode())
	}
	pp.recs = append(pp.recs, recs...)
	pp.replies = append(pp.replies, replies...)
}

// Handle serves one Kafka request. tok identifies it in the Output (its
// reply may come in this Output or a later one: JoinGroup and SyncGroup
// wait for the rest of the group, commits wait for durability).
func (m *Machine) Handle(now time.Time, tok Token, client Client, req kmsg.Request) Output {
	m.begin(now)
	if m.failed != nil {
		m.reply(tok, ErrorResponse(req, kerr.CoordinatorNotAvailable.Code))
		return m.end()
	}
	switch r := req.(type) {
	case *kmsg.JoinGroupRequest:
		m.joinGroup(tok, client, r)
	case *kmsg.SyncGroupRequest:
		m.syncGroup(tok, r)
	case *kmsg.HeartbeatRequest:
		m.reply(tok, m.heartbeat(r))
	case *kmsg.LeaveGroupRequest:
		m.reply(tok, m.leaveGroup(r))
	case *kmsg.OffsetCommitRequest:
		m.offsetCommit(tok, r)
	case *kmsg.OffsetFetchRequest:
		m.offsetFetchAfterPending(tok, r)
	case *kmsg.OffsetDeleteRequest:
		m.offsetDelete(tok, r)
	case *kmsg.DescribeGroupsRequest:
		m.reply(tok, m.describeGroups(r))
	case *kmsg.ListGroupsRequest:
		m.reply(tok, m.listGroups(r))
	case *kmsg.DeleteGroupsRequest:
		m.deleteGroups(tok, r)
	case *kmsg.ConsumerGroupHeartbeatRequest:
		resp := m.consumerHeartbeat(client, r)
		if g := m.groups[r.Group]; g != nil && (g.cg != nil || g.cmeta != nil) {
			// What the member is told (epoch, partitions) is durable
			// before it hears it.
			m.persistConsumerGroup(g, Reply{Token: tok, Response: resp})
		} else {
			m.reply(tok, resp)
		}
	case *kmsg.ConsumerGroupDescribeRequest:
		m.reply(tok, m.consumerDescribe(r))
	default:
		panic(fmt.Sprintf("group: Handle of %T", req))
	}
	return m.end()
}

// Tick fires every deadline due at now.
func (m *Machine) Tick(now time.Time) Output {
	m.begin(now)
	for {
		t, ok := m.popDue(now)
		if !ok {
			break
		}
		m.fire(t)
	}
	return m.end()
}

func (m *Machine) fire(t timer) {
	g := m.groups[t.group]
	if g == nil {
		return
	}
	switch t.kind {
	case tJoin:
		if g.joinTimer == t.id {
			g.joinTimer = 0
			m.joinDeadline(g)
		}
	case tSync:
		if g.syncTimer == t.id {
			g.syncTimer = 0
			m.syncDeadline(g)
		}
	case tSession:
		if mem := g.members[t.member]; mem != nil && mem.sessionTimer == t.id {
			m.sessionExpired(g, mem)
		}
	case tPending:
		if id, ok := g.pendingIDs[t.member]; ok && id == t.id {
			delete(g.pendingIDs, t.member)
			if g.state == statePreparing {
				m.maybeCompleteJoin(g)
			}
			m.maybeDropGroup(g)
		}
	case tCSession:
		if g.cg != nil {
			if cm := g.cg.members[t.member]; cm != nil && cm.sessionTimer == t.id {
				m.consumerFence(g, cm, "session timeout")
				m.persistConsumerGroup(g)
			}
		}
	case tCRevoke:
		if g.cg != nil {
			if cm := g.cg.members[t.member]; cm != nil && cm.revokeTimer == t.id {
				m.consumerFence(g, cm, "revocation not acknowledged within the rebalance timeout")
				m.persistConsumerGroup(g)
			}
		}
	}
}

// Persisted reports that every record handed out with a Seq up to seq is
// durable: those records take effect and their replies are released.
func (m *Machine) Persisted(now time.Time, seq uint64) Output {
	m.begin(now)
	n := 0
	for n < len(m.pending) && m.pending[n].seq <= seq {
		pp := m.pending[n]
		for i := range pp.recs {
			m.apply(&pp.recs[i])
		}
		m.out.Replies = append(m.out.Replies, pp.replies...)
		for _, read := range pp.reads {
			m.out.Replies = append(m.out.Replies, read())
		}
		n++
	}
	m.pending = m.pending[n:]
	return m.end()
}

// PersistFailed reports that records could not be made durable (the
// offsets log is offline). Nothing pending takes effect; the waiting
// requests are answered COORDINATOR_NOT_AVAILABLE, and so is every later
// request: a coordinator that cannot persist must not accept commits.
func (m *Machine) PersistFailed(now time.Time, err error) Output {
	m.begin(now)
	if m.failed == nil {
		m.failed = err
	}
	for _, pp := range m.pending {
		for _, read := range pp.reads {
			m.out.Replies = append(m.out.Replies, read()) // nothing applied: answer from what is durable
		}
		for _, r := range pp.replies {
			if r.Response != nil {
				failHeld(r.Response, kerr.CoordinatorNotAvailable.Code)
			} else {
				r.Err = fmt.Errorf("%w: %v", kerr.CoordinatorNotAvailable, err)
			}
			m.out.Replies = append(m.out.Replies, r)
		}
	}
	m.pending = nil
	return m.end()
}

// Failed returns the persistence error that stopped the coordinator, if any.
func (m *Machine) Failed() error { return m.failed }

// Pending reports whether records are waiting for Persisted.
func (m *Machine) Pending() bool { return len(m.pending) > 0 }

// Replay applies one durable record read back from __consumer_offsets at
// start, in log order.
func (m *Machine) Replay(now time.Time, key, value []byte) error {
	r, err := decodeRecord(key, value)
	if err != nil {
		return err
	}
	m.now = now
	switch r.kind {
	case recGroupMeta:
		m.loadMembership(&r)
		return nil
	case recConsumerGroup:
		return m.loadConsumerGroup(&r)
	}
	m.apply(&r)
	return nil
}

// apply makes one durable record take effect.
func (m *Machine) apply(r *record) {
	switch r.kind {
	case recOffset:
		if r.delete {
			g := m.groups[r.group]
			if g == nil {
				return
			}
			g.deleteOffset(r.topic, r.partition)
			m.maybeDropGroup(g)
			return
		}
		g := m.groupOrNew(r.group)
		if g.state == stateDead {
			g.state = stateEmpty
			g.stateSince = m.now
		}
		g.setOffset(r.topic, r.partition, r.val)
	case recTxnOffset:
		if r.delete {
			if g := m.groups[r.group]; g != nil {
				if st := g.txn[r.pid]; st != nil {
					st.remove(r.topic, r.partition)
					if len(st.offsets) == 0 {
						delete(g.txn, r.pid)
					}
				}
				m.maybeDropGroup(g)
			}
			return
		}
		g := m.groupOrNew(r.group)
		if g.txn == nil {
			g.txn = map[int64]*txnStage{}
		}
		st := g.txn[r.pid]
		if st == nil {
			st = &txnStage{epoch: r.epoch}
			g.txn[r.pid] = st
		}
		st.epoch = r.epoch
		st.set(r.topic, r.partition, r.val)
	case recTxnMarker:
		g := m.groups[r.group]
		if g == nil {
			return
		}
		st := g.txn[r.pid]
		if st == nil {
			return
		}
		delete(g.txn, r.pid)
		if r.commit {
			if g.state == stateDead {
				g.state = stateEmpty
				g.stateSince = m.now
			}
			for _, o := range st.offsets {
				g.setOffset(o.topic, o.partition, o.val)
			}
		}
		m.maybeDropGroup(g)
	case recGroupMeta, recConsumerGroup:
		// Live membership is already in memory; the record only
		// matters to a replay (loadMembership, loadConsumerGroup).
	}
}

// groupNames lists the groups' names in order, so every walk over them
// (snapshots, expiry, sweeps) emits records deterministically.
func (m *Machine) groupNames() []string { return slices.Sorted(maps.Keys(m.groups)) }

// groupOrNew returns the named group, creating an empty one (no protocol
// yet: it only holds offsets until members arrive).
func (m *Machine) groupOrNew(name string) *group {
	g := m.groups[name]
	if g == nil {
		g = newGroup(name, m.now)
		m.groups[name] = g
	}
	return g
}

// maybeDropGroup forgets a group that holds nothing any more: a deleted
// group once its offsets are gone, or an empty group with no offsets, no
// staged transaction offsets and no members.
func (m *Machine) maybeDropGroup(g *group) {
	if len(g.offsets) > 0 || len(g.txn) > 0 || g.hasMembers() || len(g.pendingIDs) > 0 {
		return
	}
	if g.state == stateDead || (g.state == stateEmpty && g.kind == kindNone) {
		delete(m.groups, g.name)
	}
}

// SnapshotRecords restates the whole durable state (classic membership,
// committed and staged offsets) as records. Written to the log and made durable, they make
// everything before them redundant, which is how the offsets log is kept
// from growing forever. Call only with nothing pending (see Pending), so
// the snapshot holds every record the log holds.
func (m *Machine) SnapshotRecords() []KV {
	names := m.groupNames()
	var out []KV
	for _, name := range names {
		g := m.groups[name]
		if g.meta != nil {
			r := record{kind: recGroupMeta, group: name, meta: g.meta}
			out = append(out, r.encode())
		}
		if g.cmeta != nil {
			r := record{kind: recConsumerGroup, group: name, cstate: g.cmeta}
			out = append(out, r.encode())
		}
		g.eachOffset(func(topic string, p int32, o Offset) {
			r := record{kind: recOffset, group: name, topic: topic, partition: p, val: o}
			out = append(out, r.encode())
		})
		pids := make([]int64, 0, len(g.txn))
		for pid := range g.txn {
			pids = append(pids, pid)
		}
		sort.Slice(pids, func(i, j int) bool { return pids[i] < pids[j] })
		for _, pid := range pids {
			st := g.txn[pid]
			for _, o := range st.offsets {
				r := record{kind: recTxnOffset, pid: pid, group: name, topic: o.topic, partition: o.partition, epoch: st.epoch, val: o.val}
				out = append(out, r.encode())
			}
		}
	}
	return out
}

// LiveRecords is how many records a snapshot would write now.
func (m *Machine) LiveRecords() int {
	n := 0
	for _, g := range m.groups {
		if g.meta != nil {
			n++
		}
		if g.cmeta != nil {
			n++
		}
		for _, ps := range g.offsets {
			n += len(ps)
		}
		for _, st := range g.txn {
			n += len(st.offsets)
		}
	}
	return n
}

// Stats returns cumulative counters.
func (m *Machine) Stats() Stats { return m.stats }

// CommittedOffset is one group's committed offset for a partition.
type CommittedOffset struct {
	Group     string
	Topic     string
	Partition int32
	Offset    int64
}

// Committed lists every committed offset, sorted by group, topic and
// partition (for lag metrics).
func (m *Machine) Committed() []CommittedOffset {
	var out []CommittedOffset
	for name, g := range m.groups {
		g.eachOffset(func(topic string, p int32, o Offset) {
			out = append(out, CommittedOffset{Group: name, Topic: topic, Partition: p, Offset: o.Offset})
		})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Partition < b.Partition
	})
	return out
}

// ExpireOffsets removes committed offsets past retention (KIP-211): only
// in groups without members, and counted from the later of the commit and
// the moment the group became empty. Expired offsets are persisted as
// tombstones.
func (m *Machine) ExpireOffsets(now time.Time) Output {
	m.begin(now)
	if m.failed != nil {
		return m.end()
	}
	names := m.groupNames()
	retention := m.cfg.OffsetsRetention.Milliseconds()
	nowMs := now.UnixMilli()
	var recs []record
	for _, name := range names {
		g := m.groups[name]
		if g.hasMembers() || g.state == stateDead {
			continue
		}
		if len(g.offsets) == 0 && len(g.txn) == 0 && len(g.pendingIDs) == 0 {
			delete(m.groups, name) // an empty group holding nothing
			continue
		}
		emptySince := g.stateSince.UnixMilli()
		g.eachOffset(func(topic string, p int32, o Offset) {
			if max(o.CommitTime, emptySince)+retention <= nowMs {
				recs = append(recs, record{kind: recOffset, group: name, topic: topic, partition: p, delete: true})
			}
		})
	}
	m.stats.ExpiredOffsets += uint64(len(recs))
	m.persist(recs)
	return m.end()
}

// failHeld rewrites a response that was waiting for durability (commit,
// offset delete, group delete) so that every entry reports code.
func failHeld(resp kmsg.Response, code int16) {
	switch r := resp.(type) {
	case *kmsg.OffsetCommitResponse:
		for i := range r.Topics {
			for j := range r.Topics[i].Partitions {
				r.Topics[i].Partitions[j].ErrorCode = code
			}
		}
	case *kmsg.OffsetDeleteResponse:
		r.ErrorCode = code
		r.Topics = nil
	case *kmsg.DeleteGroupsResponse:
		for i := range r.Groups {
			r.Groups[i].ErrorCode = code
		}
	case *kmsg.SyncGroupResponse:
		r.ErrorCode = code
		r.MemberAssignment = []byte{}
	case *kmsg.JoinGroupResponse:
		r.ErrorCode = code
		r.Members = nil
	}
}

// ErrorResponse builds req's response with every error field set to code;
// it answers requests that cannot be served at all (coordinator stopping or
// failed).
func ErrorResponse(req kmsg.Request, code int16) kmsg.Response {
	switch r := req.(type) {
	case *kmsg.JoinGroupRequest:
		resp := r.ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = code
		resp.MemberID = r.MemberID
		return resp
	case *kmsg.SyncGroupRequest:
		resp := r.ResponseKind().(*kmsg.SyncGroupResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.HeartbeatRequest:
		resp := r.ResponseKind().(*kmsg.HeartbeatResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.LeaveGroupRequest:
		resp := r.ResponseKind().(*kmsg.LeaveGroupResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.OffsetCommitRequest:
		resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
		fillCommitResponse(r, resp, code)
		return resp
	case *kmsg.OffsetFetchRequest:
		resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
		resp.ErrorCode = code
		for _, rg := range r.Groups {
			g := kmsg.NewOffsetFetchResponseGroup()
			g.Group = rg.Group
			g.ErrorCode = code
			resp.Groups = append(resp.Groups, g)
		}
		return resp
	case *kmsg.OffsetDeleteRequest:
		resp := r.ResponseKind().(*kmsg.OffsetDeleteResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.DescribeGroupsRequest:
		resp := r.ResponseKind().(*kmsg.DescribeGroupsResponse)
		for _, name := range r.Groups {
			g := kmsg.NewDescribeGroupsResponseGroup()
			g.Group = name
			g.ErrorCode = code
			resp.Groups = append(resp.Groups, g)
		}
		return resp
	case *kmsg.ListGroupsRequest:
		resp := r.ResponseKind().(*kmsg.ListGroupsResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.DeleteGroupsRequest:
		resp := r.ResponseKind().(*kmsg.DeleteGroupsResponse)
		for _, name := range r.Groups {
			g := kmsg.NewDeleteGroupsResponseGroup()
			g.Group = name
			g.ErrorCode = code
			resp.Groups = append(resp.Groups, g)
		}
		return resp
	case *kmsg.ConsumerGroupHeartbeatRequest:
		resp := r.ResponseKind().(*kmsg.ConsumerGroupHeartbeatResponse)
		resp.ErrorCode = code
		return resp
	case *kmsg.ConsumerGroupDescribeRequest:
		resp := r.ResponseKind().(*kmsg.ConsumerGroupDescribeResponse)
		for _, name := range r.Groups {
			g := kmsg.NewConsumerGroupDescribeResponseGroup()
			g.Group = name
			g.ErrorCode = code
			resp.Groups = append(resp.Groups, g)
		}
		return resp
	}
	panic(fmt.Sprintf("group: ErrorResponse of %T", req))
}

// DropDeletedTopics removes the committed offsets of topics that no longer
// exist, as Kafka does when a topic is deleted (so a topic recreated under
// the same name does not inherit them). The tombstones are persisted.
func (m *Machine) DropDeletedTopics(now time.Time) Output {
	m.begin(now)
	if m.failed != nil {
		return m.end()
	}
	names := m.groupNames()
	var recs []record
	gone := map[string]bool{}
	for _, name := range names {
		g := m.groups[name]
		if g.state == stateDead {
			continue
		}
		g.eachOffset(func(topic string, p int32, _ Offset) {
			missing, seen := gone[topic]
			if !seen {
				_, ok := m.topics.TopicByName(topic)
				missing = !ok
				gone[topic] = missing
			}
			if missing {
				recs = append(recs, record{kind: recOffset, group: name, topic: topic, partition: p, delete: true})
			}
		})
	}
	m.persist(recs)
	return m.end()
}

// MaxGeneration is the highest classic group generation handed out (at
// least GenerationBase).
func (m *Machine) MaxGeneration() int32 { return max(m.maxGeneration, m.cfg.GenerationBase) }
