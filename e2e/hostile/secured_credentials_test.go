package hostile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Attacks with what a SASL_SSL listener is asked to check: oversized and
// malformed SASL tokens, and wrong passwords by the thousand.

// closedByBroker waits up to 5 s for the broker to close c, and says what
// happened instead: an answer, or nothing.
func closedByBroker(c *testenv.RawConn) error {
	c.NC.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.NC.Read(make([]byte, 1))
	var ne net.Error
	switch {
	case n > 0:
		return errors.New("the broker answered; want the connection closed without an answer")
	case errors.As(err, &ne) && ne.Timeout():
		return errors.New("the connection is still open after 5 s; want it closed at once")
	}
	return nil
}

// refusedAndClosed checks that a SaslAuthenticate was answered
// SASL_AUTHENTICATION_FAILED and the connection then closed.
func refusedAndClosed(c *testenv.RawConn, token []byte) error {
	if _, err := c.SaslAuthenticate(token); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		return fmt.Errorf("answered %v, want SASL_AUTHENTICATION_FAILED", err)
	}
	return closedByBroker(c)
}

// badSASLToken is one malformed or oversized token and what the broker
// must do with it.
type badSASLToken struct {
	name      string
	mechanism string
	legacy    bool                           // SaslHandshake v0: raw tokens follow
	send      func(c *testenv.RawConn) error // sends the token, checks the outcome
}

// badSASLTokens are the tokens of attackBadSASLTokens, each after a
// SaslHandshake on a fresh TLS connection.
var badSASLTokens = []badSASLToken{
	{"a SaslAuthenticate frame declaring 100 MiB", "SCRAM-SHA-512", false, func(c *testenv.RawConn) error {
		frame := binary.BigEndian.AppendUint32(nil, 100<<20)
		frame = binary.BigEndian.AppendUint16(frame, 36)
		frame = binary.BigEndian.AppendUint16(frame, 2)
		c.NC.Write(binary.BigEndian.AppendUint32(frame, 1))
		return closedByBroker(c)
	}},
	{"a SaslAuthenticate whose token claims 1 GiB", "SCRAM-SHA-512", false, func(c *testenv.RawConn) error {
		c.NC.Write(rawRequest(36, 2, true, append(binary.AppendUvarint(nil, 1<<30+1), "short"...)))
		return closedByBroker(c)
	}},
	{"a 256 KiB SCRAM message", "SCRAM-SHA-512", false, func(c *testenv.RawConn) error {
		return refusedAndClosed(c, append([]byte("n,,n=mallory,r="), bytes.Repeat([]byte("x"), 256<<10)...))
	}},
	{"a SCRAM client-first message that is not one", "SCRAM-SHA-512", false, func(c *testenv.RawConn) error {
		return refusedAndClosed(c, []byte("\xff\x00garbage,,,=r"))
	}},
	{"a PLAIN message with a 2 KiB user name", "PLAIN", false, func(c *testenv.RawConn) error {
		return refusedAndClosed(c, []byte("\x00"+strings.Repeat("u", 2048)+"\x00pw"))
	}},
	{"a legacy token declaring 100 MiB", "PLAIN", true, func(c *testenv.RawConn) error {
		c.NC.Write(binary.BigEndian.AppendUint32(nil, 100<<20))
		return closedByBroker(c)
	}},
	{"a legacy PLAIN token without separators", "PLAIN", true, func(c *testenv.RawConn) error {
		c.NC.Write(append(binary.BigEndian.AppendUint32(nil, 8), "garbage!"...))
		return closedByBroker(c)
	}},
}

// attackBadSASLTokens sends every one of badSASLTokens each times, each
// on its own TLS connection and attackers at once, and checks the broker
// refuses each before allocating what it declares: closed without an
// answer where the size or encoding is wrong, answered
// SASL_AUTHENTICATION_FAILED and closed where the mechanism refuses the
// content.
func attackBadSASLTokens(t *testing.T, tg target, each int) {
	t.Helper()
	onWorkers(t, each*len(badSASLTokens), func(i int) error {
		bad := badSASLTokens[i%len(badSASLTokens)]
		c, err := testenv.DialConn(tg.addr, tg.tls)
		if err != nil {
			return fmt.Errorf("%s: %v", bad.name, err)
		}
		defer c.NC.Close()
		v := int16(1)
		if bad.legacy {
			v = 0
		}
		if err := c.SaslHandshake(bad.mechanism, v); err != nil {
			return fmt.Errorf("%s: SaslHandshake: %v", bad.name, err)
		}
		if err := bad.send(c); err != nil {
			return fmt.Errorf("%s: %v", bad.name, err)
		}
		return nil
	})
}

// logBound is the most lines a server.LogLimiter lets through in d.
func logBound(d time.Duration) int {
	return server.LogBurst * (int(d/time.Second) + 2)
}

// TestBadSASLTokensAreRefusedBeforeAllocating: oversized and malformed
// SASL tokens close their connections at once (with
// SASL_AUTHENTICATION_FAILED where the framing allowed an answer), the
// broker allocates nothing near what they declare, and each costs at
// most one log line, rate limited: the lines an unauthenticated peer
// causes come through at most server.LogBurst a second.
func TestBadSASLTokensAreRefusedBeforeAllocating(t *testing.T) {
	const each = 30
	_, logs, attacker, admin := startSecuredBroker(t, nil)
	canary(t, admin, 5)
	heapBefore := heapInUse()
	start := time.Now()
	allocated := allocatedDuring(func() { attackBadSASLTokens(t, attacker, each) })
	took := time.Since(start)
	// The two 100 MiB declarations alone would be 6 GiB if allocated;
	// what is allocated is the 256 KiB tokens (sent, then read: 15 MiB)
	// and the TLS handshakes of both sides (about 100 KiB each).
	t.Logf("%d bad tokens in %v: %d MiB allocated by the test and the broker", each*len(badSASLTokens), took.Round(time.Millisecond), allocated>>20)
	if allocated > 256<<20 {
		t.Errorf("%d MiB allocated during the attack; the tokens sent were 8 MiB", allocated>>20)
	}
	if grew := int64(heapInUse()) - int64(heapBefore); grew > 32<<20 {
		t.Errorf("heap in use grew by %d MiB", grew>>20)
	}
	closing, failed := logs.count("closing connection"), logs.count("authentication failed")
	t.Logf("log lines: %d closing connection, %d authentication failed", closing, failed)
	if bound := logBound(took); closing > bound || failed > bound {
		t.Errorf("%d closing-connection and %d authentication-failed lines in %v; at most %d each may pass the rate limit",
			closing, failed, took.Round(time.Millisecond), bound)
	}
	if closing == 0 || failed == 0 {
		t.Errorf("%d closing-connection and %d authentication-failed lines: the operator must see some", closing, failed)
	}
	canary(t, admin, 20)
}

// wrongPasswordsOf are the credentials a wrong-password storm tries for
// user u: a wrong SCRAM password, a wrong PLAIN password, the right
// password with a mechanism u has no credential for, and users that do
// not exist.
func wrongPasswordsOf(u testenv.SASLUser) []testenv.SASLUser {
	out := []testenv.SASLUser{
		{Mechanism: u.Mechanism, User: u.User, Password: "wrong"},
		{Mechanism: "PLAIN", User: u.User, Password: "wrong"},
		{Mechanism: "SCRAM-SHA-256", User: u.User, Password: u.Password},
	}
	for i := range 4 {
		out = append(out, testenv.SASLUser{Mechanism: u.Mechanism, User: fmt.Sprintf("nobody-%d", i), Password: "x"})
	}
	return out
}

// attackWrongPasswords tries wrong credentials for tg's user on attackers
// connections at once, a new TLS connection each, for d; each must be
// refused with SASL_AUTHENTICATION_FAILED. Meanwhile tg's user, with its
// password, must keep authenticating (every 200 ms). It returns the
// refused attempts and the successful ones.
func attackWrongPasswords(t *testing.T, tg target, d time.Duration) (refused, legit int) {
	t.Helper()
	wrong := wrongPasswordsOf(tg.user)
	end := time.Now().Add(d)
	var mu sync.Mutex
	var legitErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for time.Now().Before(end) {
			c, err := testenv.DialSASL(tg.addr, tg.tls, tg.user)
			if err != nil {
				mu.Lock()
				legitErr = err
				mu.Unlock()
				return
			}
			c.NC.Close()
			legit++
			time.Sleep(200 * time.Millisecond)
		}
	}()
	var count sync.Mutex
	onWorkers(t, attackers, func(int) error {
		for i := 0; time.Now().Before(end); i++ {
			u := wrong[i%len(wrong)]
			c, err := testenv.DialSASL(tg.addr, tg.tls, u)
			if err == nil {
				c.NC.Close()
				return fmt.Errorf("%s as %s with %q: authenticated", u.Mechanism, u.User, u.Password)
			}
			if !errors.Is(err, kerr.SaslAuthenticationFailed) {
				return fmt.Errorf("%s as %s: %v, want SASL_AUTHENTICATION_FAILED", u.Mechanism, u.User, err)
			}
			count.Lock()
			refused++
			count.Unlock()
		}
		return nil
	})
	<-done
	if legitErr != nil {
		t.Errorf("the right password during the storm: %v", legitErr)
	}
	return refused, legit
}

// TestWrongPasswordStormIsBounded: thousands of failed authentications
// (wrong passwords, unknown users, a mechanism without a credential) are
// each refused and counted, logged at most server.LogBurst lines a
// second, leave no memory or goroutines behind, and do not keep the
// right password from authenticating meanwhile.
func TestWrongPasswordStormIsBounded(t *testing.T) {
	b, logs, attacker, admin := startSecuredBroker(t, nil)
	canary(t, admin, 5)
	goroutines := runtime.NumGoroutine()
	heapBefore := heapInUse()
	before := logs.count("authentication failed")
	start := time.Now()
	refused, legit := attackWrongPasswords(t, attacker, 4*time.Second)
	took := time.Since(start)
	var counted float64
	for _, m := range []string{"SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"} {
		counted += metric(t, b, fmt.Sprintf(`kafka_server_authentication_failures_total{mechanism=%q}`, m))
	}
	lines := logs.count("authentication failed") - before
	t.Logf("%d attempts refused in %v, %v counted, %d logged; %d right-password authentications meanwhile",
		refused, took.Round(time.Millisecond), counted, lines, legit)
	if counted != float64(refused) {
		t.Errorf("%v authentication failures counted, want the %d refused", counted, refused)
	}
	if bound := logBound(took); lines > bound || lines == 0 {
		t.Errorf("%d authentication-failed lines for %d failures in %v, want 1 to %d", lines, refused, took.Round(time.Millisecond), bound)
	}
	if legit == 0 {
		t.Error("the right password never authenticated during the storm")
	}
	if grew := int64(heapInUse()) - int64(heapBefore); grew > 32<<20 {
		t.Errorf("heap in use grew by %d MiB after %d failed authentications", grew>>20, refused)
	}
	eventually(t, 10*time.Second, "goroutines back to where they were", func() bool {
		return runtime.NumGoroutine() <= goroutines+10
	})
	// The attacker, with its password, is still served.
	tc := attacker.dial(t)
	if r := tc.Request(kmsg.NewPtrApiVersionsRequest(), 3).(*kmsg.ApiVersionsResponse); r.ErrorCode != 0 {
		t.Fatalf("ApiVersions after the storm: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	canary(t, admin, 20)
}

// securedAttacks are the attacks on a SASL_SSL listener's authentication
// that TestEveryAttackInTurnOverSASLSSL runs after every attack of the
// suite. The authentication deadline there is the default 30 s, longer
// than these attacks last: the abandoned connections are closed by their
// client as the attack ends (the deadline's own tests are
// TestSlowAndAbandoned...).
var securedAttacks = []attack{
	{"slow/abandoned TLS handshakes", func(t *testing.T, tg target) { closeAll(attackTLSHandshakes(t, tg, 100, 2*time.Second)) }},
	{"slow/abandoned SASL exchanges", func(t *testing.T, tg target) {
		conns, _ := attackSASLExchanges(t, tg, 40, 2*time.Second)
		closeAll(conns)
	}},
	{"bad SASL tokens", func(t *testing.T, tg target) { attackBadSASLTokens(t, tg, 20) }},
	{"wrong-password storm", func(t *testing.T, tg target) { attackWrongPasswords(t, tg, 3*time.Second) }},
}
