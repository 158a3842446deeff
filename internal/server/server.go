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
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"time"

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

// Config holds listener limits.
type Config struct {
	// MaxRequestBytes is socket.request.max.bytes: larger frames close the
	// connection, as Kafka does.
	MaxRequestBytes int32
	// MaxInFlight bounds the deferred responses queued per connection.
	MaxInFlight int
	// IdleTimeout is connections.max.idle.ms.
	IdleTimeout time.Duration
	// RecycledKeys are API keys whose large requests (64 KiB and up) are
	// read into pooled buffers, reused as soon as Handle returns. Their
	// handlers must be done with the request's bytes by then, deferred
	// Wait included (decoded strings are copies; byte fields alias the
	// buffer). Produce is the case: its handler appends the batches
	// before returning, and its buffers are the bulk of the broker's
	// garbage.
	RecycledKeys []int16
}

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

	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[*Conn]struct{}
}

// Observer receives per-request measurements; nil is allowed.
type Observer interface {
	ObserveRequest(key int16, d time.Duration, failed bool)
}

// New returns a server that will serve handler on ln once Serve is called.
func New(ln net.Listener, cfg Config, handler Handler, logger *slog.Logger, obs Observer) *Server {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 32
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 100 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, handler: handler, log: logger, metrics: obs, ln: ln, ctx: ctx, cancel: cancel, conns: map[*Conn]struct{}{}}
}

// Addr is the listening address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve accepts connections until Close. It returns nil after Close.
func (s *Server) Serve() error {
	var delay time.Duration
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Transient accept failure (e.g. EMFILE): back off rather than spin.
				if delay == 0 {
					delay = 5 * time.Millisecond
				} else if delay < time.Second {
					delay *= 2
				}
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := &Conn{srv: s, nc: nc, remote: nc.RemoteAddr().String()}
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Close stops accepting, stops reading new requests, lets every connection
// write the responses of requests already read (so an appended batch is
// acknowledged rather than silently retried), then closes connections.
// Connections still busy after grace are closed forcibly.
func (s *Server) Close(grace time.Duration) {
	s.cancel()
	s.ln.Close()
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
	srv    *Server
	nc     net.Conn
	remote string
	mute   muteState // quota throttling (mute.go)
}

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() string { return c.remote }

// Close drops the connection, e.g. after a request Kafka answers by closing.
func (c *Conn) Close() { c.nc.Close() }

type pending struct {
	hdr     Header
	version int16 // response version; 0 for the ApiVersions fallback
	flex    bool
	reply   Reply
	start   time.Time
}

func (c *Conn) serve() {
	s := c.srv
	defer func() {
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	queue := make(chan pending, s.cfg.MaxInFlight)
	writerDone := make(chan struct{})
	go c.writeLoop(queue, writerDone)
	defer func() {
		close(queue)
		<-writerDone
	}()

	br := bufio.NewReaderSize(c.nc, 64<<10)
	var sizeBuf [4]byte
	for {
		if s.ctx.Err() != nil {
			return
		}
		if !c.waitUnmuted() { // a throttled client's next request waits (mute.go)
			return
		}
		if s.cfg.IdleTimeout > 0 {
			c.nc.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
			if s.ctx.Err() != nil { // Close ran between the check and the deadline
				return
			}
		}
		if _, err := io.ReadFull(br, sizeBuf[:]); err != nil {
			return
		}
		size := int32(binary.BigEndian.Uint32(sizeBuf[:]))
		if size < 8 || size > s.cfg.MaxRequestBytes {
			s.log.Warn("closing connection: request frame size out of bounds",
				"remote", c.remote, "size", size, "socket.request.max.bytes", s.cfg.MaxRequestBytes)
			return
		}
		var buf []byte
		var recycled *[]byte
		if size >= recycleMin && len(s.cfg.RecycledKeys) > 0 {
			if k, err := br.Peek(2); err == nil && slices.Contains(s.cfg.RecycledKeys, int16(binary.BigEndian.Uint16(k))) {
				recycled, _ = requestBufs.Get().(*[]byte)
				if recycled == nil || cap(*recycled) < int(size) {
					b := make([]byte, size)
					recycled = &b
				}
				buf = (*recycled)[:size]
			}
		}
		if buf == nil {
			buf = make([]byte, size)
		}
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		start := time.Now()
		req, hdr, err := c.decode(buf)
		if err != nil {
			s.log.Warn("closing connection: bad request", "remote", c.remote,
				"api_key", hdr.APIKey, "api_version", hdr.APIVersion, "client_id", hdr.ClientID, "err", err)
			if s.metrics != nil {
				s.metrics.ObserveRequest(hdr.APIKey, time.Since(start), true)
			}
			return
		}
		var reply Reply
		version := hdr.APIVersion
		if req.Msg == nil {
			version = 0
			// ApiVersions with a version we do not know: answer v0 with
			// UNSUPPORTED_VERSION and our ranges so the client can retry.
			reply = Reply{Response: c.apiVersionsFallback()}
		} else if reply, err = c.safeHandle(req); err != nil {
			s.log.Error("closing connection: handler panicked", "remote", c.remote,
				"api_key", hdr.APIKey, "api_version", hdr.APIVersion, "client_id", hdr.ClientID, "err", err)
			return
		}
		flex := req.Msg != nil && req.Msg.IsFlexible() && hdr.APIKey != 18
		if recycled != nil {
			requestBufs.Put(recycled)
		}
		select {
		case queue <- pending{hdr: hdr, version: version, flex: flex, reply: reply, start: start}:
		case <-s.ctx.Done():
			// Shutting down with a full queue: still answer this request.
			queue <- pending{hdr: hdr, version: version, flex: flex, reply: reply, start: start}
			return
		}
	}
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
	if err := wire.CheckCounts(hdr.APIKey, hdr.APIVersion, rest); err != nil {
		return nil, hdr, err // before kmsg allocates for counts the body cannot hold
	}
	if err := msg.ReadFrom(rest); err != nil {
		return nil, hdr, fmt.Errorf("decoding %s v%d: %w", kmsg.NameForKey(hdr.APIKey), hdr.APIVersion, err)
	}
	return &Request{Msg: msg, Header: hdr, Conn: c, ReceivedBytes: len(buf) + 4}, hdr, nil
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
	return c.srv.handler.Handle(c.srv.ctx, req), nil
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

func (c *Conn) writeLoop(queue <-chan pending, done chan<- struct{}) {
	defer close(done)
	s := c.srv
	bw := bufio.NewWriterSize(c.nc, 64<<10)
	var buf []byte
	broken := false
	for p := range queue {
		resp := p.reply.Response
		if p.reply.Wait != nil {
			var err error
			if resp, err = c.safeWait(p.reply.Wait); err != nil {
				s.log.Error("closing connection: handler panicked", "remote", c.remote, "api_key", p.hdr.APIKey, "err", err)
				broken = true
				c.nc.Close()
				continue
			}
		}
		if s.metrics != nil {
			s.metrics.ObserveRequest(p.hdr.APIKey, time.Since(p.start), false)
		}
		if resp == nil || broken {
			continue
		}
		resp.SetVersion(p.version)
		buf = append(buf[:0], 0, 0, 0, 0)
		buf = binary.BigEndian.AppendUint32(buf, uint32(p.hdr.CorrelationID))
		if p.flex {
			buf = append(buf, 0) // empty response header tags
		}
		buf = resp.AppendTo(buf)
		binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
		if _, err := bw.Write(buf); err != nil {
			broken = true
			c.nc.Close()
			continue
		}
		if len(queue) == 0 {
			if err := bw.Flush(); err != nil {
				broken = true
				c.nc.Close()
			}
		}
		if cap(buf) > 1<<20 {
			buf = nil // do not pin large fetch buffers between requests
		}
	}
}
