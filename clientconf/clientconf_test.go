package clientconf

import (
	"crypto/tls"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/testenv"
)

// writeFile writes content to name in dir and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPropertiesLibrdkafkaDialect(t *testing.T) {
	p := writeFile(t, t.TempDir(), "admin.properties", `# librdkafka / kcat -F
bootstrap.servers=b1:9093, b2:9093
security.protocol=SASL_SSL
sasl.mechanisms=scram-sha-512
sasl.username=admin
sasl.password=admin secret=with equals
ssl.ca.location=/etc/ca.pem
ssl.certificate.location=/etc/c.crt
ssl.key.location=/etc/c.key
client.id=ops
`)
	s, err := LoadProperties(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{Bootstrap: []string{"b1:9093", "b2:9093"}, ClientID: "ops", TLS: true,
		CAFile: "/etc/ca.pem", CertFile: "/etc/c.crt", KeyFile: "/etc/c.key",
		Mechanism: ScramSHA512, User: "admin", Password: "admin secret=with equals"}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}
	if s.Protocol() != "SASL_SSL" {
		t.Fatalf("protocol %s", s.Protocol())
	}
}

func TestPropertiesJavaDialect(t *testing.T) {
	s, err := FromProperties(map[string]string{
		"bootstrap.servers":                     "k:9093",
		"security.protocol":                     "SASL_SSL",
		"sasl.mechanism":                        "SCRAM-SHA-256",
		"sasl.jaas.config":                      `org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="p\"w;x" tokenauth=false;`,
		"ssl.truststore.location":               "/ca.pem",
		"ssl.truststore.type":                   "PEM",
		"ssl.keystore.location":                 "/client.pem",
		"ssl.keystore.type":                     "pem",
		"ssl.truststore.password":               "ignored",
		"ssl.endpoint.identification.algorithm": "",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{Bootstrap: []string{"k:9093"}, TLS: true, CAFile: "/ca.pem", CertFile: "/client.pem", KeyFile: "/client.pem",
		SkipHostnameCheck: true, Mechanism: ScramSHA256, User: "alice", Password: `p"w;x`}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}

	// PlainLoginModule alone implies PLAIN; SASL_PLAINTEXT means no TLS.
	s, err = FromProperties(map[string]string{
		"security.protocol": "SASL_PLAINTEXT",
		"sasl.mechanism":    "PLAIN",
		"sasl.jaas.config":  `org.apache.kafka.common.security.plain.PlainLoginModule required username=bob password="b";`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.TLS || s.Mechanism != Plain || s.User != "bob" || s.Password != "b" || s.Protocol() != "SASL_PLAINTEXT" {
		t.Fatalf("got %+v", s)
	}
	s, err = FromProperties(map[string]string{
		"sasl.jaas.config": `org.apache.kafka.common.security.plain.PlainLoginModule required username="bob" password="b";`,
	})
	if err != nil || s.Mechanism != Plain {
		t.Fatalf("PLAIN not inferred from the login module: %+v %v", s, err)
	}
}

// Without security.protocol the protocol follows the keys, so a file with
// only a CA still connects with TLS rather than silently in plaintext.
func TestPropertiesInferProtocol(t *testing.T) {
	for _, tc := range []struct {
		props map[string]string
		want  string
	}{
		{map[string]string{"bootstrap.servers": "x:1"}, "PLAINTEXT"},
		{map[string]string{"ssl.ca.location": "/ca"}, "SSL"},
		{map[string]string{"sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": "p"}, "SASL_PLAINTEXT"},
		{map[string]string{"ssl.ca.location": "/ca", "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": "p"}, "SASL_SSL"},
	} {
		s, err := FromProperties(tc.props)
		if err != nil {
			t.Fatalf("%v: %v", tc.props, err)
		}
		if s.Protocol() != tc.want {
			t.Errorf("%v: protocol %s, want %s", tc.props, s.Protocol(), tc.want)
		}
	}
}

func TestPropertiesErrors(t *testing.T) {
	jaasPlain := `org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p";`
	for _, tc := range []struct {
		name  string
		props map[string]string
		want  string
	}{
		{"unknown key", map[string]string{"sasl.usename": "u"}, `unknown key "sasl.usename"`},
		{"bad protocol", map[string]string{"security.protocol": "TLS"}, "use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"},
		{"SASL without mechanism", map[string]string{"security.protocol": "SASL_SSL"}, "needs sasl.mechanism"},
		{"plaintext with sasl", map[string]string{"security.protocol": "PLAINTEXT", "sasl.username": "u"}, "does not use SASL"},
		{"plaintext with ssl", map[string]string{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "ssl.ca.location": "/ca"}, "does not use TLS"},
		{"unsupported mechanism", map[string]string{"sasl.mechanism": "GSSAPI"}, `unsupported SASL mechanism "GSSAPI"`},
		{"mechanisms disagree", map[string]string{"sasl.mechanism": "PLAIN", "sasl.mechanisms": "SCRAM-SHA-256"}, "disagree"},
		{"JKS truststore", map[string]string{"ssl.truststore.location": "/ts.jks"}, "ssl.truststore.type=PEM"},
		{"JKS keystore", map[string]string{"ssl.keystore.location": "/ks.jks", "ssl.keystore.type": "JKS"}, "ssl.keystore.type=PEM"},
		{"two CAs", map[string]string{"ssl.ca.location": "/a", "ssl.truststore.location": "/b", "ssl.truststore.type": "PEM"}, "give the CA once"},
		{"jaas and username", map[string]string{"sasl.jaas.config": jaasPlain, "sasl.username": "u"}, "give the credentials once"},
		{"jaas module vs mechanism", map[string]string{"sasl.jaas.config": jaasPlain, "sasl.mechanism": "SCRAM-SHA-512"}, "needs sasl.mechanism=PLAIN"},
		{"scram module without mechanism", map[string]string{"sasl.jaas.config": `org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p";`}, "needs sasl.mechanism=SCRAM-SHA-256 or SCRAM-SHA-512"},
		{"unknown module", map[string]string{"sasl.jaas.config": `com.sun.security.auth.module.Krb5LoginModule required;`}, "is not supported"},
		{"unterminated quote", map[string]string{"sasl.jaas.config": `org.apache.kafka.common.security.plain.PlainLoginModule required username="u;`}, "unterminated"},
		{"missing semicolon", map[string]string{"sasl.jaas.config": `org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="p"`}, "expected"},
		{"endpoint algorithm", map[string]string{"ssl.endpoint.identification.algorithm": "ldap"}, "use https or none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromProperties(tc.props)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadPropertiesFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadProperties(filepath.Join(dir, "missing.properties")); err == nil || !strings.Contains(err.Error(), "--command-config") {
		t.Fatalf("missing file: %v", err)
	}
	p := writeFile(t, dir, "bad.properties", "security.protocol\n")
	if _, err := LoadProperties(p); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("malformed line: %v", err)
	}
}

// Flags win over the file; the password comes from the flag's file, then
// the environment, then the properties file.
func TestResolvePrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.properties", `bootstrap.servers=file:9093
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.username=fileuser
sasl.password=filepw
ssl.ca.location=/file-ca.pem
`)
	t.Setenv(PasswordEnv, "")
	s, err := Resolve(cfg, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Password != "filepw" || s.User != "fileuser" || s.Bootstrap[0] != "file:9093" || !s.TLS {
		t.Fatalf("file alone: %+v", s)
	}

	t.Setenv(PasswordEnv, "envpw")
	if s, err = Resolve(cfg, Overrides{}); err != nil || s.Password != "envpw" {
		t.Fatalf("env should win over the file: %+v %v", s, err)
	}

	pwFile := writeFile(t, dir, "pw", "flagpw\n")
	off := false
	s, err = Resolve(cfg, Overrides{Bootstrap: []string{"flag:1"}, TLS: &off, CAFile: "", Mechanism: "scram-sha-256",
		User: "flaguser", PasswordFile: pwFile})
	if err == nil || !strings.Contains(err.Error(), "TLS is off") {
		// --tls=false while the file names a CA is a contradiction.
		t.Fatalf("--tls=false with a file CA: %+v %v", s, err)
	}
	s, err = Resolve(cfg, Overrides{Bootstrap: []string{"flag:1"}, Mechanism: "scram-sha-256", User: "flaguser",
		PasswordFile: pwFile, CAFile: "/flag-ca.pem"})
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{Bootstrap: []string{"flag:1"}, TLS: true, CAFile: "/flag-ca.pem", Mechanism: ScramSHA256,
		User: "flaguser", Password: "flagpw"}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %+v\nwant %+v", s, want)
	}

	// Flags alone, no file.
	t.Setenv(PasswordEnv, "")
	if _, err := Resolve("", Overrides{Mechanism: "PLAIN", User: "u"}); err == nil || !strings.Contains(err.Error(), "needs a password") {
		t.Fatalf("no password: %v", err)
	}
	if _, err := Resolve("", Overrides{User: "u"}); err == nil || !strings.Contains(err.Error(), "no SASL mechanism") {
		t.Fatalf("user without mechanism: %v", err)
	}
	if _, err := Resolve("", Overrides{CertFile: "/c"}); err == nil || !strings.Contains(err.Error(), "both the certificate and the key") {
		t.Fatalf("cert without key: %v", err)
	}
	if _, err := Resolve("", Overrides{PasswordFile: writeFile(t, dir, "empty", "\n"), Mechanism: "PLAIN", User: "u"}); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty password file: %v", err)
	}
}

func TestSASLMechanismNames(t *testing.T) {
	for _, m := range Mechanisms {
		mech, err := Settings{Mechanism: strings.ToLower(m), User: "u", Password: "p"}.SASLMechanism()
		if err != nil {
			t.Fatal(err)
		}
		if mech.Name() != m {
			t.Errorf("%s: mechanism %s", m, mech.Name())
		}
	}
	if m, err := (Settings{}).SASLMechanism(); m != nil || err != nil {
		t.Fatalf("no SASL: %v %v", m, err)
	}
}

// The TLS configuration built from the PEM files completes a mutual-TLS
// handshake with a server trusting the same CA, and the hostname check is
// on unless switched off.
func TestTLSConfigHandshake(t *testing.T) {
	certs := testenv.GenerateCerts(t)
	srvCert, err := tls.LoadX509KeyPair(certs.ServerCert, certs.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	caSettings := Settings{TLS: true, CAFile: certs.CA}
	srvCfg, _ := caSettings.TLSConfig()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srvCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: srvCfg.RootCAs})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan string, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil && len(tc.ConnectionState().PeerCertificates) > 0 {
				peers <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			} else {
				peers <- ""
			}
			c.Close()
		}
	}()
	dial := func(s Settings) error {
		cfg, err := s.TLSConfig()
		if err != nil {
			return err
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			<-peers
			return err
		}
		defer c.Close()
		if cn := <-peers; cn != certs.ClientCN {
			t.Errorf("server saw client %q, want %q", cn, certs.ClientCN)
		}
		return nil
	}
	mtls := Settings{TLS: true, CAFile: certs.CA, CertFile: certs.ClientCert, KeyFile: certs.ClientKey}
	if err := dial(mtls); err != nil {
		t.Fatalf("mutual TLS with separate files: %v", err)
	}
	// A KIP-651 keystore: chain and key in one file.
	oneFile := Settings{TLS: true, CAFile: certs.CA, CertFile: certs.ClientPEM, KeyFile: certs.ClientPEM}
	if err := dial(oneFile); err != nil {
		t.Fatalf("mutual TLS with one PEM file: %v", err)
	}
	wrongName := mtls
	wrongName.ServerName = "not-the-broker.example"
	if err := dial(wrongName); err == nil {
		t.Fatal("a certificate without the server name was accepted")
	}
	wrongName.SkipHostnameCheck = true
	if err := dial(wrongName); err != nil {
		t.Fatalf("hostname check off, chain still valid: %v", err)
	}
	noCA := Settings{TLS: true, CertFile: certs.ClientCert, KeyFile: certs.ClientKey, SkipHostnameCheck: true}
	if err := dial(noCA); err == nil {
		t.Fatal("a certificate from an untrusted CA was accepted with only the hostname check off")
	}
	if _, err := (Settings{TLS: true, CAFile: certs.ClientKey}).TLSConfig(); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("a key file as CA bundle: %v", err)
	}
}

// The password never leaves in JSON: workers get it in their environment.
func TestSettingsJSONOmitsPassword(t *testing.T) {
	s := Settings{Mechanism: Plain, User: "u", Password: "secret"}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "secret") {
		t.Fatalf("password in JSON: %s", b)
	}
	if env := s.Env(); len(env) != 1 || env[0] != PasswordEnv+"=secret" {
		t.Fatalf("env %v", env)
	}
	t.Setenv(PasswordEnv, "fromenv")
	if got := (Settings{Mechanism: Plain, User: "u"}).WithEnvPassword(); got.Password != "fromenv" {
		t.Fatalf("WithEnvPassword: %+v", got)
	}
}
