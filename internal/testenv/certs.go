package testenv

import (
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"testing"
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
// t.TempDir() (through TLSCerts, the one test PKI).
func GenerateCerts(t testing.TB) Certs {
	t.Helper()
	tc := NewTLSCerts(t)
	c := Certs{CA: tc.CAFile, ServerCert: tc.ServerCertFile, ServerKey: tc.ServerKeyFile, ServerPEM: tc.ServerFile, ClientCN: "client"}
	cl := tc.Client(t, pkix.Name{CommonName: c.ClientCN, Organization: []string{"exactly"}})
	c.ClientCert, c.ClientKey = cl.CertFile, cl.KeyFile
	c.ClientPEM = filepath.Join(tc.Dir, "client-both.pem")
	cert, err := os.ReadFile(cl.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(cl.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, c.ClientPEM, append(cert, key...))
	return c
}
