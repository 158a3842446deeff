// Package server accepts Kafka protocol connections and turns frames into
// decoded kmsg requests for a Handler.
//
// Each connection has a reader goroutine that reads size-capped frames,
// decodes them and calls the Handler in arrival order (so effects, such as
// appends from one producer connection, happen in the order sent), and a
// writer goroutine that writes responses in the same order. A handler may
// return a deferred response (acks=all produce waiting for fsync, long-poll
// fetch): the reader goes on with the next request while the writer waits,
// which lets pipelined produce requests share one group-commit fsync.
package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/exactly/exactly/internal/security"
	"github.com/exactly/exactly/internal/wire"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Request is one decoded request with what the handler needs to know about
// where it came from.
type Request struct {
	Msg           kmsg.Request
	Header        Header
	Conn          *Conn
	ReceivedBytes int
	// decodeCharge is what decoding the body was charged to the request
	// budget (wire.DecodeCost), released with the frame's bytes.
	decodeCharge int64
}

// Header is the Kafka request header.
type Header struct {
	APIKey        int16
	APIVersion    int16
	CorrelationID int32
	ClientID      string
}

// Reply is what a handler returns: either a response ready now, or a
// function the connection's writer calls (in request order) to obtain it.
// A nil Reply (Response and Wait both nil) sends nothing, as for acks=0.
type Reply struct {
	Response kmsg.Response
	Wait     func() kmsg.Response
}

// Handler serves decoded requests. Handle runs on the connection's reader
// goroutine; it must not block for long — blocking work belongs in
// Reply.Wait.
type Handler interface {
	// Versions reports the inclusive version range served for an API key;
	// ok is false for keys the handler does not serve.
	Versions(key int16) (lo, hi int16, ok bool)
	// Handle serves one request.
	Handle(ctx context.Context, req *Request) Reply
}

// Config holds listener limits. Zero fields take the defaults New documents.
type Config struct {
	// MaxRequestBytes is socket.request.max.bytes: larger frames close the
	// connection, as Kafka does.
	MaxRequestBytes int32
	// SendBufferBytes and ReceiveBufferBytes are socket.send.buffer.bytes
	// and socket.receive.buffer.bytes: SO_SNDBUF and SO_RCVBUF of each
	// accepted TCP connection. Zero or negative leaves the kernel's
	// autotuning.
	SendBufferBytes, ReceiveBufferBytes int
	// MaxInFlight bounds the responses queued per connection: a reader
	// with that many requests waiting for their answers stops reading.
	MaxInFlight int
	// IdleTimeout is connections.max.idle.ms.
	IdleTimeout time.Duration
	// RequestReadTimeout bounds how long a request frame, once its size
	// has arrived, may take to arrive whole (socket.request.read.timeout.ms),
	// so a peer that trickles a frame cannot hold its buffer forever.
	RequestReadTimeout time.Duration
	// WriteTimeout bounds writing one response (socket.response.write.
	// timeout.ms): a client that stops reading is disconnected rather than
	// pinning its queued responses.
	WriteTimeout time.Duration
	// MaxQueuedBytes is queued.max.request.bytes: request bytes held by
	// all connections at once, from the frame's first byte until its
	// handler is done with them. A reader whose frame does not fit stops
	// reading until bytes are released. Negative: unbounded. Raised to
	// MaxRequestBytes when lower, so every legal frame fits.
	MaxQueuedBytes int64
	// MaxConnections is max.connections: a connection accepted beyond it
	// is closed at once.
	MaxConnections int
	// MaxConnectionsPerIP is max.connections.per.ip: a connection from an
	// address that already has this many is closed at once.
	MaxConnectionsPerIP int
	// MaxConnectionsPerIPOverrides are max.connections.per.ip.overrides,
	// by IP address (in the form remoteIP gives): these addresses get
	// their own limit instead.
	MaxConnectionsPerIPOverrides map[string]int
	// RecycledKeys are API keys whose large requests (64 KiB and up) are
	// read into pooled buffers, reused as soon as Handle returns. Their
	// handlers must be done with the request's bytes by then, deferred
	// Wait included (decoded strings are copies; byte fields alias the
	// buffer). Produce is the case: its handler appends the batches
	// before returning, and its buffers are the bulk of the broker's
	// garbage.
	RecycledKeys []int16
	// Authenticator runs the SASL exchanges of SASL listeners and hears
	// of every authentication's outcome (TLS client certificates too).
	// Required when a listener is SASL_PLAINTEXT or SASL_SSL.
	Authenticator Authenticator
	// AuthTimeout bounds, from accept, a TLS handshake and SASL exchange
	// together: a connection not authenticated by then is closed, so slow
	// or abandoned handshakes cannot hold goroutines and sockets.
	// Default: RequestReadTimeout.
	AuthTimeout time.Duration
	// MaxSaslReceive is sasl.server.max.receive.size: the largest frame
	// (or legacy SASL token) accepted before a SASL connection has
	// authenticated.
	MaxSaslReceive int32
	// MaxReauth is connections.max.reauth.ms: an authenticated SASL
	// session lasts this long, after which a connection that did not
	// re-authenticate is closed at its next request. Zero: forever.
	MaxReauth time.Duration
}

// Listener is one listening socket and the security protocol of the
// connections it accepts.
type Listener struct {
	// Name is the listener name (Kafka's "listeners" key), by which the
	// handler finds the address to advertise to its clients.
	Name     string
	Protocol security.Protocol
	Net      net.Listener
	// TLS is the material of SSL and SASL_SSL listeners.
	TLS *security.TLS
}

// Defaults for Config fields left zero.
const (
	DefaultMaxRequestBytes     = 100 << 20
	DefaultMaxInFlight         = 32
	DefaultRequestReadTimeout  = 30 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	DefaultMaxQueuedBytes      = 512 << 20
	DefaultMaxConnections      = 4096
	DefaultMaxConnectionsPerIP = 1024
	DefaultMaxSaslReceive      = 524288
)

// recycleMin is the smallest request read into a pooled buffer: below it
// a fresh allocation is cheap.
const recycleMin = 64 << 10

// requestBufs holds request buffers of RecycledKeys between requests.
var requestBufs sync.Pool

// Server owns a listener and its connections.
type Server struct {
	cfg     Config
	handler Handler
	log     *slog.Logger
	metrics Observer
	budget  *budget

	lns    []*Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[*Conn]struct{}
	perIP map[string]int

	// unauthLog rate-limits the warnings about connections closed before
	// they authenticated (auth.go): any peer can cause those at will.
	unauthLog LogLimiter
}

// Observer receives the server's measurements; nil is allowed.
type Observer interface {
	// ObserveRequest is called once per request, when its response is
	// ready (or it failed to decode).
	ObserveRequest(key int16, d time.Duration, failed bool)
	// ObserveConnection is called when a connection is accepted, closed
	// or rejected.
	ObserveConnection(ev ConnEvent)
	// ObserveRequestBytes is called with every change (positive or
	// negative) of the request bytes in flight.
	ObserveRequestBytes(delta int64)
}

// ConnEvent is what happened to a connection.
type ConnEvent int

// Connection events. A rejected connection is never accepted, so it is
// not closed either.
const (
	ConnAccepted ConnEvent = iota
	ConnClosed
	ConnRejectedMaxConnections
	ConnRejectedMaxConnectionsPerIP
)

// String is the event's metric label: the config key that refused the
// connection, or what happened.
func (e ConnEvent) String() string {
	switch e {
	case ConnAccepted:
		return "accepted"
	case ConnClosed:
		return "closed"
	case ConnRejectedMaxConnections:
		return "max.connections"
	case ConnRejectedMaxConnectionsPerIP:
		return "max.connections.per.ip"
	}
	return "unknown"
}

// New returns a server that will serve handler on ln, one PLAINTEXT
// listener, once Serve is called.
func New(ln net.Listener, cfg Config, handler Handler, logger *slog.Logger, obs Observer) *Server {
	return NewListeners([]Listener{{Name: string(security.Plaintext), Protocol: security.Plaintext, Net: ln}}, cfg, handler, logger, obs)
}

// NewListeners returns a server that will serve handler on every listener
// once Serve is called; every limit applies to all of them together.
func NewListeners(lns []Listener, cfg Config, handler Handler, logger *slog.Logger, obs Observer) *Server {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.RequestReadTimeout <= 0 {
		cfg.RequestReadTimeout = DefaultRequestReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxQueuedBytes == 0 {
		cfg.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if cfg.MaxQueuedBytes > 0 && cfg.MaxQueuedBytes < int64(cfg.MaxRequestBytes) {
		cfg.MaxQueuedBytes = int64(cfg.MaxRequestBytes)
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxConnectionsPerIP <= 0 {
		cfg.MaxConnectionsPerIP = DefaultMaxConnectionsPerIP
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = cfg.RequestReadTimeout
	}
	if cfg.MaxSaslReceive <= 0 {
		cfg.MaxSaslReceive = DefaultMaxSaslReceive
	}
	if obs == nil {
		obs = nopObserver{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{cfg: cfg, handler: handler, log: logger, metrics: obs, budget: newBudget(cfg.MaxQueuedBytes, obs),
		ctx: ctx, cancel: cancel, conns: map[*Conn]struct{}{}, perIP: map[string]int{}}
	for i := range lns {
		l := lns[i]
		srv.lns = append(srv.lns, &l)
	}
	return srv
}

// Addr is the first listener's address.
func (s *Server) Addr() net.Addr { return s.lns[0].Net.Addr() }

// ListenerAddr is the address of the named listener, or nil.
func (s *Server) ListenerAddr(name string) net.Addr {
	for _, l := range s.lns {
		if l.Name == name {
			return l.Net.Addr()
		}
	}
	return nil
}

// Serve accepts connections on every listener until Close, and returns nil
// after Close.
func (s *Server) Serve() error {
	errs := make(chan error, len(s.lns))
	for _, l := range s.lns {
		go func() { errs <- s.serveListener(l) }()
	}
	var first error
	for range s.lns {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// serveListener accepts connections on l until Close. An accept error
// other than a closed listener (EMFILE when the process is out of file
// descriptors, ECONNABORTED, ENOBUFS) is retried with backoff: returning
// would leave a live process that never accepts again.
func (s *Server) serveListener(l *Listener) error {
	var retry acceptRetry
	for {
		nc, err := l.Net.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			retry.failed(s.log, err)
			select {
			case <-time.After(retry.delay):
			case <-s.ctx.Done():
				return nil
			}
			continue
		}
		retry.reset()
		s.sizeBuffers(nc)
		c, ev := s.admit(nc, l)
		if c == nil {
			if ev == ConnRejectedMaxConnections || ev == ConnRejectedMaxConnectionsPerIP {
				s.metrics.ObserveConnection(ev)
			}
			nc.Close()
			continue
		}
		s.metrics.ObserveConnection(ConnAccepted)
		go c.serve()
	}
}

// sizeBuffers sets the socket buffers the config asks for on a new TCP
// connection. A failure leaves the kernel's sizes, which only changes
// speed, so it is not worth refusing the connection.
func (s *Server) sizeBuffers(nc net.Conn) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return
	}
	if n := s.cfg.SendBufferBytes; n > 0 {
		_ = tc.SetWriteBuffer(n)
	}
	if n := s.cfg.ReceiveBufferBytes; n > 0 {
		_ = tc.SetReadBuffer(n)
	}
}

// admit registers a new connection, or says why it is refused (a zero
// event with a nil Conn: the server is closing).
func (s *Server) admit(nc net.Conn, l *Listener) (*Conn, ConnEvent) {
	ip := remoteIP(nc)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ctx.Err() != nil:
		return nil, ConnClosed
	case len(s.conns) >= s.cfg.MaxConnections:
		return nil, ConnRejectedMaxConnections
	case s.perIP[ip] >= s.limitFor(ip):
		return nil, ConnRejectedMaxConnectionsPerIP
	}
	ctx, cancel := context.WithCancel(s.ctx)
	c := &Conn{srv: s, nc: nc, listener: l, remote: nc.RemoteAddr().String(), ip: ip, ctx: ctx, cancel: cancel}
	if l.TLS != nil {
		// No I/O yet: the handshake runs on the connection's goroutine.
		c.nc = tls.Server(nc, l.TLS.ServerConfig())
	}
	if l.Protocol.SASL() {
		c.sasl = &saslConn{}
	}
	if l.TLS != nil || c.sasl != nil {
		c.authDeadline = time.Now().Add(s.cfg.AuthTimeout)
	}
	s.conns[c] = struct{}{}
	s.perIP[ip]++
	s.wg.Add(1)
	return c, ConnAccepted
}

// forget unregisters a connection that has ended.
func (s *Server) forget(c *Conn) {
	c.nc.Close()
	c.cancel()
	s.mu.Lock()
	delete(s.conns, c)
	if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
		delete(s.perIP, c.ip)
	}
	s.mu.Unlock()
	s.metrics.ObserveConnection(ConnClosed)
	s.wg.Done()
}

// remoteIP is the peer's address without its port: the unit
// max.connections.per.ip counts.
// limitFor is the connection limit of one client address.
func (s *Server) limitFor(ip string) int {
	if n, ok := s.cfg.MaxConnectionsPerIPOverrides[ip]; ok {
		return n
	}
	return s.cfg.MaxConnectionsPerIP
}

func remoteIP(nc net.Conn) string {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap().String()
	}
	host, _, err := net.SplitHostPort(nc.RemoteAddr().String())
	if err != nil {
		return nc.RemoteAddr().String()
	}
	return host
}

// Close stops accepting, stops reading new requests, lets every connection
// write the responses of requests already read (so an appended batch is
// acknowledged rather than silently retried), then closes connections.
// Connections still busy after grace are closed forcibly.
func (s *Server) Close(grace time.Duration) {
	s.cancel()
	for _, l := range s.lns {
		l.Net.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.nc.SetReadDeadline(time.Now())
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	<-done
}

// Conn is one client connection.
type Conn struct {
	srv      *Server
	nc       net.Conn
	listener *Listener
	// sasl is the authentication state of a SASL listener's connection
	// (auth.go), touched only by the reader; nil on other listeners.
	sasl *saslConn
	// authDeadline, if set, is when a connection that has not finished
	// authenticating (TLS handshake, SASL exchange) is closed.
	authDeadline time.Time
	remote       string
	ip           string
	// ctx is cancelled when the connection ends (the peer went away, a
	// deadline passed, a bad request) or the server closes: a handler's
	// deferred work for a connection nobody will answer stops with it.
	ctx    context.Context
	cancel context.CancelFunc
	mute   muteState // quota throttling (mute.go)
	// user is the authenticated user name (Kafka's principal "User:<name>"
	// without its type); empty until a listener authenticates the
	// connection, which then reads as the anonymous user.
	user atomic.Pointer[string]
}

// Listener is the name of the listener the connection arrived on.
func (c *Conn) Listener() string { return c.listener.Name }

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() string { return c.remote }

// AnonymousUser is the user of a connection nobody authenticated, as in
// Kafka (principal "User:ANONYMOUS").
const AnonymousUser = "ANONYMOUS"

// User is the connection's authenticated user name, AnonymousUser until
// authentication sets one. Quotas and authorization key on it.
func (c *Conn) User() string {
	if u := c.user.Load(); u != nil {
		return *u
	}
	return AnonymousUser
}

// SetUser records the user a listener's authentication established
// (SASL, or a TLS client certificate).
func (c *Conn) SetUser(name string) { c.user.Store(&name) }

// Close drops the connection, e.g. after a request Kafka answers by closing.
func (c *Conn) Close() { c.nc.Close() }

// abort ends a connection whose answers nobody will read: deferred
// handlers waiting on its context return, and the socket is closed now
// rather than after they do.
func (c *Conn) abort() {
	c.cancel()
	c.nc.Close()
}

type pending struct {
	hdr     Header
	version int16 // response version; 0 for the ApiVersions fallback
	flex    bool
	reply   Reply
	start   time.Time
	charged int64 // request bytes to release once the reply is done
	// raw, if set, is sent as a legacy SASL token: a 4-byte length and
	// these bytes, no header (auth.go).
	raw []byte
}

func (c *Conn) serve() {
	s := c.srv
	defer s.forget(c)
	queue := make(chan pending, s.cfg.MaxInFlight)
	writerDone := make(chan struct{})
	if !c.handshake() {
		return
	}
	go c.writeLoop(queue, writerDone)
	drain := c.readLoop(queue)
	if s.ctx.Err() == nil && !drain {
		// The reader stopped because of the peer (EOF, reset, a deadline,
		// a request we refuse), not because the server is closing: nobody
		// will read the answers still queued.
		c.abort()
	}
	close(queue)
	<-writerDone
}

// readLoop reads, decodes and handles requests in arrival order until the
// connection or the server ends. drain is true when the last answers
// queued must still be written before the connection closes (a refused
// SASL authentication is answered, then closed).
func (c *Conn) readLoop(queue chan<- pending) (drain bool) {
	s := c.srv
	br := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		if !c.waitUnmuted() { // a throttled client's next request waits (mute.go)
			return false
		}
		if c.sasl != nil && c.sasl.phase == phaseLegacy {
			p, next, err := c.legacyToken(br)
			if err != nil {
				c.logAuthClose(err)
				return false
			}
			if !c.enqueue(queue, p) {
				return false
			}
			if next == closeAfter {
				return true
			}
			continue
		}
		f, err := c.readFrame(br)
		if err != nil {
			if !errors.Is(err, errEndOfConn) {
				c.warnClosing("closing connection", "err", err)
			}
			return false
		}
		start := time.Now()
		req, hdr, err := c.decode(f.buf)
		if req != nil {
			f.charged += req.decodeCharge
		}
		if err != nil {
			s.budget.release(f.charged)
			c.warnClosing("closing connection: bad request",
				"api_key", hdr.APIKey, "api_version", hdr.APIVersion, "client_id", hdr.ClientID, "err", err)
			s.metrics.ObserveRequest(hdr.APIKey, time.Since(start), true)
			return false
		}
		var reply Reply
		version := hdr.APIVersion
		next := carryOn
		if c.sasl != nil && req.Msg != nil {
			if reply, next, err = c.sasl.intercept(c, req); err != nil {
				s.budget.release(f.charged)
				c.logAuthClose(err)
				return false
			}
		}
		if next != carryOn {
			// Answered by the SASL exchange (auth.go).
		} else if req.Msg == nil {
			version = 0
			// ApiVersions with a version we do not know: answer v0 with
			// UNSUPPORTED_VERSION and our ranges so the client can retry.
			reply = Reply{Response: c.apiVersionsFallback()}
		} else if reply, err = c.safeHandle(req); err != nil {
			s.budget.release(f.charged)
			s.log.Error("closing connection: handler panicked", "remote", c.remote,
				"api_key", hdr.APIKey, "api_version", hdr.APIVersion, "client_id", hdr.ClientID, "err", err)
			return false
		}
		flex := req.Msg != nil && req.Msg.IsFlexible() && hdr.APIKey != 18
		if f.recycle != nil {
			// The handler is done with the bytes (RecycledKeys' rule), but
			// not with the decoded request, which a deferred reply may
			// still hold: only the frame's bytes are released now.
			*f.recycle = f.buf
			requestBufs.Put(f.recycle)
			s.budget.release(f.charged - req.decodeCharge)
			f.charged = req.decodeCharge
		}
		p := pending{hdr: hdr, version: version, flex: flex, reply: reply, start: start, charged: f.charged}
		if !c.enqueue(queue, p) {
			return false
		}
		if next == closeAfter {
			return true
		}
	}
}

// enqueue hands p to the writer; false when the server is closing (p is
// still answered).
func (c *Conn) enqueue(queue chan<- pending, p pending) bool {
	select {
	case queue <- p:
		return true
	case <-c.srv.ctx.Done():
		// Shutting down with a full queue: still answer this request.
		queue <- p
		return false
	}
}

// errEndOfConn marks the ordinary ends of a connection (the peer closed
// it, it idled out, the server is closing), which are not worth a log line.
var errEndOfConn = errors.New("connection ended")

// frame is one request's bytes and what they hold of the budget.
type frame struct {
	buf     []byte
	charged int64
	recycle *[]byte // non-nil: return buf to requestBufs once handled
}

// readFrame reads one size-prefixed request. The idle timeout covers the
// wait for a frame to start; once its size has arrived the whole frame
// must arrive within RequestReadTimeout.
func (c *Conn) readFrame(br *bufio.Reader) (frame, error) {
	s := c.srv
	var idle time.Time
	if s.cfg.IdleTimeout > 0 {
		idle = time.Now().Add(s.cfg.IdleTimeout)
	}
	authenticating := c.authenticating()
	if authenticating && (idle.IsZero() || c.authDeadline.Before(idle)) {
		idle = c.authDeadline
	}
	if !c.setReadDeadline(idle) {
		return frame{}, errEndOfConn
	}
	var sizeBuf [4]byte
	if _, err := io.ReadFull(br, sizeBuf[:]); err != nil {
		return frame{}, fmt.Errorf("%w: %v", errEndOfConn, err)
	}
	size := int32(binary.BigEndian.Uint32(sizeBuf[:]))
	if size < 8 || size > s.cfg.MaxRequestBytes {
		return frame{}, fmt.Errorf("request frame size %d out of bounds (socket.request.max.bytes %d)", size, s.cfg.MaxRequestBytes)
	}
	if authenticating && size > s.cfg.MaxSaslReceive {
		return frame{}, fmt.Errorf("request frame size %d before authentication (sasl.server.max.receive.size %d)", size, s.cfg.MaxSaslReceive)
	}
	deadline := time.Now().Add(s.cfg.RequestReadTimeout)
	if authenticating && c.authDeadline.Before(deadline) {
		deadline = c.authDeadline
	}
	if !c.setReadDeadline(deadline) {
		return frame{}, errEndOfConn
	}
	var f frame
	var into []byte
	if size >= recycleMin && len(s.cfg.RecycledKeys) > 0 {
		if k, err := br.Peek(2); err == nil && slices.Contains(s.cfg.RecycledKeys, int16(binary.BigEndian.Uint16(k))) {
			if f.recycle, _ = requestBufs.Get().(*[]byte); f.recycle == nil {
				f.recycle = new([]byte)
			}
			into = (*f.recycle)[:0]
		}
	}
	var err error
	if f.buf, f.charged, err = c.fill(br, into, int(size), deadline); err != nil {
		if s.ctx.Err() != nil {
			err = fmt.Errorf("%w: %v", errEndOfConn, err)
		}
		return frame{}, fmt.Errorf("reading a %d-byte request (socket.request.read.timeout.ms %d): %w",
			size, s.cfg.RequestReadTimeout.Milliseconds(), err)
	}
	return f, nil
}

// firstChunk is the most a frame's buffer holds before that many bytes
// of it have arrived.
const firstChunk = 64 << 10

// fill reads a size-byte frame body into buf's capacity, growing it (each
// step doubling, capped by size) only as bytes arrive, and charging each
// step to the budget first. A peer that declares a large frame and sends
// little thus holds little memory, and all connections together hold at
// most queued.max.request.bytes: a step that does not fit waits (the
// connection is not read meanwhile) until bytes are released or the
// frame's deadline passes. It returns the frame and the bytes charged.
func (c *Conn) fill(r io.Reader, buf []byte, size int, deadline time.Time) ([]byte, int64, error) {
	b := c.srv.budget
	var charged int64
	for len(buf) < size {
		next := min(size, max(firstChunk, 2*len(buf)))
		if err := b.acquire(int64(next)-charged, deadline, c.srv.ctx.Done()); err != nil {
			b.release(charged)
			return nil, 0, err
		}
		charged = int64(next)
		if cap(buf) < next {
			buf = append(make([]byte, 0, next), buf...)
		}
		n, err := io.ReadFull(r, buf[len(buf):next])
		buf = buf[:len(buf)+n]
		if err != nil {
			b.release(charged)
			return nil, 0, err
		}
	}
	return buf, charged, nil
}

// setReadDeadline sets the read deadline unless the server is closing
// (Close's own deadline must not be overwritten); zero clears it.
func (c *Conn) setReadDeadline(t time.Time) bool {
	c.nc.SetReadDeadline(t)
	// Close ran between the caller's last check and the deadline.
	return c.srv.ctx.Err() == nil
}

// decode parses the request header and body. A returned Request with a nil
// Msg means "ApiVersions at an unknown version" (answered by fallback).
func (c *Conn) decode(buf []byte) (*Request, Header, error) {
	var hdr Header
	hdr.APIKey = int16(binary.BigEndian.Uint16(buf[0:]))
	hdr.APIVersion = int16(binary.BigEndian.Uint16(buf[2:]))
	hdr.CorrelationID = int32(binary.BigEndian.Uint32(buf[4:]))
	rest := buf[8:]
	if len(rest) < 2 {
		return nil, hdr, errors.New("truncated header")
	}
	idLen := int16(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if idLen > 0 {
		if int(idLen) > len(rest) {
			return nil, hdr, errors.New("truncated client id")
		}
		hdr.ClientID = string(rest[:idLen])
		rest = rest[idLen:]
	} else if idLen < -1 {
		return nil, hdr, fmt.Errorf("invalid client id length %d", idLen)
	}

	lo, hi, ok := c.srv.handler.Versions(hdr.APIKey)
	if !ok {
		return nil, hdr, fmt.Errorf("unsupported api key %d", hdr.APIKey)
	}
	if hdr.APIVersion < lo || hdr.APIVersion > hi {
		if hdr.APIKey == 18 {
			return &Request{Header: hdr, Conn: c}, hdr, nil
		}
		return nil, hdr, fmt.Errorf("unsupported version %d of %s (served: %d-%d)",
			hdr.APIVersion, kmsg.NameForKey(hdr.APIKey), lo, hi)
	}
	msg := kmsg.RequestForKey(hdr.APIKey)
	msg.SetVersion(hdr.APIVersion)
	if msg.IsFlexible() {
		var err error
		if rest, err = skipTags(rest); err != nil {
			return nil, hdr, err
		}
	}
	// Before kmsg allocates: counts the body cannot hold are refused, and
	// what decoding will allocate is charged to the request budget like
	// the frame's bytes, since counts that do fit still amplify (a 1-byte
	// element can decode to a 100-byte struct). Twice: the answer mirrors
	// the request's arrays (an entry per topic and partition asked for)
	// and lives as long.
	cost, err := wire.DecodeCost(hdr.APIKey, hdr.APIVersion, rest)
	if err != nil {
		return nil, hdr, err
	}
	cost *= 2
	if cost > int64(c.srv.cfg.MaxRequestBytes) {
		return nil, hdr, fmt.Errorf("decoding %s v%d would allocate %d bytes, over socket.request.max.bytes %d",
			kmsg.NameForKey(hdr.APIKey), hdr.APIVersion, cost, c.srv.cfg.MaxRequestBytes)
	}
	req := &Request{Msg: msg, Header: hdr, Conn: c, ReceivedBytes: len(buf) + 4}
	if err := c.srv.budget.acquire(cost, time.Now().Add(c.srv.cfg.RequestReadTimeout), c.srv.ctx.Done()); err != nil {
		return nil, hdr, fmt.Errorf("waiting for %d bytes of queued.max.request.bytes to decode %s: %w", cost, kmsg.NameForKey(hdr.APIKey), err)
	}
	req.decodeCharge = cost
	if err := msg.ReadFrom(rest); err != nil {
		return req, hdr, fmt.Errorf("decoding %s v%d: %w", kmsg.NameForKey(hdr.APIKey), hdr.APIVersion, err)
	}
	return req, hdr, nil
}

// skipTags skips a tagged-field section (unsigned varint count, then
// key/size/bytes triples).
func skipTags(b []byte) ([]byte, error) {
	n, b, err := uvarint(b)
	if err != nil {
		return nil, err
	}
	for i := uint64(0); i < n; i++ {
		if _, b, err = uvarint(b); err != nil {
			return nil, err
		}
		var size uint64
		if size, b, err = uvarint(b); err != nil {
			return nil, err
		}
		if size > uint64(len(b)) {
			return nil, errors.New("truncated tagged field")
		}
		b = b[size:]
	}
	return b, nil
}

func uvarint(b []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, errors.New("bad varint in header")
	}
	return v, b[n:], nil
}

func (c *Conn) apiVersionsFallback() kmsg.Response {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	resp.ErrorCode = 35 // UNSUPPORTED_VERSION
	for key := int16(0); key <= kmsg.MaxKey; key++ {
		if lo, hi, ok := c.srv.handler.Versions(key); ok {
			k := kmsg.NewApiVersionsResponseApiKey()
			k.ApiKey, k.MinVersion, k.MaxVersion = key, lo, hi
			resp.ApiKeys = append(resp.ApiKeys, k)
		}
	}
	return resp
}

// safeHandle turns a handler panic into an error so one bad request closes
// one connection instead of the broker.
func (c *Conn) safeHandle(req *Request) (reply Reply, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return c.srv.handler.Handle(c.ctx, req), nil
}

// safeWait is safeHandle for deferred responses.
func (c *Conn) safeWait(w func() kmsg.Response) (resp kmsg.Response, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return w(), nil
}

// writeLoop answers requests in arrival order: it waits for deferred
// replies, encodes each response only when its turn comes (so at most one
// large response per connection is in memory) and releases the request's
// bytes once its reply is done.
func (c *Conn) writeLoop(queue <-chan pending, done chan<- struct{}) {
	defer close(done)
	s := c.srv
	var out []byte
	broken := false
	// fail ends the connection after a failed write.
	fail := func(err error) {
		// A deadline is worth a line; a peer that already hung up
		// (its reader ended and closed the socket) is routine.
		if s.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
			s.log.Warn("closing connection: writing a response", "remote", c.remote,
				"socket.response.write.timeout.ms", s.cfg.WriteTimeout.Milliseconds(), "err", err)
		}
		broken = true
		c.abort()
	}
	for p := range queue {
		resp := p.reply.Response
		if p.reply.Wait != nil && len(out) > 0 && !broken {
			// Answers already collected leave before a wait for an
			// fsync: held back, they kept the client's in-flight
			// requests occupied until the last one's fsync, so a
			// producer pipelining five acks=all requests got all five
			// answers at once and the broker idled until it refilled.
			if err := c.write(out); err != nil {
				fail(err)
			}
			out = out[:0]
		}
		if p.reply.Wait != nil {
			var err error
			if resp, err = c.safeWait(p.reply.Wait); err != nil {
				s.log.Error("closing connection: handler panicked", "remote", c.remote, "api_key", p.hdr.APIKey, "err", err)
				broken = true
				c.abort()
			}
		}
		s.budget.release(p.charged)
		s.metrics.ObserveRequest(p.hdr.APIKey, time.Since(p.start), false)
		streamed, _ := resp.(Streamed)
		if broken {
			if streamed != nil {
				streamed.Release()
			}
			out = nil
			continue
		}
		var err error
		switch {
		case streamed != nil:
			// Sent now, with whatever pipelined answers precede it.
			err = c.writeStreamed(out, p, streamed)
			streamed.Release()
		case resp != nil:
			out = appendResponse(out, p, resp)
		case p.raw != nil:
			out = binary.BigEndian.AppendUint32(out, uint32(len(p.raw)))
			out = append(out, p.raw...)
		}
		if streamed == nil {
			if len(out) == 0 || len(queue) > 0 && len(out) < flushAt {
				continue // pipelined responses leave in one write
			}
			err = c.write(out)
		}
		if err != nil {
			fail(err)
		}
		out = out[:0]
		if cap(out) > flushAt {
			out = nil // do not pin a large fetch response between requests
		}
	}
}

// flushAt is how many encoded bytes the writer collects from pipelined
// responses before writing them; also the most it keeps between writes.
const flushAt = 64 << 10

// appendResponse appends resp as a size-prefixed response frame.
func appendResponse(out []byte, p pending, resp kmsg.Response) []byte {
	resp.SetVersion(p.version)
	at := len(out)
	out = append(out, 0, 0, 0, 0)
	out = binary.BigEndian.AppendUint32(out, uint32(p.hdr.CorrelationID))
	if p.flex {
		out = append(out, 0) // empty response header tags
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out[at:], uint32(len(out)-at-4))
	return out
}

// write sends b within WriteTimeout: a client that does not read its
// responses loses the connection instead of pinning them.
func (c *Conn) write(b []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	_, err := c.nc.Write(b)
	return err
}
