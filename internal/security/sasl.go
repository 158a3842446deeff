package security

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"

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
	if !VerifyUser(p.lookup, user, pw) {
		return nil, false, ErrAuthentication
	}
	p.user = user
	return nil, true, nil
}

// VerifyUser reports whether password is user's, checked against the
// user's SCRAM credential (SHA-512 first): the one user database that
// PLAIN and every other password check share, so no password is ever
// stored anywhere.
func VerifyUser(lookup Lookup, user, password string) bool {
	for _, mech := range []string{MechScramSHA512, MechScramSHA256} {
		if cred, ok := lookup(user, mech); ok {
			return CheckPassword(mech, cred, password)
		}
	}
	return false
}

func (p *plainExchange) User() string { return p.user }

// scramExchange is one SCRAM authentication. xdg-go/scram parses the
// client-first message and builds the server-first one; the client-final
// message is verified here, because librdkafka (kcat, confluent-kafka)
// sends its nonce as its own nonce followed by the whole server nonce
// (which already starts with its own), and Kafka accepts a final nonce
// that ends with the server's: the proof is still over what the client
// sent, so nothing is weakened, and xdg-go insists on equality.
type scramExchange struct {
	mech   string
	lookup Lookup
	conv   *scram.ServerConversation
	// Kept from the first round for the final one.
	gs2Header, c1Bare, s1, nonce string
	cred                         ScramCredential
	valid                        bool
	done                         bool
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
	return &scramExchange{mech: mech, lookup: lookup, conv: srv.WithNonceGenerator(alnumNonce).NewConversation()}, nil
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
	if s.done {
		return nil, false, errors.New("SCRAM exchange already complete")
	}
	if len(token) > MaxScramMessage {
		return nil, false, fmt.Errorf("SCRAM message of %d bytes (at most %d)", len(token), MaxScramMessage)
	}
	if s.s1 == "" {
		return s.first(string(token))
	}
	s.done = true
	out, err := s.final(string(token))
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrAuthentication, err)
	}
	return []byte(out), true, nil
}

// first answers the client-first message (through xdg-go/scram) and keeps
// what the final round needs.
func (s *scramExchange) first(c1 string) ([]byte, bool, error) {
	out, err := s.conv.Step(c1)
	if err != nil || s.conv.Done() {
		s.done = true
		return nil, false, fmt.Errorf("%w: %v", ErrAuthentication, err)
	}
	if a := s.conv.AuthzID(); a != "" && a != s.conv.Username() {
		s.done = true
		return nil, false, errors.New("authorization id must be empty or match the user")
	}
	// The gs2 header is everything up to its second comma ("n,," or
	// "n,a=user,"); xdg-go accepted the message, so both exist.
	first := strings.IndexByte(c1, ',')
	second := first + 1 + strings.IndexByte(c1[first+1:], ',')
	cred, ok := s.lookup(s.conv.Username(), s.mech)
	if !ok {
		s.done = true
		return nil, false, ErrAuthentication
	}
	s.gs2Header, s.c1Bare, s.s1, s.cred = c1[:second+1], c1[second+1:], out, cred
	s.nonce = strings.TrimPrefix(strings.SplitN(out, ",", 2)[0], "r=")
	return []byte(out), false, nil
}

// final verifies the client-final message (RFC 5802 section 3) and
// returns the server-final one.
func (s *scramExchange) final(c2 string) (string, error) {
	wop, proofB64, ok := strings.Cut(c2, ",p=")
	if !ok || strings.Contains(proofB64, ",") {
		return "", errors.New("client-final message without a proof at its end")
	}
	var cbind, nonce string
	for _, attr := range strings.Split(wop, ",") {
		switch {
		case strings.HasPrefix(attr, "c="):
			cbind = attr[2:]
		case strings.HasPrefix(attr, "r="):
			nonce = attr[2:]
		}
	}
	if got, err := base64.StdEncoding.DecodeString(cbind); err != nil || string(got) != s.gs2Header {
		return "", errors.New("channel binding does not match the gs2 header")
	}
	if nonce != s.nonce && !strings.HasSuffix(nonce, s.nonce) {
		return "", errors.New("nonce received does not end with the nonce sent")
	}
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	h, _ := scramHash(s.mech)
	if err != nil || len(proof) != h().Size() {
		return "", errors.New("malformed client proof")
	}
	authMsg := []byte(s.c1Bare + "," + s.s1 + "," + wop)
	mac := hmac.New(h, s.cred.StoredKey)
	mac.Write(authMsg)
	clientKey := mac.Sum(nil)
	for i := range clientKey {
		clientKey[i] ^= proof[i]
	}
	sum := h()
	sum.Write(clientKey)
	if !hmac.Equal(sum.Sum(nil), s.cred.StoredKey) {
		return "", errors.New("invalid client proof")
	}
	s.valid = true
	mac = hmac.New(h, s.cred.ServerKey)
	mac.Write(authMsg)
	return "v=" + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

func (s *scramExchange) User() string {
	if s.valid {
		return s.conv.Username()
	}
	return ""
}
