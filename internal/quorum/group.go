package quorum

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"

	"github.com/exactly/exactly/internal/vfs"
)

// ErrNotLeader is returned by Group.Propose on a replica that is not its
// group's leader: the caller answers NOT_LEADER_OR_FOLLOWER. A proposal
// pending when its replica lost the leadership gets it too; its entry may
// still be committed by the next leader (idempotent producers' retries are
// deduplicated by the state machine).
var ErrNotLeader = errors.New("quorum: not the partition group's leader")

// ErrProposalDropped wraps a metadata proposal raft dropped (no leader
// known, a leadership transfer under way): nothing was written, and the
// same change may be proposed again.
var ErrProposalDropped = raft.ErrProposalDropped

// GroupStateMachine is a replicated partition: the committed entries of its
// group applied in order, on every replica. Apply must be deterministic
// (every input it decides on travels in the entry); the methods are called
// from the group's goroutine only.
type GroupStateMachine interface {
	// Apply applies the committed entry at index, written by the leader
	// of term. Its result is handed to the Propose call that proposed the
	// entry, if that call is on this replica.
	Apply(index, term uint64, data []byte) any
	// Checkpoint makes everything applied so far durable and describes
	// it (at most MaxSnapshotBytes): the snapshot at the last applied
	// index, after which the group forgets the entries before it.
	Checkpoint() ([]byte, error)
	// Restore makes the state the one a snapshot describes: from is the
	// leader that sent it, or 0 for this replica's own newest snapshot
	// at start (data nil when it has none). A leader's snapshot describes
	// more than this replica holds; Restore fetches the difference.
	Restore(from uint64, data []byte) error
}

// GroupConfig configures one replica of a partition group.
type GroupConfig struct {
	// ID names the group on every replica.
	ID GroupID
	// Replicas are the group's voters when its storage is empty (every
	// replica bootstraps with the same list).
	Replicas []uint64
	// FS and Dir hold the group's raft storage (WAL and snapshots).
	FS  vfs.FS
	Dir string
	// SM is the partition.
	SM GroupStateMachine
	// ElectionTimeout as the metadata quorum's (default 1 s). Every group
	// ticks with the node's ticker (quiesce.go), at the metadata quorum's
	// rate; this value only paces the in-sync samples.
	ElectionTimeout time.Duration
	// CheckpointBytes and CheckpointEntries: applied data (or entries)
	// that trigger a checkpoint and the release of the WAL before it
	// (defaults 16 MiB, 4096). KeepBytes of entries stay in memory for
	// followers slightly behind (default 8 MiB); one further behind is
	// sent the snapshot.
	CheckpointBytes   int64
	CheckpointEntries uint64
	KeepBytes         int64
	// LagMax is replica.lag.time.max.ms: a follower whose replicated
	// index has not reached the leader's last index of LagMax ago is out
	// of sync (default 30 s).
	LagMax time.Duration
	// Campaign makes a replica with empty storage start an election at
	// once, so a new partition gets a leader without waiting a timeout
	// (give it to one replica: the preferred leader).
	Campaign bool
	// Logger receives the group's logs; nil discards them.
	Logger *slog.Logger
}

// GroupStatus is a point-in-time view of one replica of a group.
type GroupStatus struct {
	Role   Role
	Term   uint64
	Leader uint64
	// Commit, Applied and LastIndex are raft indexes on this replica.
	Commit, Applied, LastIndex uint64
	// InSync are the replicas in sync, by id, the leader included (only
	// the leader knows; empty elsewhere).
	InSync []uint64
	// Voters are the group's voters.
	Voters []uint64
	// Ready says this leader has applied every entry of earlier terms
	// (its first own entry is applied): its state is the group's.
	Ready bool
}

// Group is this node's replica of a partition group. Like Node, one
// goroutine owns the raft state; the methods talk to it through channels.
type Group struct {
	cfg   GroupConfig
	node  *Node
	log   *slog.Logger
	st    *diskStorage
	rn    *raft.RawNode
	recvc chan *pb.Message
	propc chan proposal
	xferc chan uint64
	tickc chan struct{} // the node's ticker (tickGroups)
	stopc chan struct{}
	done  chan struct{}

	reports reportQueue

	reqSeq  atomic.Uint64
	waitMu  sync.Mutex
	waiters map[uint64]chan result

	statusMu sync.Mutex
	status   GroupStatus
	failErr  error
	changec  chan struct{} // closed and replaced when leader or term change
	// leading and term mirror status for the hot paths (every produce
	// and fetch asks).
	leading atomic.Bool
	term    atomic.Uint64
	// leadID mirrors status.Leader and quiet says this leader sleeps
	// (quiesce.go); both are read by the node's ticker.
	leadID atomic.Uint64
	quiet  atomic.Bool

	closeOnce sync.Once
	closeErr  error

	// Owned by the run goroutine.
	confState  *pb.ConfState
	applied    uint64
	lead       uint64
	snapFrom   uint64 // sender of the last MsgSnap stepped
	sinceBytes int64
	sinceEnts  uint64
	recent     []entrySize // applied since the last checkpoint, for KeepBytes
	termStart  uint64      // index of this leader's first entry (0: not leader)
	samples    []lastSample
	idleTicks  int // consecutive idle ticks as leader (quiesce.go)
	// campaignAt: a new group's preferred replica campaigns once this
	// index (its bootstrap membership) is applied; 0 once done.
	campaignAt uint64
}

type entrySize struct {
	index uint64
	size  int64
}

// lastSample is the leader's last index at a time, for the in-sync test.
type lastSample struct {
	at   time.Time
	last uint64
}

const (
	defaultCheckpointBytes   = 16 << 20
	defaultCheckpointEntries = 4096
	defaultKeepBytes         = 8 << 20
	defaultLagMax            = 30 * time.Second
	groupInboxLen            = 1024
)

// StartGroup opens (or creates) this node's replica of a partition group,
// restores cfg.SM from its newest snapshot and starts its loop. The
// group's traffic travels on the node's transport.
func (n *Node) StartGroup(cfg GroupConfig) (*Group, error) {
	switch {
	case cfg.ID == 0:
		return nil, errors.New("quorum: group id 0 is reserved")
	case cfg.FS == nil || cfg.Dir == "" || cfg.SM == nil:
		return nil, errors.New("quorum: group needs FS, Dir and SM")
	case !slices.Contains(cfg.Replicas, n.cfg.NodeID):
		return nil, fmt.Errorf("quorum: node %d is not a replica of group %d (%v)", n.cfg.NodeID, cfg.ID, cfg.Replicas)
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = n.cfg.ElectionTimeout
	}
	if cfg.CheckpointBytes <= 0 {
		cfg.CheckpointBytes = defaultCheckpointBytes
	}
	if cfg.CheckpointEntries == 0 {
		cfg.CheckpointEntries = defaultCheckpointEntries
	}
	if cfg.KeepBytes <= 0 {
		cfg.KeepBytes = defaultKeepBytes
	}
	if cfg.LagMax <= 0 {
		cfg.LagMax = defaultLagMax
	}
	if cfg.Logger == nil {
		cfg.Logger = n.log
	}
	log := cfg.Logger.With("group", uint64(cfg.ID))
	st, err := openStorage(cfg.FS, cfg.Dir, n.cfg.ClusterID, n.cfg.NodeID, storageOptions{group: true, maxRecord: maxGroupWALRecordBytes}, log)
	if err != nil {
		return nil, fmt.Errorf("quorum: group %d: %w", cfg.ID, err)
	}
	g := &Group{
		cfg: cfg, node: n, log: log, st: st,
		recvc:   make(chan *pb.Message, groupInboxLen),
		propc:   make(chan proposal),
		xferc:   make(chan uint64, 1),
		tickc:   make(chan struct{}, 1),
		stopc:   make(chan struct{}),
		done:    make(chan struct{}),
		reports: newReportQueue(),
		waiters: map[uint64]chan result{},
		changec: make(chan struct{}),
	}
	var seed [8]byte
	rand.Read(seed[:])
	g.reqSeq.Store(binary.BigEndian.Uint64(seed[:]) >> 1)

	snap, err := st.Snapshot()
	if err != nil {
		st.close()
		return nil, err
	}
	var snapData []byte
	if !raft.IsEmptySnap(snap) {
		snapData = snap.GetData()
		g.confState = snap.GetMetadata().GetConfState()
		g.applied = snap.GetMetadata().GetIndex()
	}
	if err := cfg.SM.Restore(0, snapData); err != nil {
		st.close()
		return nil, fmt.Errorf("quorum: group %d: restoring its snapshot: %w", cfg.ID, err)
	}
	rc := &raft.Config{
		ID:                        n.cfg.NodeID,
		ElectionTick:              electionTicks,
		HeartbeatTick:             heartbeatTicks,
		Storage:                   st,
		Applied:                   g.applied,
		MaxSizePerMsg:             1 << 20,
		MaxCommittedSizePerReady:  16 << 20,
		MaxUncommittedEntriesSize: 64 << 20,
		MaxInflightMsgs:           256,
		CheckQuorum:               true,
		PreVote:                   true,
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{log},
	}
	if g.rn, err = raft.NewRawNode(rc); err != nil {
		st.close()
		return nil, err
	}
	if st.empty {
		ids := slices.Sorted(slices.Values(cfg.Replicas))
		peers := make([]raft.Peer, 0, len(ids))
		for _, id := range slices.Compact(ids) {
			peers = append(peers, raft.Peer{ID: id})
		}
		if err := g.rn.Bootstrap(peers); err != nil {
			st.close()
			return nil, err
		}
		if cfg.Campaign {
			// Once the bootstrap membership is applied (raft refuses
			// to campaign before), see run.
			g.campaignAt = uint64(len(peers))
		}
	}
	if err := n.addGroup(g); err != nil {
		st.close()
		return nil, err
	}
	g.publishStatus(time.Now())
	go g.run()
	return g, nil
}

// HasGroupState reports whether dir holds a partition group's raft state
// (a WAL segment or a snapshot).
func HasGroupState(fsys vfs.FS, dir string) (bool, error) {
	names, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, n := range names {
		_, isSeg := parseSegmentName(n)
		_, _, isSnap := parseSnapshotName(n)
		if isSeg || isSnap {
			return true, nil
		}
	}
	return false, nil
}

// addGroup registers g for the transport's deliveries.
func (n *Node) addGroup(g *Group) error {
	n.groupsMu.Lock()
	defer n.groupsMu.Unlock()
	if _, ok := n.groups[g.cfg.ID]; ok {
		return fmt.Errorf("quorum: group %d is already open", g.cfg.ID)
	}
	n.groups[g.cfg.ID] = g
	return nil
}

func (n *Node) removeGroup(g *Group) {
	n.groupsMu.Lock()
	defer n.groupsMu.Unlock()
	if n.groups[g.cfg.ID] == g {
		delete(n.groups, g.cfg.ID)
	}
}

func (n *Node) group(id GroupID) *Group {
	n.groupsMu.Lock()
	defer n.groupsMu.Unlock()
	return n.groups[id]
}

// deliverGroup implements groupRouter: a message for a group not open
// here is dropped (raft retransmits once it is).
func (n *Node) deliverGroup(id GroupID, m *pb.Message) {
	if g := n.group(id); g != nil {
		select {
		case g.recvc <- m:
		default:
		}
	}
}

func (n *Node) reportGroup(id GroupID, r transportReport) {
	if g := n.group(id); g != nil {
		g.reports.add(r)
	}
}

func (g *Group) run() {
	defer close(g.done)
	for {
		now := time.Time{}
		// busy: anything but a tick or a heartbeat keeps a leader awake.
		busy, ticked := true, false
		select {
		case <-g.stopc:
			g.failWaiters(ErrClosed)
			return
		case <-g.tickc:
			now = time.Now()
			g.rn.Tick()
			busy, ticked = false, true
		case m := <-g.recvc:
			switch m.GetType() {
			case pb.MsgSnap:
				g.snapFrom = m.GetFrom()
			case pb.MsgHeartbeat, pb.MsgHeartbeatResp:
				busy = false
			}
			_ = g.rn.Step(m) // errors are stale or foreign messages
		case p := <-g.propc:
			if err := g.rn.Propose(p.data); err != nil {
				if errors.Is(err, raft.ErrProposalDropped) {
					err = ErrNotLeader
				}
				g.resolve(p.req, result{err: err})
			}
		case to := <-g.xferc:
			// Only as leader: a follower would forward the request with
			// the transferee as its sender, which the leader's transport
			// refuses by closing the connection (checkInbound).
			if g.rn.BasicStatus().RaftState == raft.StateLeader {
				g.rn.TransferLeader(to)
			}
		case <-g.reports.ready:
			g.reports.tell(g.rn)
		}
		err := g.handleReady()
		if err == nil && g.campaignAt != 0 && g.applied >= g.campaignAt {
			g.campaignAt = 0
			_ = g.rn.Campaign()
			err = g.handleReady()
		}
		if err != nil {
			g.log.Error("partition group stopped: storage failed", "err", err)
			g.statusMu.Lock()
			g.failErr = err
			g.statusMu.Unlock()
			g.quiet.Store(false)
			g.failWaiters(err)
			return
		}
		if now.IsZero() {
			now = time.Now()
		}
		g.publishStatus(now)
		switch {
		case busy || !g.leading.Load():
			g.idleTicks = 0
		case !ticked:
			// A heartbeat's answer: neither work nor a tick.
		case g.idleLeader(now):
			g.idleTicks++
		default:
			g.idleTicks = 0
		}
		g.quiet.Store(g.idleTicks >= quiesceTicks)
	}
}

// handleReady persists, sends, applies and advances, as Node does.
func (g *Group) handleReady() error {
	for g.rn.HasReady() {
		rd := g.rn.Ready()
		if err := g.st.save(rd.Snapshot, rd.HardState, rd.Entries, rd.MustSync); err != nil {
			return err
		}
		if rd.Snapshot != nil && !raft.IsEmptySnap(rd.Snapshot) {
			if err := g.cfg.SM.Restore(g.snapFrom, rd.Snapshot.GetData()); err != nil {
				return fmt.Errorf("restoring snapshot %d from %d: %w", rd.Snapshot.GetMetadata().GetIndex(), g.snapFrom, err)
			}
			g.confState = rd.Snapshot.GetMetadata().GetConfState()
			g.applied = rd.Snapshot.GetMetadata().GetIndex()
			g.sinceBytes, g.sinceEnts, g.recent = 0, 0, nil
		}
		if rd.SoftState != nil {
			g.leaderChange(rd.SoftState)
		}
		for _, m := range rd.Messages {
			g.node.tr.sendGroup(g.cfg.ID, m)
		}
		for _, e := range rd.CommittedEntries {
			if err := g.apply(e); err != nil {
				return err
			}
		}
		g.rn.Advance(rd)
		if err := g.maybeCheckpoint(); err != nil {
			return err
		}
	}
	return nil
}

// leaderChange notes a new leader; a replica that stops leading fails the
// proposals it is waiting for (they may still commit under the next one).
func (g *Group) leaderChange(ss *raft.SoftState) {
	g.lead = ss.Lead
	if ss.RaftState == raft.StateLeader {
		if g.termStart == 0 {
			// The leader's empty entry of its term was appended in the
			// step that made it leader, and saved just now: it is the
			// last index.
			g.termStart, _ = g.st.LastIndex()
		}
		return
	}
	g.termStart = 0
	g.samples = nil
	g.failWaiters(ErrNotLeader)
}

func (g *Group) apply(e *pb.Entry) error {
	switch e.GetType() {
	case pb.EntryNormal:
		if len(e.GetData()) > 0 {
			node, req, data, ok := decodeProposal(e.GetData())
			if !ok {
				g.log.Error("skipping malformed entry", "index", e.GetIndex())
				break
			}
			v := g.cfg.SM.Apply(e.GetIndex(), e.GetTerm(), data)
			if node == g.node.cfg.NodeID {
				g.resolve(req, result{val: v})
			}
			g.sinceBytes += int64(len(data))
			g.recent = append(g.recent, entrySize{e.GetIndex(), int64(len(data))})
		}
	case pb.EntryConfChange, pb.EntryConfChangeV2:
		var cc pb.ConfChangeI
		if e.GetType() == pb.EntryConfChange {
			c := &pb.ConfChange{}
			if err := proto.Unmarshal(e.GetData(), c); err != nil {
				return fmt.Errorf("entry %d: %w", e.GetIndex(), err)
			}
			cc = c
		} else {
			c := &pb.ConfChangeV2{}
			if err := proto.Unmarshal(e.GetData(), c); err != nil {
				return fmt.Errorf("entry %d: %w", e.GetIndex(), err)
			}
			cc = c
		}
		g.confState = g.rn.ApplyConfChange(cc)
	}
	g.sinceEnts++
	g.applied = e.GetIndex()
	return nil
}

// maybeCheckpoint has the state machine make its applied state durable and
// records it as the snapshot, once enough was applied since the last one;
// entries of the last KeepBytes stay in memory for followers.
func (g *Group) maybeCheckpoint() error {
	if g.applied <= g.st.snapIndex || (g.sinceBytes < g.cfg.CheckpointBytes && g.sinceEnts < g.cfg.CheckpointEntries) {
		return nil
	}
	return g.checkpoint()
}

func (g *Group) checkpoint() error {
	data, err := g.cfg.SM.Checkpoint()
	if err == nil && len(data) > MaxSnapshotBytes {
		err = fmt.Errorf("checkpoint of %d bytes exceeds the %d limit", len(data), MaxSnapshotBytes)
	}
	if err != nil {
		return fmt.Errorf("checkpoint at %d: %w", g.applied, err)
	}
	keepFrom := g.applied
	var kept int64
	for i := len(g.recent) - 1; i >= 0; i-- {
		kept += g.recent[i].size
		if kept > g.cfg.KeepBytes {
			break
		}
		keepFrom = g.recent[i].index - 1
	}
	if err := g.st.snapshot(g.applied, g.confState, data, g.applied-keepFrom); err != nil {
		return err
	}
	g.sinceBytes, g.sinceEnts, g.recent = 0, 0, g.recent[:0]
	return nil
}

func (g *Group) publishStatus(now time.Time) {
	bs := g.rn.BasicStatus()
	last, _ := g.st.LastIndex()
	s := GroupStatus{
		Role:      roleOf(bs.RaftState),
		Term:      bs.HardState.GetTerm(),
		Leader:    bs.Lead,
		Commit:    bs.HardState.GetCommit(),
		Applied:   g.applied,
		LastIndex: last,
		Voters:    slices.Clone(g.confState.GetVoters()),
	}
	if len(s.Voters) == 0 {
		s.Voters = slices.Sorted(slices.Values(g.cfg.Replicas))
	}
	if bs.RaftState == raft.StateLeader {
		s.Ready = g.termStart != 0 && g.applied >= g.termStart
		s.InSync = g.inSync(now, last)
	}
	g.statusMu.Lock()
	if s.Leader != g.status.Leader || s.Term != g.status.Term || s.Ready != g.status.Ready {
		close(g.changec)
		g.changec = make(chan struct{})
	}
	g.status = s
	g.leading.Store(s.Role == RoleLeader)
	g.term.Store(s.Term)
	g.leadID.Store(s.Leader)
	g.statusMu.Unlock()
}

// Leading reports whether this replica is the group's leader.
func (g *Group) Leading() bool { return g.leading.Load() }

// Term is the group's current term as this replica knows it.
func (g *Group) Term() uint64 { return g.term.Load() }

// inSync samples the leader's last index and returns the replicas whose
// replicated index reached the last index of LagMax ago (Kafka's ISR rule:
// caught up within replica.lag.time.max.ms).
func (g *Group) inSync(now time.Time, last uint64) []uint64 {
	if n := len(g.samples); n == 0 || now.Sub(g.samples[n-1].at) >= g.cfg.ElectionTimeout/electionTicks {
		g.samples = append(g.samples, lastSample{at: now, last: last})
	}
	// Drop samples older than needed: keep the newest one at or before
	// now-LagMax as the bar.
	cut := now.Add(-g.cfg.LagMax)
	i := 0
	for i+1 < len(g.samples) && !g.samples[i+1].at.After(cut) {
		i++
	}
	g.samples = g.samples[i:]
	bar := g.samples[0].last
	if g.samples[0].at.After(cut) {
		// Younger than LagMax as leader: a follower must match what the
		// leader held when it took over.
		bar = min(bar, g.termStart)
	}
	var out []uint64
	g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
		if id == g.node.cfg.NodeID || pr.Match >= bar {
			out = append(out, id)
		}
	})
	slices.Sort(out)
	return out
}

// Status returns the replica's current view of its group.
func (g *Group) Status() GroupStatus {
	g.statusMu.Lock()
	defer g.statusMu.Unlock()
	s := g.status
	s.InSync = slices.Clone(s.InSync)
	s.Voters = slices.Clone(s.Voters)
	return s
}

// Changed returns a channel closed at the next change of leader, term or
// readiness.
func (g *Group) Changed() <-chan struct{} {
	g.statusMu.Lock()
	defer g.statusMu.Unlock()
	return g.changec
}

func (g *Group) resolve(req uint64, r result) {
	g.waitMu.Lock()
	ch, ok := g.waiters[req]
	delete(g.waiters, req)
	g.waitMu.Unlock()
	if ok {
		ch <- r
	}
}

func (g *Group) failWaiters(err error) {
	g.waitMu.Lock()
	ws := g.waiters
	g.waiters = map[uint64]chan result{}
	g.waitMu.Unlock()
	for _, ch := range ws {
		ch <- result{err: err}
	}
}

// Propose replicates data and returns the state machine's Apply result
// once the entry is committed and applied here. Only the leader proposes
// (ErrNotLeader elsewhere). An error after the proposal left (ctx ended,
// leadership lost) means the entry may or may not be applied.
func (g *Group) Propose(ctx context.Context, data []byte) (any, error) {
	wait, err := g.ProposeAsync(ctx, data)
	if err != nil {
		return nil, err
	}
	return wait(ctx)
}

// ProposeAsync hands data to the group and returns at once with a function
// that waits for its Apply result: entries proposed one after another by
// one caller are applied in that order, so a connection's pipelined
// requests keep their order without waiting for each other.
func (g *Group) ProposeAsync(ctx context.Context, data []byte) (func(context.Context) (any, error), error) {
	if len(data) > MaxGroupEntryBytes {
		return nil, fmt.Errorf("quorum: entry of %d bytes exceeds the %d limit", len(data), MaxGroupEntryBytes)
	}
	if !g.Leading() {
		return nil, ErrNotLeader
	}
	req := g.reqSeq.Add(1)
	ch := make(chan result, 1)
	g.waitMu.Lock()
	g.waiters[req] = ch
	g.waitMu.Unlock()
	forget := func() {
		g.waitMu.Lock()
		delete(g.waiters, req)
		g.waitMu.Unlock()
	}
	p := proposal{req: req, data: encodeProposal(g.node.cfg.NodeID, req, data)}
	select {
	case g.propc <- p:
	case <-ctx.Done():
		forget()
		return nil, ctx.Err()
	case <-g.done:
		forget()
		return nil, g.closedErr()
	}
	return func(ctx context.Context) (any, error) {
		defer forget()
		select {
		case r := <-ch:
			return r.val, r.err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-g.done:
			return nil, g.closedErr()
		}
	}, nil
}

// TransferLeadership asks the group to hand its leadership to replica to
// (a controlled shutdown); it returns at once, the transfer happens if to
// is caught up within an election timeout.
func (g *Group) TransferLeadership(to uint64) {
	select {
	case g.xferc <- to:
	default:
	}
}

func (g *Group) closedErr() error {
	g.statusMu.Lock()
	defer g.statusMu.Unlock()
	if g.failErr != nil {
		return fmt.Errorf("%w: %w", ErrClosed, g.failErr)
	}
	return ErrClosed
}

// Close stops the replica's loop and closes its storage; pending calls
// return ErrClosed.
func (g *Group) Close() error {
	g.closeOnce.Do(func() {
		g.node.removeGroup(g)
		close(g.stopc)
		<-g.done
		g.closeErr = g.st.close()
	})
	return g.closeErr
}
