package quorum

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"
)

const (
	// sendQueueLen bounds the messages waiting for one peer; raft
	// retransmits, so a full queue drops and reports the peer unreachable.
	sendQueueLen = 1024
	dialTimeout  = 2 * time.Second
	// handshakeTimeout bounds the handshake exchange.
	handshakeTimeout = 5 * time.Second
	// writeTimeout bounds the write of one frame; snapshots get more.
	writeTimeout     = 5 * time.Second
	snapWriteTimeout = 60 * time.Second
	// keepaliveInterval is how often an idle connection sends a frame, so
	// that the reader's deadline (readIdleTimeout) finds dead peers only.
	keepaliveInterval = time.Second
	readIdleTimeout   = 10 * time.Second
	backoffMin        = 50 * time.Millisecond
	backoffMax        = time.Second
	// refusalLogEvery rate-limits the log line of a refused peer;
	// maxRefusalKeys bounds the node ids it remembers.
	refusalLogEvery = time.Minute
	maxRefusalKeys  = 1024
)

// transportReport is what the transport tells raft about sends.
type transportReport struct {
	group       GroupID // 0: the metadata quorum
	to          uint64
	snapshot    bool // a MsgSnap was sent (ok) or lost (!ok)
	ok          bool
	unreachable bool
}

// transport carries raft messages between controllers over TCP: one
// outbound connection per peer (its own goroutine and bounded queue), and
// one reader goroutine per accepted connection.
type transport struct {
	self      hello
	ln        net.Listener
	peersDirs *peerDirs
	log       *slog.Logger
	// deliver hands a received message to the node; it must not block.
	deliver func(*pb.Message)
	// report tells the node about a send; it must not block.
	report func(transportReport)
	// admission is told of a handshake asking to admit its speaker as a
	// learner; it must not block. An error refuses the handshake.
	admission func(hello) error
	// groups routes partition groups' messages and reports (see Group);
	// nil drops them.
	groups groupRouter

	mu       sync.Mutex
	peers    map[uint64]*peer
	inbound  map[net.Conn]struct{}
	refused  map[refusal]time.Time // last refusal logged, per node id and kind
	closed   bool
	stopc    chan struct{}
	wg       sync.WaitGroup
	dialer   net.Dialer
	snapSent func(uint64) // test hook: a snapshot was sent to this peer
}

// refusal keys the rate limit of refusal logs: one line per node id and
// message a minute.
type refusal struct {
	node uint64
	msg  string
}

type peer struct {
	id    uint64
	queue chan *pb.Message
	// gqueue holds partition groups' messages apart from the metadata
	// quorum's, so a burst of data never crowds out metadata heartbeats.
	gqueue chan groupMessage
	stop   chan struct{}

	mu   sync.Mutex
	addr string
	conn net.Conn // the current connection, closed to force a redial
}

func newTransport(self hello, ln net.Listener, dirs *peerDirs, log *slog.Logger, deliver func(*pb.Message), report func(transportReport), admission func(hello) error) *transport {
	return &transport{
		self: self, ln: ln, peersDirs: dirs, log: log, deliver: deliver, report: report, admission: admission,
		peers: map[uint64]*peer{}, inbound: map[net.Conn]struct{}{}, refused: map[refusal]time.Time{},
		stopc: make(chan struct{}),
	}
}

func (t *transport) start() {
	t.wg.Add(1)
	go t.acceptLoop()
}

// setPeer adds a peer or changes its address (closing the connection to
// the old one).
func (t *transport) setPeer(id uint64, addr string) {
	if id == t.self.NodeID || addr == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if p, ok := t.peers[id]; ok {
		p.mu.Lock()
		if p.addr != addr {
			p.addr = addr
			if p.conn != nil {
				p.conn.Close()
			}
		}
		p.mu.Unlock()
		return
	}
	p := &peer{id: id, addr: addr, queue: make(chan *pb.Message, sendQueueLen),
		gqueue: make(chan groupMessage, groupSendQueueLen), stop: make(chan struct{})}
	t.peers[id] = p
	t.wg.Add(1)
	go t.sendLoop(p)
}

// removePeer stops sending to id.
func (t *transport) removePeer(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.peers[id]; ok {
		delete(t.peers, id)
		close(p.stop)
		p.mu.Lock()
		if p.conn != nil {
			p.conn.Close()
		}
		p.mu.Unlock()
	}
}

func (t *transport) peerAddrs() map[uint64]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[uint64]string, len(t.peers))
	for id, p := range t.peers {
		p.mu.Lock()
		out[id] = p.addr
		p.mu.Unlock()
	}
	return out
}

// send queues m for its peer without blocking; a full queue or an unknown
// peer drops it and reports the peer unreachable (and a snapshot lost).
func (t *transport) send(m *pb.Message) {
	t.mu.Lock()
	p := t.peers[m.GetTo()]
	t.mu.Unlock()
	if p != nil {
		select {
		case p.queue <- m:
			return
		default:
		}
	}
	t.report(transportReport{to: m.GetTo(), unreachable: true})
	if m.GetType() == pb.MsgSnap {
		t.report(transportReport{to: m.GetTo(), snapshot: true})
	}
}

func (t *transport) close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	close(t.stopc)
	for id, p := range t.peers {
		close(p.stop)
		p.mu.Lock()
		if p.conn != nil {
			p.conn.Close()
		}
		p.mu.Unlock()
		delete(t.peers, id)
	}
	for c := range t.inbound {
		c.Close()
	}
	t.mu.Unlock()
	t.ln.Close()
	t.wg.Wait()
}

// logRefusal logs a refused peer at most once per refusalLogEvery for each
// node id and message.
func (t *transport) logRefusal(node uint64, msg string, err error) {
	key := refusal{node, msg}
	t.mu.Lock()
	last, seen := t.refused[key]
	now := time.Now()
	if seen && now.Sub(last) < refusalLogEvery {
		t.mu.Unlock()
		return
	}
	if len(t.refused) >= maxRefusalKeys {
		// Node ids come from the network: forget old entries rather than
		// grow without bound.
		for k, at := range t.refused {
			if now.Sub(at) >= refusalLogEvery {
				delete(t.refused, k)
			}
		}
	}
	if len(t.refused) < maxRefusalKeys {
		t.refused[key] = now
	}
	t.mu.Unlock()
	t.log.Warn(msg, "peer", node, "err", err)
}

// checkPeer applies the identity rules to a handshake.
func (t *transport) checkPeer(h hello) error {
	if h.ClusterID != t.self.ClusterID {
		return fmt.Errorf("cluster id %q, this node is in %q", h.ClusterID, t.self.ClusterID)
	}
	if h.NodeID == t.self.NodeID {
		return fmt.Errorf("peer claims this node's id %d", h.NodeID)
	}
	t.mu.Lock()
	_, member := t.peers[h.NodeID]
	t.mu.Unlock()
	if !member {
		// Only members' directory ids are remembered (durably): anyone
		// who can reach the listener could otherwise fill peers.json
		// with made-up node ids until the node no longer restarts. A
		// learner asking to be admitted is checked against what is
		// remembered, and its directory recorded when it is admitted.
		if h.LearnerAddr == "" {
			return fmt.Errorf("node %d is not a member of this quorum", h.NodeID)
		}
		if known, ok := t.peersDirs.get(h.NodeID); ok && known != h.DirectoryID {
			return fmt.Errorf("node %d presents directory %s, remembered %s: %w", h.NodeID, h.DirectoryID, known, errWrongDirectory)
		}
		return nil
	}
	return t.peersDirs.admit(h.NodeID, h.DirectoryID)
}

func (t *transport) acceptLoop() {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			select {
			case <-t.stopc:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("raft listener accept failed", "err", err)
			time.Sleep(backoffMin)
			continue
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			c.Close()
			return
		}
		t.inbound[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.serveConn(c)
	}
}

// serveConn runs the acceptor's side of a connection: handshake, then
// messages from the peer it names.
func (t *transport) serveConn(c net.Conn) {
	defer t.wg.Done()
	defer func() {
		c.Close()
		t.mu.Lock()
		delete(t.inbound, c)
		t.mu.Unlock()
	}()
	r := bufio.NewReaderSize(c, 64<<10)
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	kind, payload, err := readFrame(r, maxFrameBytes)
	if err != nil || kind != frameHello {
		return
	}
	h, err := decodeHello(payload)
	if err != nil {
		c.Write(appendFrame(nil, frameReject, []byte(err.Error())))
		return
	}
	err = t.checkPeer(h)
	if err != nil {
		t.logRefusal(h.NodeID, "refused raft connection", err)
	} else if h.LearnerAddr != "" {
		if err = t.admission(h); err != nil {
			t.logRefusal(h.NodeID, "refused learner admission", err)
		}
	}
	if err != nil {
		reason := err.Error()
		if len(reason) > maxRejectReasonBytes {
			reason = reason[:maxRejectReasonBytes]
		}
		c.Write(appendFrame(nil, frameReject, []byte(reason)))
		return
	}
	if _, err := c.Write(appendFrame(nil, frameHello, t.self.encode())); err != nil {
		return
	}
	if h.LearnerAddr != "" {
		// An admission request is the whole conversation: raft messages
		// travel on the learner's ordinary connections.
		return
	}
	for {
		c.SetReadDeadline(time.Now().Add(readIdleTimeout))
		kind, payload, err := readFrame(r, maxFrameBytes)
		if err != nil {
			return
		}
		switch kind {
		case frameKeepalive:
			continue
		case frameGroupMessage:
			if !t.receiveGroup(h.NodeID, payload) {
				return
			}
			continue
		case frameGroupBeacon:
			if !t.receiveBeacon(h.NodeID, payload) {
				return
			}
			continue
		case frameMessage:
		default:
			t.log.Warn("unexpected raft frame, closing", "peer", h.NodeID, "kind", kind)
			return
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(payload, m); err != nil {
			t.log.Warn("undecodable raft message, closing", "peer", h.NodeID, "err", err)
			return
		}
		if err := checkInbound(m, h.NodeID, t.self.NodeID); err != nil {
			t.log.Warn("refused raft message, closing", "peer", h.NodeID, "err", err)
			return
		}
		t.deliver(m)
	}
}

// checkInbound refuses a message that is not from the handshaked peer to
// this node, is a local-only message type, or carries an oversized entry.
func checkInbound(m *pb.Message, from, to uint64) error {
	if m.GetFrom() != from || m.GetTo() != to {
		return fmt.Errorf("message from %d to %d on the connection of %d to %d", m.GetFrom(), m.GetTo(), from, to)
	}
	if err := checkMessageType(m); err != nil {
		return err
	}
	for _, e := range m.GetEntries() {
		if len(e.GetData()) > maxEntryBytes {
			return fmt.Errorf("entry %d of %d bytes exceeds the %d limit", e.GetIndex(), len(e.GetData()), maxEntryBytes)
		}
	}
	return nil
}

// checkMessageType refuses local-only message types and messages carrying
// responses: neither may come from the network.
func checkMessageType(m *pb.Message) error {
	switch m.GetType() {
	case pb.MsgHup, pb.MsgBeat, pb.MsgUnreachable, pb.MsgSnapStatus, pb.MsgCheckQuorum,
		pb.MsgStorageAppend, pb.MsgStorageAppendResp, pb.MsgStorageApply, pb.MsgStorageApplyResp:
		return fmt.Errorf("local message type %v from the network", m.GetType())
	}
	if len(m.GetResponses()) > 0 {
		return errors.New("message with responses from the network")
	}
	return nil
}

// dialPeer connects to addr and runs the dialer's side of the handshake,
// returning the acceptor's hello. It does not apply the identity rules.
func (t *transport) dialPeer(ctx context.Context, addr string) (net.Conn, hello, error) {
	return t.dialAs(ctx, addr, t.self)
}

// requestAdmission asks the node at addr to admit this node as a learner
// listening on learnerAddr. A nil error says only that the request was
// heard: the leader decides, the others ignore it.
func (t *transport) requestAdmission(ctx context.Context, addr, learnerAddr string) error {
	self := t.self
	self.LearnerAddr = learnerAddr
	c, h, err := t.dialAs(ctx, addr, self)
	if err != nil {
		return err
	}
	c.Close()
	if h.ClusterID != t.self.ClusterID {
		return fmt.Errorf("%s is in cluster %q, not %q", addr, h.ClusterID, t.self.ClusterID)
	}
	return nil
}

func (t *transport) dialAs(ctx context.Context, addr string, self hello) (net.Conn, hello, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	c, err := t.dialer.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, hello{}, err
	}
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := c.Write(appendFrame(nil, frameHello, self.encode())); err != nil {
		c.Close()
		return nil, hello{}, err
	}
	kind, payload, err := readFrame(c, maxRejectReasonBytes+64)
	if err != nil {
		c.Close()
		return nil, hello{}, err
	}
	switch kind {
	case frameReject:
		c.Close()
		return nil, hello{}, fmt.Errorf("refused by %s: %s", addr, payload)
	case frameHello:
	default:
		c.Close()
		return nil, hello{}, fmt.Errorf("unexpected handshake frame %d from %s", kind, addr)
	}
	h, err := decodeHello(payload)
	if err != nil {
		c.Close()
		return nil, hello{}, err
	}
	c.SetDeadline(time.Time{})
	return c, h, nil
}

// probe dials addr and returns the directory id of the node there, which
// must be node id. AddVoter uses it to learn a new voter's identity.
func (t *transport) probe(ctx context.Context, id uint64, addr string) (DirectoryID, error) {
	c, h, err := t.dialPeer(ctx, addr)
	if err != nil {
		return DirectoryID{}, err
	}
	c.Close()
	if h.ClusterID != t.self.ClusterID {
		return DirectoryID{}, fmt.Errorf("%s is in cluster %q, not %q", addr, h.ClusterID, t.self.ClusterID)
	}
	if h.NodeID != id {
		return DirectoryID{}, fmt.Errorf("%s is node %d, not %d", addr, h.NodeID, id)
	}
	return h.DirectoryID, nil
}

// sendLoop owns the outbound connection to p: it dials with backoff,
// handshakes, and writes queued messages with a deadline each.
func (t *transport) sendLoop(p *peer) {
	defer t.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-p.stop:
		case <-t.stopc:
		}
		cancel()
	}()
	backoff := backoffMin
	for {
		p.mu.Lock()
		addr := p.addr
		p.mu.Unlock()
		c, h, err := t.dialPeer(ctx, addr)
		if err == nil {
			// A peer removed while dialing must not be admitted: its
			// remembered directory id may already be forgotten, and
			// what is queued for it was meant for the removed
			// incarnation (a stale commit index would crash the new one).
			if stopped(p) {
				c.Close()
				return
			}
			if h.NodeID != p.id {
				err = fmt.Errorf("%s is node %d, not %d", addr, h.NodeID, p.id)
			} else {
				err = t.checkPeer(h)
			}
			if err != nil {
				c.Close()
				t.logRefusal(p.id, "refused raft peer", err)
			} else if stopped(p) {
				c.Close()
				return
			}
		}
		if err != nil {
			t.drainUnreachable(p)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff/2 + rand.N(backoff/2+1)):
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff = backoffMin
		p.mu.Lock()
		p.conn = c
		p.mu.Unlock()
		t.writeLoop(ctx, p, c)
		c.Close()
		p.mu.Lock()
		p.conn = nil
		p.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		t.report(transportReport{to: p.id, unreachable: true})
	}
}

func stopped(p *peer) bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

// drainUnreachable drops what is queued for a peer that cannot be reached,
// so raft learns of it now rather than when the queue fills.
func (t *transport) drainUnreachable(p *peer) {
	dropped := false
	for {
		select {
		case m := <-p.queue:
			dropped = true
			if m.GetType() == pb.MsgSnap {
				t.report(transportReport{to: p.id, snapshot: true})
			}
			continue
		case gm := <-p.gqueue:
			t.groupLost(p.id, gm)
			continue
		default:
		}
		break
	}
	if dropped {
		t.report(transportReport{to: p.id, unreachable: true})
	}
}

func (t *transport) writeLoop(ctx context.Context, p *peer, c net.Conn) {
	keepalive := time.NewTicker(keepaliveInterval)
	defer keepalive.Stop()
	w := bufio.NewWriterSize(c, 64<<10)
	var buf []byte
	for {
		if stopped(p) || ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-keepalive.C:
			c.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := c.Write(appendFrame(nil, frameKeepalive, nil)); err != nil {
				return
			}
			continue
		case m := <-p.queue:
			if !t.writeMessage(w, c, m, &buf) {
				return
			}
		case gm := <-p.gqueue:
			if !t.writeGroupMessage(w, c, gm, &buf) {
				return
			}
		}
		// Write what is queued behind too, metadata first, then flush
		// once.
		for more := true; more; {
			select {
			case m := <-p.queue:
				if !t.writeMessage(w, c, m, &buf) {
					return
				}
			case gm := <-p.gqueue:
				if !t.writeGroupMessage(w, c, gm, &buf) {
					return
				}
			default:
				more = false
			}
		}
		c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := w.Flush(); err != nil {
			return
		}
	}
}

func (t *transport) writeMessage(w *bufio.Writer, c net.Conn, m *pb.Message, buf *[]byte) bool {
	isSnap := m.GetType() == pb.MsgSnap
	b, err := proto.Marshal(m)
	if err == nil && len(b)+1 > maxFrameBytes {
		err = fmt.Errorf("message of %d bytes exceeds the frame limit", len(b))
	}
	if err != nil {
		t.log.Error("raft message not sent", "to", m.GetTo(), "err", err)
		if isSnap {
			t.report(transportReport{to: m.GetTo(), snapshot: true})
		}
		return true
	}
	*buf = appendFrame((*buf)[:0], frameMessage, b)
	deadline := writeTimeout
	if isSnap {
		deadline = snapWriteTimeout
	}
	c.SetWriteDeadline(time.Now().Add(deadline))
	_, err = w.Write(*buf)
	if err == nil && isSnap {
		err = w.Flush()
	}
	if isSnap {
		t.report(transportReport{to: m.GetTo(), snapshot: true, ok: err == nil})
		if err == nil && t.snapSent != nil {
			t.snapSent(m.GetTo())
		}
	}
	return err == nil
}
