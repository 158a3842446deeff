package quorum

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// ErrClosed is returned by calls on a closed (or failed) Node.
var ErrClosed = errors.New("quorum: node closed")

// Node is one member of the metadata quorum. All raft state is owned by one
// goroutine (run); the exported methods talk to it through channels, and
// read Status from a copy it publishes.
type Node struct {
	cfg   Config
	log   *slog.Logger
	st    *diskStorage
	rn    *raft.RawNode
	tr    *transport
	propc chan proposal
	recvc chan *pb.Message
	stopc chan struct{}
	done  chan struct{}

	reports reportQueue

	reqSeq  atomic.Uint64
	waitMu  sync.Mutex
	waiters map[uint64]chan result

	statusMu sync.Mutex
	status   Status
	leaderc  chan struct{} // closed and replaced when the leader changes
	failErr  error

	closeOnce sync.Once
	closeErr  error

	// member says the membership this node follows is not empty: a
	// learner stops asking to be admitted once it is set.
	member atomic.Bool
	// bgCtx ends the background work (admission requests and the
	// leader's admissions) at Close.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup
	admit    admissions

	// groups are the partition groups open on this node (StartGroup).
	groupsMu sync.Mutex
	groups   map[GroupID]*Group
	// groupTick paces every group (tickGroups); beacons are the peers'
	// quiet groups (quiesce.go).
	groupTick time.Duration
	beacons   beacons

	// Owned by the run goroutine.
	confState *pb.ConfState
	members   map[uint64]member
	applied   uint64
	lead      uint64
	changes   uint64
}

type proposal struct {
	req  uint64
	data []byte
	cc   *pb.ConfChangeV2
}

type result struct {
	val any
	err error
}

// Start opens the raft storage in cfg.Dir, bootstraps it with cfg.Voters if
// it is empty, restores the state machine from the newest snapshot, starts
// the transport on cfg.Listener and the Ready loop. Committed entries after
// the snapshot are re-applied in the background as the loop runs.
func Start(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	st, err := openStorage(cfg.FS, cfg.Dir, cfg.ClusterID, cfg.NodeID, storageOptions{segmentBytes: cfg.segmentBytes}, log)
	if err != nil {
		return nil, fmt.Errorf("quorum: %w", err)
	}
	n := &Node{
		cfg: cfg, log: log, st: st,
		propc:   make(chan proposal),
		recvc:   make(chan *pb.Message, 4096),
		stopc:   make(chan struct{}),
		done:    make(chan struct{}),
		reports: newReportQueue(),
		waiters: map[uint64]chan result{},
		leaderc: make(chan struct{}),
		members: map[uint64]member{},
		groups:  map[GroupID]*Group{},
		admit:   admissions{inflight: map[uint64]bool{}, tried: map[uint64]time.Time{}},
	}
	n.bgCtx, n.bgCancel = context.WithCancel(context.Background())
	// Request ids start at a random point so that a restarted node never
	// mistakes an old entry of its own for a new proposal.
	var seed [8]byte
	rand.Read(seed[:])
	n.reqSeq.Store(binary.BigEndian.Uint64(seed[:]) >> 1)

	n.tr = newTransport(hello{ClusterID: cfg.ClusterID, NodeID: cfg.NodeID, DirectoryID: st.dirID},
		cfg.Listener, st.peers, log, n.deliver, n.addReport, n.handleAdmission)
	n.tr.groups = n
	for id, addr := range cfg.Voters {
		n.tr.setPeer(id, addr)
	}

	tick := cfg.ElectionTimeout / electionTicks
	rc := &raft.Config{
		ID:                        cfg.NodeID,
		ElectionTick:              electionTicks,
		HeartbeatTick:             heartbeatTicks,
		Storage:                   st,
		MaxSizePerMsg:             1 << 20,
		MaxCommittedSizePerReady:  8 << 20,
		MaxUncommittedEntriesSize: 64 << 20,
		MaxInflightMsgs:           256,
		CheckQuorum:               true,
		PreVote:                   true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{log},
	}
	snap, err := st.Snapshot()
	if err != nil {
		st.close()
		return nil, err
	}
	if !raft.IsEmptySnap(snap) {
		if err := n.restore(snap); err != nil {
			n.tr.close()
			st.close()
			return nil, fmt.Errorf("quorum: restoring snapshot %d: %w", snap.GetMetadata().GetIndex(), err)
		}
		rc.Applied = n.applied
	}
	if n.rn, err = raft.NewRawNode(rc); err != nil {
		n.tr.close()
		st.close()
		return nil, err
	}
	if st.empty && !cfg.Join && !cfg.Learner {
		ids := slices.Sorted(func(yield func(uint64) bool) {
			for id := range cfg.Voters {
				if !yield(id) {
					return
				}
			}
		})
		peers := make([]raft.Peer, 0, len(ids))
		for _, id := range ids {
			// No directory id: each node writes these entries itself, and
			// they should say the same everywhere. The address is this
			// node's way to the voter, which may differ between nodes
			// (dialAddr).
			ctx, _ := json.Marshal(confContext{Addr: cfg.Voters[id]})
			peers = append(peers, raft.Peer{ID: id, Context: ctx})
		}
		if err := n.rn.Bootstrap(peers); err != nil {
			n.tr.close()
			st.close()
			return nil, err
		}
	}
	n.publishStatus()
	n.tr.start()
	go n.run(tick)
	n.groupTick = tick
	n.bgWG.Add(1)
	go func() {
		defer n.bgWG.Done()
		n.tickGroups(tick)
	}()
	if cfg.Learner && st.empty {
		n.bgWG.Add(1)
		go n.askAdmission()
	}
	return n, nil
}

func (n *Node) deliver(m *pb.Message) {
	select {
	case n.recvc <- m:
	default: // raft retransmits; a full inbox drops
	}
}

func (n *Node) addReport(r transportReport) { n.reports.add(r) }

func (n *Node) run(tick time.Duration) {
	defer close(n.done)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		select {
		case <-n.stopc:
			return
		case <-ticker.C:
			n.rn.Tick()
		case m := <-n.recvc:
			_ = n.rn.Step(m) // errors are stale or foreign messages
		case p := <-n.propc:
			var err error
			if p.cc != nil {
				err = n.rn.ProposeConfChange(p.cc)
			} else {
				err = n.rn.Propose(p.data)
			}
			if err != nil {
				n.resolve(p.req, result{err: fmt.Errorf("quorum: proposal dropped: %w", err)})
			}
		case <-n.reports.ready:
			n.reports.tell(n.rn)
		}
		if err := n.handleReady(); err != nil {
			n.log.Error("raft node stopped: storage failed", "err", err)
			n.statusMu.Lock()
			n.failErr = err
			n.statusMu.Unlock()
			return
		}
		n.publishStatus()
	}
}

// handleReady persists, sends, applies and advances, in that order: a
// message may promise what the hard state and entries say (a vote, an
// append), so they are durable before any message leaves.
func (n *Node) handleReady() error {
	for n.rn.HasReady() {
		rd := n.rn.Ready()
		if rd.SoftState != nil && rd.SoftState.Lead != n.lead {
			n.lead = rd.SoftState.Lead
			if n.lead != raft.None {
				n.changes++
			}
		}
		if err := n.st.save(rd.Snapshot, rd.HardState, rd.Entries, rd.MustSync); err != nil {
			return err
		}
		if rd.Snapshot != nil && !raft.IsEmptySnap(rd.Snapshot) {
			if err := n.restore(rd.Snapshot); err != nil {
				return fmt.Errorf("restoring snapshot %d: %w", rd.Snapshot.GetMetadata().GetIndex(), err)
			}
		}
		for _, m := range rd.Messages {
			n.tr.send(m)
		}
		for _, e := range rd.CommittedEntries {
			if err := n.apply(e); err != nil {
				return err
			}
		}
		n.rn.Advance(rd)
		if err := n.maybeSnapshot(); err != nil {
			return err
		}
	}
	return nil
}

// restore replaces the state machine and the membership with a snapshot's.
func (n *Node) restore(snap *pb.Snapshot) error {
	meta, sm, err := decodeSnapshotData(snap.GetData())
	if err != nil {
		return err
	}
	if err := n.cfg.SM.Restore(sm); err != nil {
		return err
	}
	for id := range n.members {
		if _, ok := meta.Members[id]; !ok {
			n.tr.removePeer(id)
			if err := n.st.peers.set(id, nil); err != nil {
				return err
			}
		}
	}
	n.members = map[uint64]member{}
	for id, m := range meta.Members {
		if err := n.addMember(id, m); err != nil {
			return err
		}
	}
	n.confState = proto.Clone(snap.GetMetadata().GetConfState()).(*pb.ConfState)
	n.applied = snap.GetMetadata().GetIndex()
	return nil
}

// dialAddr is where this node reaches node id: its entry in the
// configured voters (controller.quorum.voters) if it has one, else the
// address the quorum recorded. Each node's configuration names its own way
// to each voter, which need not be the same from every node (a NAT, a
// proxy between two nodes), while a recorded address comes from whichever
// node wrote the entry or snapshot.
func (n *Node) dialAddr(id uint64, recorded string) string {
	if a, ok := n.cfg.Voters[id]; ok && a != "" {
		return a
	}
	return recorded
}

func (n *Node) addMember(id uint64, m member) error {
	n.members[id] = m
	n.tr.setPeer(id, n.dialAddr(id, m.Addr))
	if m.Dir == "" {
		return nil
	}
	d, err := parseDirectoryID(m.Dir)
	if err != nil {
		return err
	}
	return n.st.peers.set(id, &d)
}

func (n *Node) apply(e *pb.Entry) error {
	switch e.GetType() {
	case pb.EntryNormal:
		if len(e.GetData()) > 0 {
			node, req, data, ok := decodeProposal(e.GetData())
			if !ok {
				n.log.Error("skipping malformed entry", "index", e.GetIndex())
				break
			}
			v := n.cfg.SM.Apply(e.GetIndex(), data)
			if node == n.cfg.NodeID {
				n.resolve(req, result{val: v})
			}
		}
	case pb.EntryConfChange, pb.EntryConfChangeV2:
		var cc pb.ConfChangeI
		var ctxBytes []byte
		if e.GetType() == pb.EntryConfChange {
			c := &pb.ConfChange{}
			if err := proto.Unmarshal(e.GetData(), c); err != nil {
				return fmt.Errorf("entry %d: %w", e.GetIndex(), err)
			}
			cc, ctxBytes = c, c.GetContext()
		} else {
			c := &pb.ConfChangeV2{}
			if err := proto.Unmarshal(e.GetData(), c); err != nil {
				return fmt.Errorf("entry %d: %w", e.GetIndex(), err)
			}
			cc, ctxBytes = c, c.GetContext()
		}
		var cctx confContext
		if len(ctxBytes) > 0 {
			if err := json.Unmarshal(ctxBytes, &cctx); err != nil {
				n.log.Error("membership change with an unreadable context", "index", e.GetIndex(), "err", err)
			}
		}
		n.confState = n.rn.ApplyConfChange(cc)
		for _, ch := range cc.AsV2().GetChanges() {
			id := ch.GetNodeId()
			switch ch.GetType() {
			case pb.ConfChangeAddNode, pb.ConfChangeAddLearnerNode, pb.ConfChangeUpdateNode:
				m := n.members[id]
				if cctx.Addr != "" {
					m.Addr = cctx.Addr
				}
				if cctx.Dir != "" {
					m.Dir = cctx.Dir
				}
				if err := n.addMember(id, m); err != nil {
					return err
				}
			case pb.ConfChangeRemoveNode:
				delete(n.members, id)
				n.tr.removePeer(id)
				if err := n.st.peers.set(id, nil); err != nil {
					return err
				}
			}
		}
		if cctx.Node == n.cfg.NodeID && cctx.ReqID != 0 {
			n.resolve(cctx.ReqID, result{})
		}
	}
	n.applied = e.GetIndex()
	return nil
}

// maybeSnapshot takes a snapshot once SnapshotEntries entries were applied
// since the last one, keeping half as many entries for slow followers.
func (n *Node) maybeSnapshot() error {
	if n.applied < n.st.snapIndex+n.cfg.SnapshotEntries {
		return nil
	}
	sm, err := n.cfg.SM.Snapshot()
	if err != nil {
		n.log.Error("state machine snapshot failed; log not compacted", "err", err)
		return nil
	}
	data, err := encodeSnapshotData(snapshotMeta{Members: n.members}, sm)
	if err == nil && len(data) > MaxSnapshotBytes {
		err = fmt.Errorf("snapshot of %d bytes exceeds the %d limit", len(data), MaxSnapshotBytes)
	}
	if err != nil {
		n.log.Error("snapshot not taken; log not compacted", "err", err)
		return nil
	}
	if err := n.st.snapshot(n.applied, n.confState, data, n.cfg.SnapshotEntries/2); err != nil {
		return err
	}
	n.log.Debug("snapshot taken", "index", n.applied)
	return nil
}

func (n *Node) publishStatus() {
	bs := n.rn.BasicStatus()
	if len(n.confState.GetVoters())+len(n.confState.GetLearners()) > 0 {
		n.member.Store(true)
	}
	s := Status{
		NodeID:        n.cfg.NodeID,
		DirectoryID:   n.st.dirID.String(),
		Role:          roleOf(bs.RaftState),
		Term:          bs.HardState.GetTerm(),
		Leader:        bs.Lead,
		Commit:        bs.HardState.GetCommit(),
		Applied:       n.applied,
		SnapshotIndex: n.st.snapIndex,
		LeaderChanges: n.changes,
	}
	var match map[uint64]uint64
	last, _ := n.st.LastIndex()
	if bs.RaftState == raft.StateLeader {
		match = map[uint64]uint64{}
		n.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
			match[id] = pr.Match
		})
	}
	s.Voters = n.memberStatus(n.confState.GetVoters(), match, last)
	s.Learners = n.memberStatus(n.confState.GetLearners(), match, last)
	if slices.ContainsFunc(s.Learners, func(v VoterStatus) bool { return v.ID == n.cfg.NodeID }) {
		s.Role = RoleLearner
	}
	n.statusMu.Lock()
	if s.Leader != n.status.Leader {
		close(n.leaderc)
		n.leaderc = make(chan struct{})
	}
	n.status = s
	n.statusMu.Unlock()
}

// memberStatus describes the members ids, sorted by id; match is the
// leader's progress (nil elsewhere), last its last index.
func (n *Node) memberStatus(ids []uint64, match map[uint64]uint64, last uint64) []VoterStatus {
	var out []VoterStatus
	for _, id := range ids {
		v := VoterStatus{ID: id, Address: n.members[id].Addr}
		if id == n.cfg.NodeID {
			v.DirectoryID = n.st.dirID.String()
		} else if d, ok := n.st.peers.get(id); ok {
			v.DirectoryID = d.String()
		}
		if m, ok := match[id]; ok {
			v.Match = m
			if last > m {
				v.Lag = last - m
			}
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b VoterStatus) int { return cmpUint(a.ID, b.ID) })
	return out
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func roleOf(s raft.StateType) Role {
	switch s {
	case raft.StateLeader:
		return RoleLeader
	case raft.StateCandidate:
		return RoleCandidate
	case raft.StatePreCandidate:
		return RolePreCandidate
	}
	return RoleFollower
}

func (n *Node) resolve(req uint64, r result) {
	n.waitMu.Lock()
	ch, ok := n.waiters[req]
	delete(n.waiters, req)
	n.waitMu.Unlock()
	if ok {
		ch <- r
	}
}

// submit hands p to the loop and waits for its entry to be applied here.
func (n *Node) submit(ctx context.Context, p proposal) (any, error) {
	ch := make(chan result, 1)
	n.waitMu.Lock()
	n.waiters[p.req] = ch
	n.waitMu.Unlock()
	defer func() {
		n.waitMu.Lock()
		delete(n.waiters, p.req)
		n.waitMu.Unlock()
	}()
	select {
	case n.propc <- p:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.done:
		return nil, n.closedErr()
	}
	select {
	case r := <-ch:
		return r.val, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-n.done:
		return nil, n.closedErr()
	}
}

func (n *Node) closedErr() error {
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	if n.failErr != nil {
		return fmt.Errorf("%w: %w", ErrClosed, n.failErr)
	}
	return ErrClosed
}

// Propose replicates data and returns the StateMachine's Apply result once
// the entry is committed and applied on this node. It works on followers
// and learners too (raft forwards the proposal to the leader). An error means the entry
// was not proposed (no leader known, node closed) or that ctx ended first,
// in which case the entry may still be applied later: proposals that must
// not apply twice carry their own idempotence key.
func (n *Node) Propose(ctx context.Context, data []byte) (any, error) {
	if len(data) > MaxProposalBytes {
		return nil, fmt.Errorf("quorum: proposal of %d bytes exceeds the %d limit", len(data), MaxProposalBytes)
	}
	req := n.reqSeq.Add(1)
	return n.submit(ctx, proposal{req: req, data: encodeProposal(n.cfg.NodeID, req, data)})
}

// AddVoter adds node id, listening on addr, as a voter, and returns once the
// change is applied here. It first dials addr to learn the node's directory
// id, which the change records: peers then refuse any other directory
// under that id. A node that lost its disk is re-added this way after
// RemoveVoter.
func (n *Node) AddVoter(ctx context.Context, id uint64, addr string) error {
	if id == 0 || addr == "" {
		return errors.New("quorum: AddVoter needs a node id and an address")
	}
	dir, err := n.tr.probe(ctx, id, addr)
	if err != nil {
		return fmt.Errorf("quorum: probing node %d at %s: %w", id, addr, err)
	}
	return n.changeConf(ctx, pb.ConfChangeAddNode, id, confContext{Addr: addr, Dir: dir.String()})
}

// RemoveVoter removes node id from the membership, voter or learner; it
// is RemoveMember under the name Kafka's RemoveRaftVoter suggests.
func (n *Node) RemoveVoter(ctx context.Context, id uint64) error {
	return n.RemoveMember(ctx, id)
}

// RemoveMember removes node id, a voter or a learner, from the membership
// and returns once the change is applied here. Its remembered directory id
// is forgotten, so a node that lost its disk may then be admitted again.
func (n *Node) RemoveMember(ctx context.Context, id uint64) error {
	if id == 0 {
		return errors.New("quorum: RemoveMember needs a node id")
	}
	return n.changeConf(ctx, pb.ConfChangeRemoveNode, id, confContext{})
}

func (n *Node) changeConf(ctx context.Context, typ pb.ConfChangeType, id uint64, cctx confContext) error {
	req := n.reqSeq.Add(1)
	cctx.Node, cctx.ReqID = n.cfg.NodeID, req
	b, _ := json.Marshal(cctx)
	cc := &pb.ConfChangeV2{
		Changes: []*pb.ConfChangeSingle{{Type: typ.Enum(), NodeId: new(id)}},
		Context: b,
	}
	_, err := n.submit(ctx, proposal{req: req, cc: cc})
	return err
}

// Status returns the node's current view of the quorum.
func (n *Node) Status() Status {
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	s := n.status
	s.Voters = slices.Clone(s.Voters)
	s.Learners = slices.Clone(s.Learners)
	return s
}

// WaitLeader waits until this node knows a leader and returns its id.
func (n *Node) WaitLeader(ctx context.Context) (uint64, error) {
	for {
		select {
		case <-n.done:
			return 0, n.closedErr()
		default:
		}
		n.statusMu.Lock()
		lead, ch := n.status.Leader, n.leaderc
		n.statusMu.Unlock()
		if lead != raft.None {
			return lead, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-n.done:
			return 0, n.closedErr()
		}
	}
}

// Close stops the node: the Ready loop, the transport (and its listener)
// and the storage. Pending calls return ErrClosed.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.groupsMu.Lock()
		groups := make([]*Group, 0, len(n.groups))
		for _, g := range n.groups {
			groups = append(groups, g)
		}
		n.groupsMu.Unlock()
		for _, g := range groups {
			g.Close()
		}
		close(n.stopc)
		<-n.done
		n.admit.mu.Lock()
		n.admit.closing = true
		n.admit.mu.Unlock()
		n.bgCancel()
		n.bgWG.Wait()
		n.tr.close()
		n.closeErr = n.st.close()
	})
	return n.closeErr
}
