package verify

import (
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Links are the proxies between the nodes of a managed cluster: a plain
// TCP forwarder for each address one node dials on another (its
// controller listener, its listener for that node's requests), grouped by
// ordered pair of nodes, so the nemesis can cut or slow what one node
// sends another without touching the clients' traffic.
//
// A cut link behaves like a network that drops every packet: the
// forwarders stop moving bytes (the sender's writes succeed until its
// socket buffers fill, and a new connection is accepted but reaches
// nothing), and when the cut heals every connection that lived through it
// is closed, as its timed-out TCP connection would be, and new ones pass.
// A link's connection carries the dialing node's messages and their
// replies, so cutting from→to alone is a one-way partition: to still
// reaches from over the link to→from.
type Links struct {
	mu     sync.Mutex
	links  map[[2]int]*link
	rng    *rand.Rand
	closed bool
	wg     sync.WaitGroup

	conns, cut, delayed atomic.Int64
}

// LinkStats counts what the links did.
type LinkStats struct {
	// Connections is the number of node-to-node connections accepted.
	Connections int64 `json:"connections"`
	// CutConnections counts connections closed when a cut healed.
	CutConnections int64 `json:"cut_connections"`
	// DelayedChunks counts reads forwarded late.
	DelayedChunks int64 `json:"delayed_chunks"`
}

// link is the traffic node from sends node to.
type link struct {
	ls       *Links
	from, to int
	lns      []net.Listener

	mu     sync.Mutex
	conns  map[*linkConn]struct{}
	cuts   int           // cuts in force; the link passes nothing while > 0
	healed chan struct{} // closed when cuts drops to 0
	delay  time.Duration
}

type linkConn struct {
	client, upstream net.Conn // upstream nil until dialed
	mu               sync.Mutex
	done             chan struct{}
}

func (c *linkConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	c.client.Close()
	if c.upstream != nil {
		c.upstream.Close()
	}
}

// NewLinks returns an empty set of links; seed drives the delays.
func NewLinks(seed int64) *Links {
	return &Links{links: map[[2]int]*link{}, rng: rand.New(rand.NewPCG(uint64(seed), 0x51ed27))}
}

// Add listens on a new loopback port that forwards to upstream, as part of
// the link from node from to node to, and returns its address: the
// signature of managed.ClusterOptions.Link.
func (ls *Links) Add(from, to int, upstream string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		ln.Close()
		return "", errors.New("links are closed")
	}
	l := ls.links[[2]int{from, to}]
	if l == nil {
		l = &link{ls: ls, from: from, to: to, conns: map[*linkConn]struct{}{}}
		ls.links[[2]int{from, to}] = l
	}
	l.mu.Lock()
	l.lns = append(l.lns, ln)
	l.mu.Unlock()
	ls.wg.Go(func() { l.accept(ln, upstream) })
	return ln.Addr().String(), nil
}

// Cut stops the traffic from node from to node to until the returned
// function heals it. Cuts nest: a link passes again once every cut of it
// healed.
func (ls *Links) Cut(from, to int) (heal func()) {
	ls.mu.Lock()
	l := ls.links[[2]int{from, to}]
	ls.mu.Unlock()
	if l == nil {
		return func() {}
	}
	l.mu.Lock()
	if l.cuts == 0 {
		l.healed = make(chan struct{})
	}
	l.cuts++
	l.mu.Unlock()
	var once sync.Once
	return func() { once.Do(l.heal) }
}

// Isolate cuts node off from every other node, both ways, until the
// returned function heals it.
func (ls *Links) Isolate(node int) (heal func()) {
	ls.mu.Lock()
	var pairs [][2]int
	for k := range ls.links {
		if k[0] == node || k[1] == node {
			pairs = append(pairs, k)
		}
	}
	ls.mu.Unlock()
	heals := make([]func(), 0, len(pairs))
	for _, k := range pairs {
		heals = append(heals, ls.Cut(k[0], k[1]))
	}
	return func() {
		for _, h := range heals {
			h()
		}
	}
}

// SetDelay holds every read on every link for a random time up to d
// (0: none) before forwarding it, keeping each connection's bytes in
// order.
func (ls *Links) SetDelay(d time.Duration) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, l := range ls.links {
		l.mu.Lock()
		l.delay = d
		l.mu.Unlock()
	}
}

// Stats returns the counters.
func (ls *Links) Stats() LinkStats {
	return LinkStats{Connections: ls.conns.Load(), CutConnections: ls.cut.Load(), DelayedChunks: ls.delayed.Load()}
}

// Close stops every listener and connection and waits for their
// goroutines.
func (ls *Links) Close() {
	ls.mu.Lock()
	ls.closed = true
	links := make([]*link, 0, len(ls.links))
	for _, l := range ls.links {
		links = append(links, l)
	}
	ls.mu.Unlock()
	for _, l := range links {
		l.mu.Lock()
		for _, ln := range l.lns {
			ln.Close()
		}
		conns := make([]*linkConn, 0, len(l.conns))
		for c := range l.conns {
			conns = append(conns, c)
		}
		if l.cuts > 0 {
			l.cuts = 0
			close(l.healed)
		}
		l.mu.Unlock()
		for _, c := range conns {
			c.close()
		}
	}
	ls.wg.Wait()
}

// heal ends one cut; the last one closes every connection that lived
// through the cut before the link passes again.
func (l *link) heal() {
	l.mu.Lock()
	if l.cuts == 0 {
		l.mu.Unlock()
		return
	}
	l.cuts--
	if l.cuts > 0 {
		l.mu.Unlock()
		return
	}
	conns := make([]*linkConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	healed := l.healed
	l.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	l.ls.cut.Add(int64(len(conns)))
	close(healed)
}

// gate returns a channel that is closed while the link passes traffic.
func (l *link) gate() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cuts > 0 {
		return l.healed
	}
	return closedChan
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// pass waits until the link passes traffic; false once c is closed.
func (l *link) pass(c *linkConn) bool {
	select {
	case <-l.gate():
	case <-c.done:
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

func (l *link) accept(ln net.Listener, upstream string) {
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		l.ls.conns.Add(1)
		c := &linkConn{client: client, done: make(chan struct{})}
		l.mu.Lock()
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		l.ls.wg.Go(func() {
			defer func() {
				c.close()
				l.mu.Lock()
				delete(l.conns, c)
				l.mu.Unlock()
			}()
			l.serve(c, upstream)
		})
	}
}

// serve connects c to upstream (once the link passes) and forwards both
// ways until either side ends or a cut's heal closes c.
func (l *link) serve(c *linkConn, upstream string) {
	if !l.pass(c) {
		return
	}
	up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return
	}
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		up.Close()
		return
	default:
	}
	c.upstream = up
	c.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() { l.pump(c, c.client, up) })
	wg.Go(func() { l.pump(c, up, c.client) })
	wg.Wait()
}

type chunk struct {
	b   []byte
	due time.Time
}

// pump forwards src to dst, holding each read while the link is cut and
// for the link's delay; the first end of either side closes c.
func (l *link) pump(c *linkConn, src, dst net.Conn) {
	defer c.close()
	q := make(chan chunk, 64)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(q)
	wg.Go(func() {
		defer c.close()
		for ch := range q {
			if wait := time.Until(ch.due); wait > 0 {
				select {
				case <-time.After(wait):
				case <-c.done:
					return
				}
			}
			if _, err := dst.Write(ch.b); err != nil {
				return
			}
		}
	})
	var last time.Time
	for {
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			if !l.pass(c) {
				return
			}
			due := time.Now()
			if d := l.drawDelay(); d > 0 {
				due = due.Add(d)
				l.ls.delayed.Add(1)
			}
			// Never before the previous read: bytes stay in order.
			due = maxTime(due, last)
			last = due
			select {
			case q <- chunk{b: buf[:n], due: due}:
			case <-c.done:
				return
			}
		}
		if err != nil { // EOF, a reset or a close: the connection ends
			return
		}
	}
}

func (l *link) drawDelay() time.Duration {
	l.mu.Lock()
	d := l.delay
	l.mu.Unlock()
	if d <= 0 {
		return 0
	}
	l.ls.mu.Lock()
	defer l.ls.mu.Unlock()
	return time.Duration(l.ls.rng.Int64N(int64(d) + 1))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
