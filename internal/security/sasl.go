package security

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"

	"github.com/xdg-go/scram"
)

// SASL mechanism names, as clients send them in SaslHandshake.
const (
	MechPlain       = "PLAIN"
	MechScramSHA256 = "SCRAM-SHA-256"
	MechScramSHA512 = "SCRAM-SHA-512"
)

// DefaultMechanisms is this broker's sasl.enabled.mechanisms default.
// Kafka's is GSSAPI, which this broker does not implement; SCRAM is the
// mechanism that never sends a password.
const DefaultMechanisms = MechScramSHA512 + "," + MechScramSHA256

// SCRAM iteration bounds Kafka enforces on stored credentials; outside
// them AlterUserScramCredentials answers UNACCEPTABLE_CREDENTIAL.
const (
	MinScramIterations = 4096
	MaxScramIterations = 16384
)

// ScramMechanism is a SCRAM mechanism's number in the KIP-554 APIs.
func ScramMechanism(name string) (int8, bool) {
	switch name {
	case MechScramSHA256:
		return 1, true
	case MechScramSHA512:
		return 2, true
	}
	return 0, false
}

// ScramMechanismName is the inverse of ScramMechanism.
func ScramMechanismName(m int8) (string, bool) {
	switch m {
	case 1:
		return MechScramSHA256, true
	case 2:
		return MechScramSHA512, true
	}
	return "", false
}

func scramHash(mech string) (func() hash.Hash, bool) {
	switch mech {
	case MechScramSHA256:
		return sha256.New, true
	case MechScramSHA512:
		return sha512.New, true
	}
	return nil, false
}

// ScramCredential is what the broker stores for one user and mechanism
// (RFC 5802): never the password.
type ScramCredential struct {
	Salt       []byte
	Iterations int
	StoredKey  []byte
	ServerKey  []byte
}

// CredentialFromSaltedPassword derives the stored keys from a salted
// password (what AlterUserScramCredentials carries).
func CredentialFromSaltedPassword(mech string, salt, salted []byte, iterations int) (ScramCredential, error) {
	h, ok := scramHash(mech)
	if !ok {
		return ScramCredential{}, fmt.Errorf("unsupported SCRAM mechanism %q", mech)
	}
	if err := checkIterations(iterations); err != nil {
		return ScramCredential{}, err
	}
	if len(salt) == 0 || len(salted) == 0 {
		return ScramCredential{}, errors.New("salt and salted password must not be empty")
	}
	clientKey := hmacOf(h, salted, "Client Key")
	stored := h()
	stored.Write(clientKey)
	return ScramCredential{Salt: bytes.Clone(salt), Iterations: iterations,
		StoredKey: stored.Sum(nil), ServerKey: hmacOf(h, salted, "Server Key")}, nil
}

func checkIterations(n int) error {
	if n < MinScramIterations || n > MaxScramIterations {
		return fmt.Errorf("iterations %d is outside %d..%d", n, MinScramIterations, MaxScramIterations)
	}
	return nil
}

func hmacOf(h func() hash.Hash, key []byte, msg string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// saltedPassword is PBKDF2 over the password's UTF-8 bytes, as Kafka's
// ScramFormatter computes it (no SASLprep).
func saltedPassword(h func() hash.Hash, password string, salt []byte, iterations int) ([]byte, error) {
	return pbkdf2.Key(h, password, salt, iterations, h().Size())
}

// NewScramCredential makes a credential for password with a fresh random
// salt.
func NewScramCredential(mech, password string, iterations int) (ScramCredential, error) {
	h, ok := scramHash(mech)
	if !ok {
		return ScramCredential{}, fmt.Errorf("unsupported SCRAM mechanism %q", mech)
	}
	if err := checkIterations(iterations); err != nil {
		return ScramCredential{}, err
	}
	salt := make([]byte, 32)
	rand.Read(salt)
	salted, err := saltedPassword(h, password, salt, iterations)
	if err != nil {
		return ScramCredential{}, err
	}
	return CredentialFromSaltedPassword(mech, salt, salted, iterations)
}

// CheckPassword reports whether password is the one cred was made from,
// comparing derived keys in constant time.
func CheckPassword(mech string, cred ScramCredential, password string) bool {
	h, ok := scramHash(mech)
	if !ok || checkIterations(cred.Iterations) != nil || len(cred.Salt) == 0 {
		return false
	}
	salted, err := saltedPassword(h, password, cred.Salt, cred.Iterations)
	if err != nil {
		return false
	}
	c, err := CredentialFromSaltedPassword(mech, cred.Salt, salted, cred.Iterations)
	return err == nil && hmac.Equal(c.StoredKey, cred.StoredKey)
}

// Lookup finds a user's stored credential for a SCRAM mechanism.
type Lookup func(user, mech string) (ScramCredential, bool)

// ErrAuthentication is the failure a client is told about: which of user
// or password was wrong is not revealed.
var ErrAuthentication = errors.New("invalid credentials")

// Exchange is one SASL authentication in progress on a connection.
type Exchange interface {
	// Step consumes the client's next token and returns the server's
	// answer. done is true once the client is authenticated; an error
	// means it is not (the connection is then refused).
	Step(token []byte) (challenge []byte, done bool, err error)
	// User is the authenticated user name once done.
	User() string
}

// NewExchange starts an exchange for mech (which the caller has checked
// is enabled).
func NewExchange(mech string, lookup Lookup) (Exchange, error) {
	switch mech {
	case MechPlain:
		return &plainExchange{lookup: lookup}, nil
	case MechScramSHA256, MechScramSHA512:
		return newScramExchange(mech, lookup)
	}
	return nil, fmt.Errorf("unsupported SASL mechanism %q", mech)
}

// MaxPlainField bounds each field of a PLAIN message (RFC 4616 allows 255
// UTF-8 characters, at most 4 bytes each).
const MaxPlainField = 1020

// ParsePlain splits a PLAIN message (RFC 4616): [authzid] NUL authcid NUL
// passwd.
func ParsePlain(msg []byte) (authzid, user, password string, err error) {
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 {
		return "", "", "", errors.New("PLAIN message must be authzid NUL user NUL password")
	}
	for _, p := range parts {
		if len(p) > MaxPlainField {
			return "", "", "", errors.New("PLAIN field too long")
		}
	}
	if len(parts[1]) == 0 || len(parts[2]) == 0 {
		return "", "", "", errors.New("PLAIN user and password must not be empty")
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), nil
}

type plainExchange struct {
	lookup Lookup
	user   string
	done   bool
}

func (p *plainExchange) Step(token []byte) ([]byte, bool, error) {
	if p.done {
		return nil, false, errors.New("PLAIN exchange already complete")
	}
	p.done = true
	authz, user, pw, err := ParsePlain(token)
	if err != nil {
		return nil, false, err
	}
	if authz != "" && authz != user {
		return nil, false, errors.New("authorization id must be empty or match the user")
	}
	// One user database: any SCRAM credential of the user checks the
	// password (SHA-512 first).
	for _, mech := range []string{MechScramSHA512, MechScramSHA256} {
		if cred, ok := p.lookup(user, mech); ok {
			if CheckPassword(mech, cred, pw) {
				p.user = user
				return nil, true, nil
			}
			return nil, false, ErrAuthentication
		}
	}
	return nil, false, ErrAuthentication
}

func (p *plainExchange) User() string { return p.user }

type scramExchange struct {
	mech string
	conv *scram.ServerConversation
}

// MaxScramMessage bounds a SCRAM client message: a user name, a nonce and a
// base64 proof fit in far less.
const MaxScramMessage = 4096

func newScramExchange(mech string, lookup Lookup) (*scramExchange, error) {
	h, _ := scramHash(mech)
	srv, err := scram.HashGeneratorFcn(h).NewServer(func(user string) (scram.StoredCredentials, error) {
		c, ok := lookup(user, mech)
		if !ok {
			return scram.StoredCredentials{}, ErrAuthentication
		}
		return scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(c.Salt), Iters: c.Iterations},
			StoredKey: c.StoredKey, ServerKey: c.ServerKey}, nil
	})
	if err != nil {
		return nil, err
	}
	return &scramExchange{mech: mech, conv: srv.WithNonceGenerator(alnumNonce).NewConversation()}, nil
}

// alnumNonce is the server's half of a SCRAM nonce: 32 random letters and
// digits, alphanumeric as Kafka's are (xdg-go's default is base64).
func alnumNonce() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 32)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func (s *scramExchange) Step(token []byte) ([]byte, bool, error) {
	if s.conv.Done() {
		return nil, false, errors.New("SCRAM exchange already complete")
	}
	if len(token) > MaxScramMessage {
		return nil, false, fmt.Errorf("SCRAM message of %d bytes (at most %d)", len(token), MaxScramMessage)
	}
	out, err := s.conv.Step(string(token))
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrAuthentication, err)
	}
	if !s.conv.Done() {
		return []byte(out), false, nil
	}
	if !s.conv.Valid() {
		return nil, false, ErrAuthentication
	}
	if a := s.conv.AuthzID(); a != "" && a != s.conv.Username() {
		return nil, false, errors.New("authorization id must be empty or match the user")
	}
	return []byte(out), true, nil
}

func (s *scramExchange) User() string {
	if s.conv.Valid() {
		return s.conv.Username()
	}
	return ""
}
