package hostile

import (
	"crypto/tls"
	"testing"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// target is a broker listener as the suite's clients reach it: every
// attack, the canary and the helpers dial through it, so one attack runs
// unchanged against a PLAINTEXT listener and against a SASL_SSL one
// (where its connections complete the TLS handshake and authenticate
// first, and so reach the code the attack aims at).
type target struct {
	addr string
	// tls is the client TLS config of a SASL_SSL listener; nil: plain TCP.
	tls *tls.Config
	// user is who connections authenticate as; zero: no SASL.
	user testenv.SASLUser
}

// plaintext is the target of a PLAINTEXT listener at addr.
func plaintext(addr string) target { return target{addr: addr} }

// secured reports whether the target is a TLS/SASL listener.
func (tg target) secured() bool { return tg.tls != nil || tg.user.Mechanism != "" }

// as is the same listener reached as another user.
func (tg target) as(u testenv.SASLUser) target {
	tg.user = u
	return tg
}

// dial opens a raw connection whose next bytes are requests the broker
// serves: on a SASL_SSL listener the TLS handshake and the SASL exchange
// are done first.
func (tg target) dial(t testing.TB) *testenv.RawConn {
	t.Helper()
	if !tg.secured() {
		return testenv.DialRaw(t, tg.addr)
	}
	return testenv.DialRawSASL(t, tg.addr, tg.tls, tg.user)
}

// opts are the client options that reach the listener as tg.user.
func (tg target) opts() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(tg.addr)}
	if tg.tls != nil {
		opts = append(opts, kgo.DialTLSConfig(tg.tls.Clone()))
	}
	if m := tg.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts
}

// mechanism is franz-go's client side of tg.user's mechanism, or nil.
func (tg target) mechanism() sasl.Mechanism {
	u := tg.user
	switch u.Mechanism {
	case "PLAIN":
		return plain.Auth{User: u.User, Pass: u.Password}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: u.User, Pass: u.Password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: u.User, Pass: u.Password}.AsSha512Mechanism()
	}
	return nil
}

// client is a franz-go client on the target with extra options, closed
// when the test ends.
func (tg target) client(t testing.TB, extra ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(tg.opts(), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// adminClient is a kadm client on the target, closed when the test ends.
func adminClient(t *testing.T, tg target) *kadm.Client {
	t.Helper()
	return kadm.NewClient(tg.client(t))
}
