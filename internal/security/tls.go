package security

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// TLSSettings are the broker's ssl.* keys (KIP-651's PEM form).
type TLSSettings struct {
	// KeystoreType is ssl.keystore.type; only PEM is supported.
	KeystoreType string
	// KeystoreLocation is ssl.keystore.location: one PEM file holding the
	// certificate chain (leaf first) and its unencrypted private key.
	KeystoreLocation string
	// TruststoreType is ssl.truststore.type; only PEM is supported.
	TruststoreType string
	// TruststoreLocation is ssl.truststore.location: PEM CA certificates
	// that client certificates must chain to.
	TruststoreLocation string
	// ClientAuth is ssl.client.auth: none, requested or required.
	ClientAuth string
	// PrincipalRules is ssl.principal.mapping.rules.
	PrincipalRules string
}

// TLS is a listener's TLS material. Reload swaps in freshly read files;
// connections accepted afterwards use them, established ones are not
// touched.
type TLS struct {
	settings TLSSettings
	rules    []PrincipalRule
	auth     tls.ClientAuthType
	cur      atomic.Pointer[tls.Config]
}

// NewTLS validates s and loads its files.
func NewTLS(s TLSSettings) (*TLS, error) {
	for key, typ := range map[string]string{"ssl.keystore.type": s.KeystoreType, "ssl.truststore.type": s.TruststoreType} {
		if typ != "" && !strings.EqualFold(typ, "PEM") {
			return nil, fmt.Errorf("%s=%s: only PEM files are supported (KIP-651)", key, typ)
		}
	}
	if s.KeystoreLocation == "" {
		return nil, errors.New("a TLS listener needs ssl.keystore.location (PEM: certificate chain and private key)")
	}
	t := &TLS{settings: s}
	switch strings.ToLower(s.ClientAuth) {
	case "", "none":
		t.auth = tls.NoClientCert
	case "requested":
		t.auth = tls.VerifyClientCertIfGiven
	case "required":
		t.auth = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("ssl.client.auth=%q: want none, requested or required", s.ClientAuth)
	}
	if t.auth != tls.NoClientCert && s.TruststoreLocation == "" {
		return nil, fmt.Errorf("ssl.client.auth=%s needs ssl.truststore.location (PEM CA bundle)", s.ClientAuth)
	}
	var err error
	if t.rules, err = ParsePrincipalRules(s.PrincipalRules); err != nil {
		return nil, err
	}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Reload reads the keystore and truststore files again. On any error the
// material in use is kept and the error returned.
func (t *TLS) Reload() error {
	data, err := os.ReadFile(t.settings.KeystoreLocation)
	if err != nil {
		return fmt.Errorf("ssl.keystore.location: %w", err)
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
			return fmt.Errorf("ssl.keystore.location %s: encrypted private keys are not supported; store the key unencrypted with restrictive file permissions", t.settings.KeystoreLocation)
		}
	}
	cert, err := tls.X509KeyPair(data, data)
	if err != nil {
		return fmt.Errorf("ssl.keystore.location %s: %w", t.settings.KeystoreLocation, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   t.auth,
	}
	if t.settings.TruststoreLocation != "" {
		ca, err := os.ReadFile(t.settings.TruststoreLocation)
		if err != nil {
			return fmt.Errorf("ssl.truststore.location: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return fmt.Errorf("ssl.truststore.location %s: no PEM certificate found", t.settings.TruststoreLocation)
		}
		cfg.ClientCAs = pool
	}
	t.cur.Store(cfg)
	return nil
}

// ServerConfig is the tls.Config for a new connection: it resolves the
// material current at the handshake, so a Reload applies to every
// connection accepted after it.
func (t *TLS) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.cur.Load(), nil
		},
	}
}

// Principal is the user name a verified client certificate maps to
// (ssl.principal.mapping.rules over its subject in RFC 2253 form); ok is
// false when the client sent no certificate.
func (t *TLS) Principal(st tls.ConnectionState) (name string, ok bool, err error) {
	if len(st.PeerCertificates) == 0 {
		return "", false, nil
	}
	name, err = MapPrincipal(t.rules, st.PeerCertificates[0].Subject.String())
	return name, err == nil, err
}
