package verify

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Proxy is a Kafka-aware TCP proxy that injects network faults between
// clients and a cluster. It listens once per upstream broker; clients
// bootstrap from Addrs, and every broker address in Metadata,
// FindCoordinator and DescribeCluster responses is rewritten to the proxy
// listener for that broker (created on first sight), so clients never
// leave the proxy.
//
// Requests pass through byte for byte. Faults act on responses, after the
// request reached the broker: a dropped response closes the client's
// connection (the client cannot tell a write that happened from one that
// did not), a delayed one arrives late. Reset breaks every connection.
type Proxy struct {
	upTLS     *tls.Config // dial upstreams with TLS (nil: plain TCP)
	mu        sync.Mutex
	listeners map[string]*proxyListener // upstream host:port -> listener
	bootstrap []string
	conns     map[*proxyConn]struct{}
	closed    bool
	rng       *rand.Rand
	drop      float64
	drops     []ProxyDrop
	delay     time.Duration
	wg        sync.WaitGroup

	dropped, delayed, resets, accepted atomic.Int64
}

type proxyListener struct {
	ln       net.Listener
	upstream string
}

// ProxyStats counts what a proxy did.
type ProxyStats struct {
	// Connections is the number of client connections accepted.
	Connections int64 `json:"connections"`
	// DroppedResponses counts write responses dropped.
	DroppedResponses int64 `json:"dropped_responses"`
	// DelayedResponses counts responses held back.
	DelayedResponses int64 `json:"delayed_responses"`
	// Resets counts connections reset by Reset.
	Resets int64 `json:"resets"`
}

// NewProxy starts listening on a loopback port for each upstream
// bootstrap address. seed drives the per-response fault coin flips.
func NewProxy(upstreams []string, seed int64) (*Proxy, error) {
	return NewProxyTLS(upstreams, seed, nil)
}

// NewProxyTLS is NewProxy for a cluster reached with TLS: clients speak
// to the proxy without TLS (on loopback), and the proxy dials each broker
// with upTLS (nil: plain TCP), so that it can still read and rewrite the
// Kafka frames it forwards. SASL exchanges pass through unchanged.
func NewProxyTLS(upstreams []string, seed int64, upTLS *tls.Config) (*Proxy, error) {
	if len(upstreams) == 0 {
		return nil, errors.New("proxy: no upstream brokers")
	}
	p := &Proxy{
		upTLS:     upTLS,
		listeners: map[string]*proxyListener{},
		conns:     map[*proxyConn]struct{}{},
		rng:       rand.New(rand.NewPCG(uint64(seed), 0xfa17)),
	}
	for _, u := range upstreams {
		l, err := p.listenerFor(u)
		if err != nil {
			p.Close()
			return nil, err
		}
		p.bootstrap = append(p.bootstrap, l.ln.Addr().String())
	}
	return p, nil
}

// Addrs returns the proxy's bootstrap addresses, one per upstream given to
// NewProxy.
func (p *Proxy) Addrs() []string { return append([]string(nil), p.bootstrap...) }

// SetDrop sets the probability that a response to a write request
// (Produce, OffsetCommit, TxnOffsetCommit, EndTxn, AddPartitionsToTxn,
// AddOffsetsToTxn, InitProducerId) is dropped. Zero heals.
func (p *Proxy) SetDrop(prob float64) {
	p.mu.Lock()
	p.drop = prob
	p.mu.Unlock()
}

// SetDelay holds each response for a random time up to d. Zero heals.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Reset breaks every open connection with a TCP reset and returns how many
// there were.
func (p *Proxy) Reset() int {
	p.mu.Lock()
	cs := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.close(true)
	}
	p.resets.Add(int64(len(cs)))
	return len(cs)
}

// Drops returns every response dropped so far, in order.
func (p *Proxy) Drops() []ProxyDrop {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxyDrop(nil), p.drops...)
}

// Stats returns counters.
func (p *Proxy) Stats() ProxyStats {
	return ProxyStats{Connections: p.accepted.Load(), DroppedResponses: p.dropped.Load(),
		DelayedResponses: p.delayed.Load(), Resets: p.resets.Load()}
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	for _, l := range p.listeners {
		l.ln.Close()
	}
	cs := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.close(false)
	}
	p.wg.Wait()
	return nil
}

// listenerFor returns the listener fronting upstream, starting it if
// needed.
func (p *Proxy) listenerFor(upstream string) (*proxyListener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.listeners[upstream]; ok {
		return l, nil
	}
	if p.closed {
		return nil, errors.New("proxy closed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy for %s: %w", upstream, err)
	}
	l := &proxyListener{ln: ln, upstream: upstream}
	p.listeners[upstream] = l
	p.wg.Add(1)
	go p.accept(l)
	return l, nil
}

func (p *Proxy) accept(l *proxyListener) {
	defer p.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(c, l.upstream)
		}()
	}
}

type proxyConn struct {
	client, upstream net.Conn
	once             sync.Once
}

func (c *proxyConn) close(reset bool) {
	c.once.Do(func() {
		for _, nc := range []net.Conn{c.client, c.upstream} {
			if nc == nil {
				continue
			}
			if tc, ok := nc.(*net.TCPConn); ok && reset {
				tc.SetLinger(0)
			}
			nc.Close()
		}
	})
}

// inflight is a request waiting for its response.
type inflight struct {
	key, version int16
	corr         int32
	write        bool
}

// maxFrame bounds a frame the proxy buffers.
const maxFrame = 256 << 20

func readFrame(r io.Reader) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 0 || n > maxFrame {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	buf := make([]byte, 4+n)
	copy(buf, size[:])
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		return nil, err
	}
	return buf, nil
}

// dialUpstream connects to a broker, with TLS when the proxy has a TLS
// configuration (the handshake included in the time bound).
func (p *Proxy) dialUpstream(upstream string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: 2 * time.Second}
	if p.upTLS == nil {
		return nd.Dial("tcp", upstream)
	}
	// crypto/tls takes the server name from the address when the
	// configuration has none.
	d := &tls.Dialer{NetDialer: nd, Config: p.upTLS}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.DialContext(ctx, "tcp", upstream)
}

func (p *Proxy) serve(client net.Conn, upstream string) {
	up, err := p.dialUpstream(upstream)
	if err != nil {
		client.Close()
		return
	}
	c := &proxyConn{client: client, upstream: up}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close(false)
		return
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	defer func() {
		c.close(false)
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()

	pending := make(chan inflight, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.close(false)
		for {
			frame, err := readFrame(client)
			if err != nil {
				return
			}
			in, expect, err := parseRequest(frame[4:])
			if err != nil {
				return
			}
			if expect {
				pending <- in
			}
			if _, err := up.Write(frame); err != nil {
				return
			}
		}
	}()
	for {
		frame, err := readFrame(up)
		if err != nil {
			break
		}
		var in inflight
		select {
		case in = <-pending:
		case <-done:
			// The request side ended; a queued entry may still match.
			select {
			case in = <-pending:
			default:
				c.close(false)
				<-done
				return
			}
		}
		if len(frame) < 8 || int32(binary.BigEndian.Uint32(frame[4:8])) != in.corr {
			break
		}
		if out, err := p.rewrite(in, frame); err == nil {
			frame = out
		}
		p.mu.Lock()
		drop := in.write && p.drop > 0 && p.rng.Float64() < p.drop
		var hold time.Duration
		if p.delay > 0 {
			hold = time.Duration(p.rng.Int64N(int64(p.delay)))
		}
		p.mu.Unlock()
		if drop {
			p.dropped.Add(1)
			p.mu.Lock()
			p.drops = append(p.drops, ProxyDrop{At: time.Now(), Key: in.key})
			p.mu.Unlock()
			break
		}
		if hold > 0 {
			p.delayed.Add(1)
			time.Sleep(hold)
		}
		if _, err := client.Write(frame); err != nil {
			break
		}
	}
	c.close(false)
	<-done
}

// writeKeys are the requests whose lost response makes a client unsure
// whether its write happened.
// ShareAcknowledge (79) is one: a lost answer leaves its ACCEPTs unknown.
// ShareFetch is not, though it acquires: its answer is the delivery itself,
// and a lost one would only strand records until their locks expire.
var writeKeys = map[int16]bool{0: true, 8: true, 22: true, 24: true, 25: true, 26: true, 28: true, 79: true}

// FaultDroppedResponse is the Detail of the EvFault events a run writes for
// the responses its proxy dropped (Proc "proxy", Value the request key).
const FaultDroppedResponse = "dropped-response"

// ProxyDrop is one response the proxy dropped.
type ProxyDrop struct {
	// At is when it was dropped.
	At time.Time
	// Key is the request's API key.
	Key int16
}

// parseRequest reads the header of a request (without its size prefix) and
// says whether a response will come: everything but acks=0 Produce.
func parseRequest(b []byte) (inflight, bool, error) {
	if len(b) < 8 {
		return inflight{}, false, errors.New("short request")
	}
	in := inflight{
		key:     int16(binary.BigEndian.Uint16(b[0:2])),
		version: int16(binary.BigEndian.Uint16(b[2:4])),
		corr:    int32(binary.BigEndian.Uint32(b[4:8])),
	}
	in.write = writeKeys[in.key]
	if in.key != 0 {
		return in, true, nil
	}
	// Produce: find acks after the header and the transactional id.
	rest := b[8:]
	n, rest, ok := readInt16(rest) // client id
	if !ok {
		return in, true, nil
	}
	if n > 0 {
		if int(n) > len(rest) {
			return in, true, nil
		}
		rest = rest[n:]
	}
	flexible := in.version >= 9
	if flexible {
		if rest, ok = skipTags(rest); !ok {
			return in, true, nil
		}
		l, r, ok := readUvarint(rest)
		if !ok || (l > 0 && int(l-1) > len(r)) {
			return in, true, nil
		}
		rest = r
		if l > 0 {
			rest = rest[l-1:]
		}
	} else {
		l, r, ok := readInt16(rest)
		if !ok {
			return in, true, nil
		}
		rest = r
		if l > 0 {
			if int(l) > len(rest) {
				return in, true, nil
			}
			rest = rest[l:]
		}
	}
	acks, _, ok := readInt16(rest)
	if ok && acks == 0 {
		return in, false, nil
	}
	return in, true, nil
}

func readInt16(b []byte) (int16, []byte, bool) {
	if len(b) < 2 {
		return 0, b, false
	}
	return int16(binary.BigEndian.Uint16(b)), b[2:], true
}

func readUvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, b, false
	}
	return v, b[n:], true
}

func skipTags(b []byte) ([]byte, bool) {
	n, b, ok := readUvarint(b)
	if !ok {
		return b, false
	}
	for i := uint64(0); i < n; i++ {
		if _, b, ok = readUvarint(b); !ok {
			return b, false
		}
		var size uint64
		if size, b, ok = readUvarint(b); !ok || size > uint64(len(b)) {
			return b, false
		}
		b = b[size:]
	}
	return b, true
}

// rewrite points broker addresses in a response at the proxy.
func (p *Proxy) rewrite(in inflight, frame []byte) ([]byte, error) {
	if in.key != 3 && in.key != 10 && in.key != 60 {
		return frame, nil
	}
	req := kmsg.RequestForKey(in.key)
	req.SetVersion(in.version)
	body := frame[8:]
	if req.IsFlexible() {
		rest, ok := skipTags(body)
		if !ok {
			return nil, errors.New("bad response header")
		}
		body = rest
	}
	header := frame[4 : len(frame)-len(body)]
	resp := req.ResponseKind()
	resp.SetVersion(in.version)
	if err := resp.ReadFrom(body); err != nil {
		return nil, err
	}
	var err error
	local := func(host *string, port *int32) {
		if err != nil || *host == "" || *port <= 0 {
			return
		}
		l, lerr := p.listenerFor(net.JoinHostPort(*host, strconv.Itoa(int(*port))))
		if lerr != nil {
			err = lerr
			return
		}
		h, ps, _ := net.SplitHostPort(l.ln.Addr().String())
		pn, _ := strconv.Atoi(ps)
		*host, *port = h, int32(pn)
	}
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			local(&r.Brokers[i].Host, &r.Brokers[i].Port)
		}
	case *kmsg.FindCoordinatorResponse:
		if r.ErrorCode == 0 {
			local(&r.Host, &r.Port)
		}
		for i := range r.Coordinators {
			if r.Coordinators[i].ErrorCode == 0 {
				local(&r.Coordinators[i].Host, &r.Coordinators[i].Port)
			}
		}
	case *kmsg.DescribeClusterResponse:
		for i := range r.Brokers {
			local(&r.Brokers[i].Host, &r.Brokers[i].Port)
		}
	}
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4, len(frame)+64)
	out = append(out, header...)
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out[:4], uint32(len(out)-4))
	return out, nil
}
