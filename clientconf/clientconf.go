// Package clientconf turns a client's connection settings — TLS files,
// SASL mechanism and credentials, bootstrap servers — into franz-go
// options. The settings come from command-line flags and from a client
// properties file in either librdkafka's or the Java client's dialect (the
// --command-config file of kafka-*.sh and kcat -F), so one file drives our
// tools and everyone else's.
//
// Settings is plain data (JSON-encodable without its password) so that a
// parent process can hand it to worker processes; the password travels
// separately, in the PasswordEnv variable of the child's environment,
// never on a command line.
package clientconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// PasswordEnv is the environment variable a SASL password may come from,
// so that it never has to appear on a command line.
const PasswordEnv = "EXACTLY_SASL_PASSWORD"

// The SASL mechanisms the clients speak.
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// Mechanisms lists the SASL mechanisms in the order help texts show them.
var Mechanisms = []string{Plain, ScramSHA256, ScramSHA512}

// Settings is one client's connection configuration.
type Settings struct {
	// Bootstrap are the seed brokers (host:port); empty leaves the choice
	// to the caller.
	Bootstrap []string `json:"bootstrap,omitempty"`
	// ClientID overrides the caller's client id when set.
	ClientID string `json:"client_id,omitempty"`
	// TLS dials every broker with TLS 1.2 or later.
	TLS bool `json:"tls,omitempty"`
	// CAFile is a PEM bundle of the CAs to trust instead of the system's.
	CAFile string `json:"ca_file,omitempty"`
	// CertFile and KeyFile are the client's PEM certificate chain and
	// private key for mutual TLS (they may name the same file).
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// ServerName is the name the brokers' certificates must carry; empty
	// means each broker's dialed host.
	ServerName string `json:"server_name,omitempty"`
	// SkipHostnameCheck still verifies the chain but not the name in it
	// (ssl.endpoint.identification.algorithm=none).
	SkipHostnameCheck bool `json:"skip_hostname_check,omitempty"`
	// Mechanism is the SASL mechanism (PLAIN, SCRAM-SHA-256,
	// SCRAM-SHA-512); empty means no SASL.
	Mechanism string `json:"mechanism,omitempty"`
	// User is the SASL user name.
	User string `json:"user,omitempty"`
	// Password is the SASL password. It is never encoded: see PasswordEnv.
	Password string `json:"-"`
}

// Protocol names the settings' security protocol as Kafka's
// security.protocol does.
func (s Settings) Protocol() string {
	switch {
	case s.TLS && s.Mechanism != "":
		return "SASL_SSL"
	case s.TLS:
		return "SSL"
	case s.Mechanism != "":
		return "SASL_PLAINTEXT"
	}
	return "PLAINTEXT"
}

// Secure reports whether the settings ask for TLS or SASL.
func (s Settings) Secure() bool { return s.TLS || s.Mechanism != "" }

// Validate checks that the settings are complete and consistent, before
// anything is dialed.
func (s Settings) Validate() error {
	if !s.TLS && (s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != "") {
		return errors.New("TLS files or a server name are given but TLS is off (security.protocol PLAINTEXT or SASL_PLAINTEXT, or --tls=false)")
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		return errors.New("a client certificate needs both the certificate and the key (--tls-cert and --tls-key, ssl.certificate.location and ssl.key.location, or ssl.keystore.location)")
	}
	if s.Mechanism == "" {
		if s.User != "" || s.Password != "" {
			return errors.New("a SASL user or password is given but no SASL mechanism (--sasl-mechanism or sasl.mechanism)")
		}
		return nil
	}
	if _, err := NormalizeMechanism(s.Mechanism); err != nil {
		return err
	}
	if s.User == "" {
		return fmt.Errorf("SASL %s needs a user: --sasl-user, or sasl.username (or sasl.jaas.config) in --command-config", s.Mechanism)
	}
	if s.Password == "" {
		return fmt.Errorf("SASL %s needs a password: --sasl-password-file, the %s environment variable, or sasl.password (or sasl.jaas.config) in --command-config", s.Mechanism, PasswordEnv)
	}
	return nil
}

// NormalizeMechanism returns the canonical name of a SASL mechanism given
// in any case, or an error naming the ones supported.
func NormalizeMechanism(m string) (string, error) {
	u := strings.ToUpper(strings.TrimSpace(m))
	for _, k := range Mechanisms {
		if u == k {
			return k, nil
		}
	}
	return "", fmt.Errorf("unsupported SASL mechanism %q: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", m)
}

// TLSConfig builds the TLS configuration, reading the PEM files now so
// that a missing or malformed file is reported before any dial. It returns
// nil when TLS is off.
func (s Settings) TLSConfig() (*tls.Config, error) {
	if !s.TLS {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.ServerName}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s holds no PEM certificate", s.CAFile)
		}
		c.RootCAs = pool
	}
	if s.CertFile != "" {
		cert, err := loadKeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if s.SkipHostnameCheck {
		// Go verifies chain and name together; verifying the chain by
		// hand is how to keep the first without the second.
		roots := c.RootCAs
		c.InsecureSkipVerify = true
		c.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, roots) }
	}
	return c, nil
}

// loadKeyPair reads a PEM certificate chain and private key; both may be
// the same file (a KIP-651 PEM keystore).
func loadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("reading the client certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("reading the client key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("client certificate %s / key %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// verifyChain checks the peer's chain against roots (nil: the system's)
// without checking the host name.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the broker sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
	return err
}

// SASLMechanism builds the SASL mechanism, nil when SASL is off.
func (s Settings) SASLMechanism() (sasl.Mechanism, error) {
	if s.Mechanism == "" {
		return nil, nil
	}
	m, err := NormalizeMechanism(s.Mechanism)
	if err != nil {
		return nil, err
	}
	switch m {
	case Plain:
		return plain.Auth{User: s.User, Pass: s.Password}.AsMechanism(), nil
	case ScramSHA256:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha256Mechanism(), nil
	default:
		return scram.Auth{User: s.User, Pass: s.Password}.AsSha512Mechanism(), nil
	}
}

// Opts validates the settings and returns the franz-go options for them:
// seed brokers and client id when set, TLS dialing, SASL. Callers append
// their own options after these.
func (s Settings) Opts() ([]kgo.Opt, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var opts []kgo.Opt
	if len(s.Bootstrap) > 0 {
		opts = append(opts, kgo.SeedBrokers(s.Bootstrap...))
	}
	if s.ClientID != "" {
		opts = append(opts, kgo.ClientID(s.ClientID))
	}
	tc, err := s.TLSConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	m, err := s.SASLMechanism()
	if err != nil {
		return nil, err
	}
	if m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// Env returns the environment entry that carries the password to a child
// process (nil without a password).
func (s Settings) Env() []string {
	if s.Password == "" {
		return nil
	}
	return []string{PasswordEnv + "=" + s.Password}
}

// WithEnvPassword fills in the password from PasswordEnv when SASL is on
// and no password is set: how a worker process receives it.
func (s Settings) WithEnvPassword() Settings {
	if s.Mechanism != "" && s.Password == "" {
		s.Password = os.Getenv(PasswordEnv)
	}
	return s
}
