package server

// Authentication on a connection: the TLS handshake of SSL and SASL_SSL
// listeners, and the SASL exchange of SASL_PLAINTEXT and SASL_SSL ones.
//
// The SASL exchange runs here, before requests reach the Handler, because
// it decides whether they may: until a connection has authenticated only
// ApiVersions, SaslHandshake and SaslAuthenticate are served, and any
// other request closes it, as Kafka does (its authenticator raises
// IllegalSaslStateException). SaslHandshake v0 switches the connection to
// the legacy framing older clients (kafka-python 2.0.2) use: raw SASL
// tokens behind a 4-byte length, no Kafka header, answered the same way.
// The whole authentication, TLS handshake included, must finish within
// Config.AuthTimeout of accept; until then frames are capped at
// Config.MaxSaslReceive. The mechanisms themselves (PLAIN, SCRAM) and the
// credential store are the Authenticator's (internal/broker/sasl.go).

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/exactly/exactly/internal/security"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Authenticator runs SASL exchanges and audits authentications.
type Authenticator interface {
	// Mechanisms are the enabled SASL mechanisms (sasl.enabled.mechanisms).
	Mechanisms() []string
	// Begin starts an exchange for an enabled mechanism.
	Begin(c *Conn, mechanism string) (security.Exchange, error)
	// Finished reports an authentication's outcome: the mechanism ("SSL"
	// for a TLS handshake), the user on success, the reason on failure.
	Finished(c *Conn, mechanism, user string, err error)
}

// saslPhase is where a SASL connection is in its exchange.
type saslPhase int

const (
	phaseHandshake    saslPhase = iota // ApiVersions or SaslHandshake expected
	phaseAuthenticate                  // after SaslHandshake v1: SaslAuthenticate frames
	phaseLegacy                        // after SaslHandshake v0: raw tokens
	phaseDone                          // authenticated
)

// saslConn is a SASL connection's authentication state.
type saslConn struct {
	phase     saslPhase
	mechanism string
	exchange  security.Exchange
	// reauth is set while an authenticated connection re-authenticates
	// (KIP-368): the user must stay the same.
	reauth bool
	// expiry is when the session ends (connections.max.reauth.ms); zero:
	// never.
	expiry time.Time
}

// next says what the reader does after a request.
type next int

const (
	carryOn    next = iota // not a SASL matter: the Handler serves it
	answered               // answered by the exchange; go on reading
	closeAfter             // answered; close once the answer is written
)

// errIllegalSasl refuses a request the exchange does not allow now.
type errIllegalSasl struct{ what string }

func (e errIllegalSasl) Error() string { return "ILLEGAL_SASL_STATE: " + e.what }

// authenticating reports whether the connection has yet to finish its
// TLS handshake or SASL exchange.
func (c *Conn) authenticating() bool {
	if c.sasl != nil {
		return c.sasl.phase != phaseDone && !c.sasl.reauth
	}
	return false
}

// handshake completes a TLS connection's handshake within the
// authentication deadline and derives its principal from a client
// certificate; false closes the connection.
func (c *Conn) handshake() bool {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return true
	}
	auth := c.srv.cfg.Authenticator
	tc.SetDeadline(c.authDeadline)
	err := tc.HandshakeContext(c.ctx)
	tc.SetDeadline(time.Time{})
	if err != nil {
		if c.srv.ctx.Err() == nil && auth != nil {
			auth.Finished(c, "SSL", "", fmt.Errorf("TLS handshake: %w", err))
		}
		return false
	}
	name, ok, err := c.listener.TLS.Principal(tc.ConnectionState())
	if err != nil {
		if auth != nil {
			auth.Finished(c, "SSL", "", err)
		}
		return false
	}
	if ok && c.sasl == nil {
		// On SASL_SSL the SASL exchange names the user instead.
		c.SetUser(name)
		if auth != nil {
			auth.Finished(c, "SSL", name, nil)
		}
	}
	if c.sasl == nil {
		c.authDeadline = time.Time{}
	}
	return true
}

// logAuthClose logs why an unauthenticated exchange closed the
// connection. Failed credentials were audited by the Authenticator
// already; protocol violations are logged at debug level only, since any
// peer can cause them at will.
func (c *Conn) logAuthClose(err error) {
	c.srv.log.Debug("closing connection: SASL", "remote", c.remote, "listener", c.listener.Name, "err", err)
}

// warnClosing logs why the connection is being closed for what its peer
// sent (a frame too large or too slow, a malformed request). Before the
// connection has authenticated, the lines of all such connections
// together are rate limited (LogLimiter, with a suppressed_since_last
// count): an unauthenticated peer must not be able to flood the log by
// reconnecting. Authenticated peers are logged line for line.
func (c *Conn) warnClosing(msg string, args ...any) {
	args = append([]any{"remote", c.remote, "listener", c.listener.Name}, args...)
	if c.authenticating() {
		n, ok := c.srv.unauthLog.Allow(time.Now())
		if !ok {
			return
		}
		args = append(args, "authenticated", false, "suppressed_since_last", n)
	}
	c.srv.log.Warn(msg, args...)
}

// intercept serves the SASL requests of a SASL listener's connection and
// refuses what the exchange does not allow; an error closes the
// connection at once.
func (s *saslConn) intercept(c *Conn, req *Request) (Reply, next, error) {
	key := req.Header.APIKey
	if s.phase == phaseDone && !s.expiry.IsZero() && time.Now().After(s.expiry) && key != 17 {
		return Reply{}, 0, errIllegalSasl{"session expired (connections.max.reauth.ms) without re-authentication"}
	}
	switch key {
	case 17:
		return s.handshake(c, req)
	case 36:
		return s.authenticate(c, req)
	case 18:
		if s.phase == phaseHandshake || s.phase == phaseDone {
			return Reply{}, carryOn, nil
		}
	default:
		if s.phase == phaseDone {
			return Reply{}, carryOn, nil
		}
	}
	return Reply{}, 0, errIllegalSasl{fmt.Sprintf("%s request during SASL authentication", kmsg.NameForKey(key))}
}

// handshake serves SaslHandshake: the client names its mechanism.
func (s *saslConn) handshake(c *Conn, req *Request) (Reply, next, error) {
	switch {
	case s.phase == phaseHandshake:
	case s.phase == phaseDone && req.Header.APIVersion >= 1:
		s.reauth = true // KIP-368 re-authentication
	default:
		return Reply{}, 0, errIllegalSasl{"unexpected SaslHandshake"}
	}
	hreq := req.Msg.(*kmsg.SASLHandshakeRequest)
	resp := hreq.ResponseKind().(*kmsg.SASLHandshakeResponse)
	auth := c.srv.cfg.Authenticator
	resp.SupportedMechanisms = auth.Mechanisms()
	if !slices.Contains(resp.SupportedMechanisms, hreq.Mechanism) {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		auth.Finished(c, hreq.Mechanism, "", fmt.Errorf("unsupported SASL mechanism %.64q", hreq.Mechanism))
		return Reply{Response: resp}, closeAfter, nil
	}
	ex, err := auth.Begin(c, hreq.Mechanism)
	if err != nil {
		return Reply{}, 0, err
	}
	s.mechanism, s.exchange = hreq.Mechanism, ex
	if req.Header.APIVersion == 0 {
		s.phase = phaseLegacy
	} else {
		s.phase = phaseAuthenticate
	}
	return Reply{Response: resp}, answered, nil
}

// authenticate serves SaslAuthenticate: one step of the exchange.
func (s *saslConn) authenticate(c *Conn, req *Request) (Reply, next, error) {
	if s.phase != phaseAuthenticate {
		return Reply{}, 0, errIllegalSasl{"SaslAuthenticate without a SaslHandshake v1"}
	}
	areq := req.Msg.(*kmsg.SASLAuthenticateRequest)
	resp := areq.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	challenge, done, err := s.step(c, areq.SASLAuthBytes)
	if err != nil {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := fmt.Sprintf("Authentication failed during authentication due to invalid credentials with SASL mechanism %s", s.mechanism)
		resp.ErrorMessage = &msg
		return Reply{Response: resp}, closeAfter, nil
	}
	resp.SASLAuthBytes = challenge
	if done {
		if d := c.srv.cfg.MaxReauth; d > 0 {
			resp.SessionLifetimeMillis = d.Milliseconds()
		}
	}
	return Reply{Response: resp}, answered, nil
}

// step runs one exchange step; on completion it records the user and
// starts the session. A failure is audited and returned.
func (s *saslConn) step(c *Conn, token []byte) ([]byte, bool, error) {
	auth := c.srv.cfg.Authenticator
	challenge, done, err := s.exchange.Step(token)
	if err == nil && done && s.reauth && s.exchange.User() != c.User() {
		err = errors.New("re-authentication may not change the user")
	}
	if err != nil {
		auth.Finished(c, s.mechanism, "", err)
		return nil, false, err
	}
	if !done {
		return challenge, false, nil
	}
	user := s.exchange.User()
	c.SetUser(user)
	auth.Finished(c, s.mechanism, user, nil)
	s.phase, s.reauth, s.exchange = phaseDone, false, nil
	c.authDeadline = time.Time{}
	if d := c.srv.cfg.MaxReauth; d > 0 {
		s.expiry = time.Now().Add(d)
	}
	return challenge, true, nil
}

// legacyToken reads one raw SASL token (legacy framing, after
// SaslHandshake v0) and answers it with a raw token. A failed exchange
// closes the connection without an answer: the framing has no way to
// carry an error, and Kafka closes too.
func (c *Conn) legacyToken(br *bufio.Reader) (pending, next, error) {
	s := c.srv
	if !c.setReadDeadline(c.authDeadline) {
		return pending{}, 0, errEndOfConn
	}
	token, charged, err := readLegacyToken(br, s.cfg.MaxSaslReceive, func(size int) ([]byte, int64, error) {
		return c.fill(br, nil, size, c.authDeadline)
	})
	if err != nil {
		if !errors.Is(err, errEndOfConn) {
			c.warnClosing("closing connection: legacy SASL token", "err", err)
		}
		return pending{}, 0, err
	}
	defer s.budget.release(charged)
	start := time.Now()
	challenge, _, err := c.sasl.step(c, token)
	if err != nil {
		return pending{}, 0, err
	}
	if challenge == nil {
		challenge = []byte{} // an empty token is still answered
	}
	return pending{hdr: Header{APIKey: 36}, raw: challenge, start: start}, answered, nil
}

// readLegacyToken reads a 4-byte length (at most max) and, through fill,
// that many bytes.
func readLegacyToken(r io.Reader, max int32, fill func(int) ([]byte, int64, error)) ([]byte, int64, error) {
	var sizeBuf [4]byte
	if _, err := io.ReadFull(r, sizeBuf[:]); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", errEndOfConn, err)
	}
	size := int32(binary.BigEndian.Uint32(sizeBuf[:]))
	if size < 0 || size > max {
		return nil, 0, fmt.Errorf("legacy SASL token of %d bytes (sasl.server.max.receive.size %d)", size, max)
	}
	if size == 0 {
		return []byte{}, 0, nil
	}
	return fill(int(size))
}
