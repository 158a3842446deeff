package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TLSCerts is a throwaway PKI for a test: a CA, a server certificate for
// 127.0.0.1 and localhost, and client certificates on demand, written as
// PEM files into a temporary directory.
type TLSCerts struct {
	Dir string
	// CAFile is the CA certificate (a truststore for either side).
	CAFile string
	// ServerFile holds the server's certificate chain and private key in
	// one file (ssl.keystore.location with ssl.keystore.type=PEM);
	// ServerCertFile and ServerKeyFile hold them apart.
	ServerFile, ServerCertFile, ServerKeyFile string
	// CA is the CA certificate.
	CA *x509.Certificate

	caKey *ecdsa.PrivateKey
}

// ClientCert is a client certificate and key as files and as a
// tls.Certificate.
type ClientCert struct {
	CertFile, KeyFile string
	Cert              tls.Certificate
}

// NewTLSCerts makes a CA and a server certificate signed by it.
func NewTLSCerts(t testing.TB) *TLSCerts {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newCA(t, "exactly test CA")
	c := &TLSCerts{Dir: dir, CA: ca, caKey: caKey, CAFile: filepath.Join(dir, "ca.pem"), ServerFile: filepath.Join(dir, "server.pem"),
		ServerCertFile: filepath.Join(dir, "server.crt"), ServerKeyFile: filepath.Join(dir, "server.key")}
	writePEM(t, c.CAFile, pemCert(ca.Raw))
	der, key := c.issue(t, pkix.Name{CommonName: "localhost"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), true)
	writePEM(t, c.ServerFile, append(pemCert(der), pemKey(t, key)...))
	writePEM(t, c.ServerCertFile, pemCert(der))
	writePEM(t, c.ServerKeyFile, pemKey(t, key))
	return c
}

// RenewServer writes a new server certificate (fresh key and serial) over
// ServerFile and returns it, for reload tests.
func (c *TLSCerts) RenewServer(t testing.TB) *x509.Certificate {
	t.Helper()
	der, key := c.issue(t, pkix.Name{CommonName: "localhost", Organization: []string{"renewed"}}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), true)
	writePEM(t, c.ServerFile, append(pemCert(der), pemKey(t, key)...))
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Client issues a client certificate with the given subject, valid now,
// signed by the CA.
func (c *TLSCerts) Client(t testing.TB, subject pkix.Name) ClientCert {
	t.Helper()
	return c.client(t, subject, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

// ExpiredClient issues a client certificate that expired an hour ago.
func (c *TLSCerts) ExpiredClient(t testing.TB, subject pkix.Name) ClientCert {
	t.Helper()
	return c.client(t, subject, time.Now().Add(-48*time.Hour), time.Now().Add(-time.Hour))
}

// UntrustedClient issues a client certificate signed by another CA.
func (c *TLSCerts) UntrustedClient(t testing.TB, subject pkix.Name) ClientCert {
	t.Helper()
	ca, key := newCA(t, "some other CA")
	other := &TLSCerts{Dir: c.Dir, CA: ca, caKey: key}
	return other.client(t, subject, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

func (c *TLSCerts) client(t testing.TB, subject pkix.Name, from, to time.Time) ClientCert {
	der, key := c.issue(t, subject, from, to, false)
	base := filepath.Join(c.Dir, "client-"+big.NewInt(time.Now().UnixNano()).Text(36))
	out := ClientCert{CertFile: base + ".pem", KeyFile: base + ".key"}
	writePEM(t, out.CertFile, pemCert(der))
	writePEM(t, out.KeyFile, pemKey(t, key))
	var err error
	if out.Cert, err = tls.LoadX509KeyPair(out.CertFile, out.KeyFile); err != nil {
		t.Fatal(err)
	}
	return out
}

// ClientConfig is a client tls.Config trusting the CA, presenting certs.
func (c *TLSCerts) ClientConfig(certs ...ClientCert) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(c.CA)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	for _, cc := range certs {
		cfg.Certificates = append(cfg.Certificates, cc.Cert)
	}
	return cfg
}

func newCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

func (c *TLSCerts) issue(t testing.TB, subject pkix.Name, from, to time.Time, server bool) ([]byte, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: subject, NotBefore: from, NotAfter: to,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.CA, &key.PublicKey, c.caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(t testing.TB, key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func writePEM(t testing.TB, path string, data []byte) {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// DialRawTLS is DialRaw over TLS: the handshake is done (or the test
// fails) before it returns.
func DialRawTLS(t testing.TB, addr string, cfg *tls.Config) *RawConn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	nc, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &RawConn{t: t, NC: nc}
}

// SendToken writes a legacy SASL token (after SaslHandshake v0): a 4-byte
// length and the bytes, no Kafka header.
func (c *RawConn) SendToken(token []byte) {
	c.t.Helper()
	c.Send(append(binary.BigEndian.AppendUint32(nil, uint32(len(token))), token...))
}
