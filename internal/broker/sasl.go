package broker

// The broker's side of authentication: the SASL mechanisms enabled
// (sasl.enabled.mechanisms), the SCRAM credential store in the catalog
// that PLAIN and SCRAM both check, and the audit of every authentication
// (a rate-limited log line per failure, metrics per mechanism). The
// exchange's place in a connection's life is internal/server/auth.go.

import (
	"fmt"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/security"
	"github.com/exactly/exactly/internal/server"
)

// Bounds on the credential store: every change rewrites the catalog.
const (
	// MaxScramUsers is how many users may hold SCRAM credentials.
	MaxScramUsers = 10000
	// MaxScramUserLen bounds a user name in bytes.
	MaxScramUserLen = 1024
)

// Authenticator is the broker's server.Authenticator.
func (b *Broker) Authenticator() server.Authenticator { return &authenticator{b: b} }

type authenticator struct{ b *Broker }

func (a *authenticator) Mechanisms() []string {
	v, _ := a.b.catalog.BrokerConfig("sasl.enabled.mechanisms")
	return cluster.SplitList(v)
}

func (a *authenticator) Begin(_ *server.Conn, mech string) (security.Exchange, error) {
	return security.NewExchange(mech, a.b.scramLookup)
}

func (a *authenticator) Finished(c *server.Conn, mech, user string, err error) {
	label := mech
	switch mech {
	case security.MechPlain, security.MechScramSHA256, security.MechScramSHA512, "SSL":
	default:
		label = "other" // a client's string must not become a label value
	}
	if err == nil {
		a.b.metrics.authSuccesses.WithLabelValues(label).Inc()
		a.b.log.Debug("authenticated", "remote", c.RemoteAddr(), "listener", c.Listener(), "mechanism", label, "user", user)
		return
	}
	a.b.metrics.authFailures.WithLabelValues(label).Inc()
	if n, ok := a.b.authAudit.Allow(time.Now()); ok {
		a.b.log.Warn("authentication failed", "remote", c.RemoteAddr(), "listener", c.Listener(),
			"mechanism", label, "err", err, "suppressed_since_last", n)
	}
}

// AuthenticateHTTP checks an HTTP basic-auth login (the metrics endpoint)
// against the user's SCRAM credential — the same user database as SASL —
// and counts and audits it like a SASL login, under mechanism BASIC. A
// user the endpoint does not admit (permitted false) always fails.
func (b *Broker) AuthenticateHTTP(remote, user, password string, permitted bool) bool {
	if permitted && security.VerifyUser(b.scramLookup, user, password) {
		b.metrics.authSuccesses.WithLabelValues("BASIC").Inc()
		return true
	}
	b.metrics.authFailures.WithLabelValues("BASIC").Inc()
	if n, ok := b.authAudit.Allow(time.Now()); ok {
		b.log.Warn("authentication failed", "remote", remote, "listener", "metrics",
			"mechanism", "BASIC", "err", security.ErrAuthentication, "suppressed_since_last", n)
	}
	return false
}

// scramLookup is the credential lookup of PLAIN and SCRAM exchanges.
func (b *Broker) scramLookup(user, mech string) (security.ScramCredential, bool) {
	c, ok := b.catalog.ScramCredential(user, mech)
	if !ok {
		return security.ScramCredential{}, false
	}
	return security.ScramCredential{Salt: c.Salt, Iterations: c.Iterations, StoredKey: c.StoredKey, ServerKey: c.ServerKey}, true
}

// ScramOutcome is what UpsertScramPassword did.
type ScramOutcome string

// UpsertScramPassword outcomes.
const (
	ScramCreated   ScramOutcome = "created"
	ScramReplaced  ScramOutcome = "replaced"
	ScramUnchanged ScramOutcome = "unchanged"
)

// UpsertScramPassword stores a credential for user and mechanism made
// from password, unless the stored one already matches the password and
// iterations. It is how `exactly serve --add-scram` creates the first
// users.
func (b *Broker) UpsertScramPassword(user, mech, password string, iterations int) (ScramOutcome, error) {
	if user == "" || len(user) > MaxScramUserLen {
		return "", fmt.Errorf("user name must be 1..%d bytes", MaxScramUserLen)
	}
	b.adminMu.Lock()
	defer b.adminMu.Unlock()
	outcome := ScramCreated
	if old, ok := b.scramLookup(user, mech); ok {
		if old.Iterations == iterations && security.CheckPassword(mech, old, password) {
			return ScramUnchanged, nil
		}
		outcome = ScramReplaced
	}
	cred, err := security.NewScramCredential(mech, password, iterations)
	if err != nil {
		return "", err
	}
	err = b.alterScramLocked(func(m map[string]map[string]cluster.ScramCredential) error {
		if m[user] == nil {
			if len(m) >= MaxScramUsers {
				return fmt.Errorf("this broker stores SCRAM credentials for at most %d users", MaxScramUsers)
			}
			m[user] = map[string]cluster.ScramCredential{}
		}
		m[user][mech] = toStored(cred)
		return nil
	})
	if err != nil {
		return "", err
	}
	return outcome, nil
}

func toStored(c security.ScramCredential) cluster.ScramCredential {
	return cluster.ScramCredential{Salt: c.Salt, Iterations: c.Iterations, StoredKey: c.StoredKey, ServerKey: c.ServerKey}
}

// alterScramLocked applies change to a copy of the stored credentials and
// stores the result. adminMu must be held.
func (b *Broker) alterScramLocked(change func(map[string]map[string]cluster.ScramCredential) error) error {
	m := map[string]map[string]cluster.ScramCredential{}
	for u, mechs := range b.catalog.ScramCredentials() {
		m[u] = map[string]cluster.ScramCredential{}
		for k, v := range mechs {
			m[u][k] = v
		}
	}
	if err := change(m); err != nil {
		return err
	}
	for u, mechs := range m {
		if len(mechs) == 0 {
			delete(m, u)
		}
	}
	return b.catalog.SetScramCredentials(m)
}
