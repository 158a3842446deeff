package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Certs are PEM files of a throwaway PKI in a test's temporary directory:
// a CA, a server certificate for 127.0.0.1, ::1 and localhost, and a
// client certificate (CN=client), all ECDSA P-256 and valid for a day.
type Certs struct {
	// CA is the CA certificate (the clients' ssl.ca.location, the
	// server's ssl.truststore.location).
	CA string
	// ServerCert and ServerKey are the server's chain and key as separate
	// files; ServerPEM holds both (a KIP-651 ssl.keystore.location).
	ServerCert, ServerKey, ServerPEM string
	// ClientCert and ClientKey are the client's, ClientPEM both.
	ClientCert, ClientKey, ClientPEM string
	// ClientCN is the client certificate's common name.
	ClientCN string
}

// GenerateCerts writes a fresh CA, server and client certificate under
// t.TempDir().
func GenerateCerts(t testing.TB) Certs {
	t.Helper()
	dir := t.TempDir()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "exactly test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	c := Certs{CA: filepath.Join(dir, "ca.pem"), ClientCN: "client"}
	writePEM(t, c.CA, pemBlock("CERTIFICATE", caDER))

	issue := func(name string, serial int64, tmpl *x509.Certificate) (certPath, keyPath, both string) {
		key := newKey(t)
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM := append(pemBlock("CERTIFICATE", der), pemBlock("CERTIFICATE", caDER)...)
		keyPEM := pemBlock("PRIVATE KEY", keyDER)
		certPath = filepath.Join(dir, name+".crt")
		keyPath = filepath.Join(dir, name+".key")
		both = filepath.Join(dir, name+".pem")
		writePEM(t, certPath, certPEM)
		writePEM(t, keyPath, keyPEM)
		writePEM(t, both, append(append([]byte(nil), certPEM...), keyPEM...))
		return certPath, keyPath, both
	}
	c.ServerCert, c.ServerKey, c.ServerPEM = issue("server", 2, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	c.ClientCert, c.ClientKey, c.ClientPEM = issue("client", 3, &x509.Certificate{
		Subject:     pkix.Name{CommonName: c.ClientCN, Organization: []string{"exactly"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return c
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writePEM(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
