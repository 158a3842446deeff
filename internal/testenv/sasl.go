package testenv

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/xdg-go/scram"
)

// SASLUser is who a raw connection authenticates as: a mechanism the
// listener enables (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and credentials.
type SASLUser struct {
	Mechanism, User, Password string
}

// DialRawSASL opens a raw connection to a SASL listener and authenticates
// as u before returning it (a refusal fails the test): over TLS with cfg
// (a SASL_SSL listener), or plain TCP when cfg is nil (SASL_PLAINTEXT).
// What the test sends next reaches the broker past authentication.
func DialRawSASL(t testing.TB, addr string, cfg *tls.Config, u SASLUser) *RawConn {
	t.Helper()
	c, err := DialSASL(addr, cfg, u)
	if err != nil {
		t.Fatalf("authenticating to %s as %s (%s): %v", addr, u.User, u.Mechanism, err)
	}
	return c.Bind(t)
}

// DialSASL is DialRawSASL returning its error instead of failing a test,
// for goroutines other than the test's (an authentication storm); the
// connection is closed on error, else by the caller. Use only NC and the
// methods that return errors (they report to no test).
func DialSASL(addr string, cfg *tls.Config, u SASLUser) (*RawConn, error) {
	c, err := DialConn(addr, cfg)
	if err != nil {
		return nil, err
	}
	if err := c.Authenticate(u); err != nil {
		c.NC.Close()
		return nil, err
	}
	return c, nil
}

// DialConn connects to addr over TLS with cfg (nil: plain TCP), the TLS
// handshake done, without a test: for goroutines other than the test's
// and for connections the broker may refuse (beyond a connection limit).
// The caller closes it. Use only NC and the methods that return errors.
func DialConn(addr string, cfg *tls.Config) (*RawConn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	var nc net.Conn
	var err error
	if cfg != nil {
		nc, err = tls.DialWithDialer(d, "tcp", addr, cfg)
	} else {
		nc, err = d.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	return &RawConn{NC: nc}, nil
}

// Bind makes c, from DialConn or DialSASL, report to t like a RawConn
// from DialRaw (and be closed when t ends), once the test's own goroutine
// has it.
func (c *RawConn) Bind(t testing.TB) *RawConn {
	c.t = t
	t.Cleanup(func() { c.NC.Close() })
	return c
}

// Authenticate runs a SASL exchange on c as u: SaslHandshake v1, then
// SaslAuthenticate v2 requests until the broker accepts or refuses (its
// error code as a kerr error; the broker closes the connection after a
// refusal). It reports to no test, so any goroutine may call it.
func (c *RawConn) Authenticate(u SASLUser) error {
	if err := c.SaslHandshake(u.Mechanism, 1); err != nil {
		return err
	}
	switch u.Mechanism {
	case "PLAIN":
		_, err := c.SaslAuthenticate([]byte("\x00" + u.User + "\x00" + u.Password))
		return err
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		conv := scramClient(u).NewConversation()
		msg, err := conv.Step("")
		for err == nil {
			var answer []byte
			if answer, err = c.SaslAuthenticate([]byte(msg)); err != nil {
				return err
			}
			if msg, err = conv.Step(string(answer)); conv.Done() {
				if err != nil {
					return fmt.Errorf("the broker's final SCRAM message: %w", err)
				}
				return nil
			}
		}
		return err
	}
	return fmt.Errorf("no client for SASL mechanism %q", u.Mechanism)
}

// SaslHandshake sends SaslHandshake at version v (0: the legacy framing
// follows, 1: SaslAuthenticate requests) naming mechanism, and checks the
// answer; it reports to no test.
func (c *RawConn) SaslHandshake(mechanism string, v int16) error {
	req := kmsg.NewPtrSASLHandshakeRequest()
	req.Mechanism = mechanism
	resp, err := c.roundTrip(req, v)
	if err != nil {
		return err
	}
	return kerr.ErrorForCode(resp.(*kmsg.SASLHandshakeResponse).ErrorCode)
}

// SaslAuthenticate sends one SaslAuthenticate v2 carrying token and
// returns the broker's answer token, or its error code as a kerr error;
// it reports to no test.
func (c *RawConn) SaslAuthenticate(token []byte) ([]byte, error) {
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.SASLAuthBytes = token
	resp, err := c.roundTrip(req, 2)
	if err != nil {
		return nil, err
	}
	r := resp.(*kmsg.SASLAuthenticateResponse)
	if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
		return nil, err
	}
	return r.SASLAuthBytes, nil
}

// roundTrip is Request without a test: each direction within 10 s.
func (c *RawConn) roundTrip(req kmsg.Request, v int16) (kmsg.Response, error) {
	c.NC.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.NC.SetDeadline(time.Time{})
	if _, err := c.NC.Write(Frame(req, v, 42)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(c.NC, size[:]); err != nil {
		return nil, fmt.Errorf("reading the %s answer: %w", kmsg.NameForKey(req.Key()), err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c.NC, body); err != nil {
		return nil, err
	}
	if len(body) < 5 || binary.BigEndian.Uint32(body) != 42 {
		return nil, errors.New("answer with another correlation id")
	}
	resp := req.ResponseKind()
	resp.SetVersion(v)
	body = body[4:]
	if resp.IsFlexible() {
		body = body[1:] // empty header tags
	}
	return resp, resp.ReadFrom(body)
}

// scramClients caches one xdg-go client per user: a client keeps the
// keys it derived (4096+ PBKDF2 rounds) for a salt, so repeated
// authentications cost the test little.
var scramClients sync.Map

// scramClient is u's cached SCRAM client.
func scramClient(u SASLUser) *scram.Client {
	if c, ok := scramClients.Load(u); ok {
		return c.(*scram.Client)
	}
	hash := scram.SHA256
	if u.Mechanism == "SCRAM-SHA-512" {
		hash = scram.SHA512
	}
	c, err := hash.NewClientUnprepped(u.User, u.Password, "")
	if err != nil {
		panic(err) // only for a nil hash
	}
	kept, _ := scramClients.LoadOrStore(u, c)
	return kept.(*scram.Client)
}
