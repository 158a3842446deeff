package exactly_test

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// securedBroker starts a broker with a PLAINTEXT listener (for checking
// state from outside) and the given secured listeners, plus users admin
// (SCRAM-SHA-512) and bob (SCRAM-SHA-256).
func securedBroker(t *testing.T, certs *testenv.TLSCerts, listeners string, extra map[string]string) (*exactly.Broker, *logBuffer) {
	t.Helper()
	opts, logs := securedOptions(certs, listeners, extra)
	return exactly.NewTestBroker(t, opts), logs
}

// securedOptions are securedBroker's options, for a test that restarts
// the broker on the same data directory.
func securedOptions(certs *testenv.TLSCerts, listeners string, extra map[string]string) (exactly.Options, *logBuffer) {
	cfg := map[string]string{
		"listeners":               "PLAINTEXT://127.0.0.1:0," + listeners,
		"sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
	}
	if certs != nil {
		cfg["ssl.keystore.type"] = "PEM"
		cfg["ssl.keystore.location"] = certs.ServerFile
	}
	for k, v := range extra {
		cfg[k] = v
	}
	logs := &logBuffer{}
	return exactly.Options{Config: cfg, Logger: logs.Logger(),
		ScramUsers: []exactly.ScramUser{
			{Mechanism: "SCRAM-SHA-512", Name: "admin", Password: "admin-secret"},
			{Mechanism: "SCRAM-SHA-256", Name: "bob", Password: "bob-secret", Iterations: 8192},
		}}, logs
}

// logBuffer collects the broker's log lines.
type logBuffer = testenv.LogBuffer

// roundTrip produces n records to topic, which must be new (it reads
// from the start), through opts and reads them back.
func roundTrip(t *testing.T, topic string, n int, opts ...kgo.Opt) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.DefaultProduceTopic(topic), kgo.AllowAutoTopicCreation(),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.RequestRetries(1)}, opts...)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for i := range n {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			return fmt.Errorf("produce: %w", err)
		}
	}
	var got []string
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return fmt.Errorf("consume: %w", err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	for i, v := range got {
		if v != strconv.Itoa(i) {
			return fmt.Errorf("record %d is %q", i, v)
		}
	}
	return nil
}

// firstRequest sends one CreateTopics request through a client with
// opts, without retries, and returns its error.
func firstRequest(t *testing.T, opts ...kgo.Opt) error {
	t.Helper()
	cl, err := kgo.NewClient(append(opts, kgo.RequestRetries(0))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, "denied")
	return err
}

// topics lists the broker's topics over its PLAINTEXT listener.
func topics(t *testing.T, b *exactly.Broker) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("PLAINTEXT")))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	td, err := kadm.NewClient(cl).ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return td.Names()
}

// TestSASLMechanismsProduceConsume: franz-go produces and consumes over
// SASL_SSL and SASL_PLAINTEXT with each mechanism, against credentials
// created at start; the user is the authenticated one.
func TestSASLMechanismsProduceConsume(t *testing.T) {
	certs := testenv.NewTLSCerts(t)
	b, logs := securedBroker(t, certs, "SASL_SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0", nil)
	tlsOpt := kgo.DialTLSConfig(certs.ClientConfig())
	for _, tc := range []struct {
		name, listener string
		mech           sasl.Mechanism
		tls            bool
	}{
		{"SASL_SSL SCRAM-SHA-512", "SASL_SSL", scram.Auth{User: "admin", Pass: "admin-secret"}.AsSha512Mechanism(), true},
		{"SASL_SSL SCRAM-SHA-256", "SASL_SSL", scram.Auth{User: "bob", Pass: "bob-secret"}.AsSha256Mechanism(), true},
		{"SASL_SSL PLAIN", "SASL_SSL", plain.Auth{User: "bob", Pass: "bob-secret"}.AsMechanism(), true},
		{"SASL_PLAINTEXT SCRAM-SHA-512", "SASL_PLAINTEXT", scram.Auth{User: "admin", Pass: "admin-secret"}.AsSha512Mechanism(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []kgo.Opt{kgo.SeedBrokers(b.ListenerAddr(tc.listener)), kgo.SASL(tc.mech)}
			if tc.tls {
				opts = append(opts, tlsOpt)
			}
			topic := strings.NewReplacer(" ", "-").Replace(tc.name)
			if err := roundTrip(t, topic, 5, opts...); err != nil {
				t.Fatal(err)
			}
		})
	}
	if !strings.Contains(logs.String(), "mechanism=PLAIN user=bob") {
		t.Errorf("no successful PLAIN authentication of bob logged")
	}
}

// TestAuthenticationFailuresChangeNothing: a wrong password, an unknown
// user and a disabled mechanism are refused (SASL_AUTHENTICATION_FAILED,
// UNSUPPORTED_SASL_MECHANISM), audited, and create nothing.
func TestAuthenticationFailuresChangeNothing(t *testing.T) {
	certs := testenv.NewTLSCerts(t)
	b, logs := securedBroker(t, certs, "SASL_SSL://127.0.0.1:0", map[string]string{"sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256"})
	for _, tc := range []struct {
		name string
		mech sasl.Mechanism
		want *kerr.Error
	}{
		{"wrong password", scram.Auth{User: "admin", Pass: "nope"}.AsSha512Mechanism(), kerr.SaslAuthenticationFailed},
		{"unknown user", scram.Auth{User: "mallory", Pass: "x"}.AsSha512Mechanism(), kerr.SaslAuthenticationFailed},
		{"wrong mechanism for the user", scram.Auth{User: "bob", Pass: "bob-secret"}.AsSha512Mechanism(), kerr.SaslAuthenticationFailed},
		{"PLAIN not enabled", plain.Auth{User: "admin", Pass: "admin-secret"}.AsMechanism(), kerr.UnsupportedSaslMechanism},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := firstRequest(t, kgo.SeedBrokers(b.ListenerAddr("SASL_SSL")), kgo.SASL(tc.mech),
				kgo.DialTLSConfig(certs.ClientConfig()))
			if err == nil {
				t.Fatal("request succeeded")
			}
			if !strings.Contains(err.Error(), tc.want.Message) && !strings.Contains(err.Error(), tc.want.Error()) {
				t.Errorf("err = %v, want %s", err, tc.want.Message)
			}
		})
	}
	if got := topics(t, b); len(got) != 0 {
		t.Errorf("topics after refused clients: %v", got)
	}
	if !strings.Contains(logs.String(), "authentication failed") {
		t.Error("no audit line for the failures")
	}
}

// TestRequestsBeforeAuthenticationClose: on a SASL listener anything but
// ApiVersions and SaslHandshake before authenticating closes the
// connection and does nothing; after SaslHandshake v1 only
// SaslAuthenticate is accepted.
func TestRequestsBeforeAuthenticationClose(t *testing.T) {
	b, _ := securedBroker(t, nil, "SASL_PLAINTEXT://127.0.0.1:0", nil)
	addr := b.ListenerAddr("SASL_PLAINTEXT")
	create := kmsg.NewPtrCreateTopicsRequest()
	ct := kmsg.NewCreateTopicsRequestTopic()
	ct.Topic, ct.NumPartitions, ct.ReplicationFactor = "sneaky", 1, 1
	create.Topics = append(create.Topics, ct)

	c := testenv.DialRaw(t, addr)
	c.Request(kmsg.NewPtrApiVersionsRequest(), 3) // allowed
	c.SendExpectingClose(testenv.Frame(create, 4, 1))
	c.ExpectClosed()

	c = testenv.DialRaw(t, addr)
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = "SCRAM-SHA-512"
	if r := c.Request(hs, 1).(*kmsg.SASLHandshakeResponse); r.ErrorCode != 0 {
		t.Fatalf("handshake: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	c.SendExpectingClose(testenv.Frame(create, 4, 2))
	c.ExpectClosed()

	c = testenv.DialRaw(t, addr)
	hs.Mechanism = "GSSAPI"
	r := c.Request(hs, 1).(*kmsg.SASLHandshakeResponse)
	if r.ErrorCode != kerr.UnsupportedSaslMechanism.Code || len(r.SupportedMechanisms) != 3 {
		t.Fatalf("GSSAPI handshake: code %d, mechanisms %v", r.ErrorCode, r.SupportedMechanisms)
	}
	c.ExpectClosed()

	if got := topics(t, b); len(got) != 0 {
		t.Errorf("topics: %v", got)
	}
}

// TestPlaintextClientOnTLSListener: a client speaking plaintext Kafka to
// a TLS listener is closed without an answer.
func TestPlaintextClientOnTLSListener(t *testing.T) {
	certs := testenv.NewTLSCerts(t)
	b, _ := securedBroker(t, certs, "SASL_SSL://127.0.0.1:0,SSL://127.0.0.1:0", nil)
	for _, l := range []string{"SASL_SSL", "SSL"} {
		c := testenv.DialRaw(t, b.ListenerAddr(l))
		c.SendExpectingClose(testenv.Frame(kmsg.NewPtrApiVersionsRequest(), 3, 1))
		c.ExpectClosed()
	}
}

// TestLegacySASLFraming: SaslHandshake v0 then raw tokens, as
// kafka-python 2.0.2 sends them: PLAIN is answered with an empty token and
// the connection then serves requests; a wrong password closes it.
func TestLegacySASLFraming(t *testing.T) {
	b, _ := securedBroker(t, nil, "SASL_PLAINTEXT://127.0.0.1:0", map[string]string{"connections.max.reauth.ms": "300"})
	addr := b.ListenerAddr("SASL_PLAINTEXT")
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = "PLAIN"

	c := testenv.DialRaw(t, addr)
	if r := c.Request(hs, 0).(*kmsg.SASLHandshakeResponse); r.ErrorCode != 0 {
		t.Fatalf("handshake: %d", r.ErrorCode)
	}
	c.SendToken([]byte("\x00bob\x00bob-secret"))
	if tok := c.ReadFrame(); len(tok) != 0 {
		t.Fatalf("PLAIN answer token %q, want empty", tok)
	}
	md := c.Request(kmsg.NewPtrMetadataRequest(), 9).(*kmsg.MetadataResponse)
	if len(md.Brokers) != 1 || strconv.Itoa(int(md.Brokers[0].Port)) != portOf(t, addr) {
		t.Fatalf("metadata brokers %+v, want this listener's port %s", md.Brokers, portOf(t, addr))
	}
	// connections.max.reauth.ms: past the session's end, a request that
	// is not a re-authentication closes the connection.
	time.Sleep(400 * time.Millisecond)
	c.SendExpectingClose(testenv.Frame(kmsg.NewPtrMetadataRequest(), 9, 7))
	c.ExpectClosed()

	c = testenv.DialRaw(t, addr)
	c.Request(hs, 0)
	c.SendToken([]byte("\x00bob\x00wrong"))
	c.ExpectClosed()
}

func portOf(t *testing.T, addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSaslAuthenticateSessionLifetime: SaslAuthenticate v1 reports
// connections.max.reauth.ms as the session lifetime, and franz-go, which
// re-authenticates before it ends, keeps working across several
// lifetimes.
func TestSaslAuthenticateSessionLifetime(t *testing.T) {
	b, _ := securedBroker(t, nil, "SASL_PLAINTEXT://127.0.0.1:0", map[string]string{"connections.max.reauth.ms": "1500"})
	addr := b.ListenerAddr("SASL_PLAINTEXT")
	c := testenv.DialRaw(t, addr)
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Mechanism = "PLAIN"
	c.Request(hs, 1)
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.SASLAuthBytes = []byte("\x00admin\x00admin-secret")
	r := c.Request(auth, 2).(*kmsg.SASLAuthenticateResponse)
	if r.ErrorCode != 0 || r.SessionLifetimeMillis != 1500 {
		t.Fatalf("authenticate: code %d, lifetime %d", r.ErrorCode, r.SessionLifetimeMillis)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.SASL(scram.Auth{User: "admin", Pass: "admin-secret"}.AsSha512Mechanism()),
		kgo.DefaultProduceTopic("reauth"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr()
		cancel()
		if err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
		time.Sleep(time.Second)
	}
}

// TestMutualTLSPrincipal: on an SSL listener requiring client
// certificates, the principal is the certificate subject mapped by
// ssl.principal.mapping.rules; certificates from another CA or expired
// ones are refused at the handshake and change nothing.
func TestMutualTLSPrincipal(t *testing.T) {
	certs := testenv.NewTLSCerts(t)
	b, logs := securedBroker(t, certs, "SSL://127.0.0.1:0", map[string]string{
		"ssl.client.auth":             "required",
		"ssl.truststore.location":     certs.CAFile,
		"ssl.principal.mapping.rules": `RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L,DEFAULT`,
	})
	addr := b.ListenerAddr("SSL")
	alice := certs.Client(t, pkix.Name{CommonName: "Alice", OrganizationalUnit: []string{"ServiceUsers"}, Organization: []string{"Example"}})
	if err := roundTrip(t, "mtls-alice", 3, kgo.SeedBrokers(addr), kgo.DialTLSConfig(certs.ClientConfig(alice))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "mechanism=SSL user=alice") {
		t.Errorf("alice's certificate did not map to user alice:\n%s", logs.String())
	}
	carol := certs.Client(t, pkix.Name{CommonName: "Carol", Organization: []string{"Example"}})
	if err := roundTrip(t, "mtls-carol", 3, kgo.SeedBrokers(addr), kgo.DialTLSConfig(certs.ClientConfig(carol))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `user="CN=Carol,O=Example"`) {
		t.Errorf("DEFAULT rule did not give the whole subject:\n%s", logs.String())
	}
	before := topics(t, b)
	for name, cert := range map[string]testenv.ClientCert{
		"untrusted": certs.UntrustedClient(t, pkix.Name{CommonName: "Eve"}),
		"expired":   certs.ExpiredClient(t, pkix.Name{CommonName: "Alice", OrganizationalUnit: []string{"ServiceUsers"}}),
		"none":      {},
	} {
		cfg := certs.ClientConfig()
		if cert.CertFile != "" {
			cfg = certs.ClientConfig(cert)
		}
		if err := firstRequest(t, kgo.SeedBrokers(addr), kgo.DialTLSConfig(cfg)); err == nil {
			t.Errorf("%s certificate: produce succeeded", name)
		}
	}
	if after := topics(t, b); len(after) != len(before) {
		t.Errorf("topics %v, then %v", before, after)
	}
}

// TestReloadTLS: after the keystore file is replaced, ReloadTLS makes new
// connections see the new certificate; a broken file is refused and the
// old one kept.
func TestReloadTLS(t *testing.T) {
	certs := testenv.NewTLSCerts(t)
	b, _ := securedBroker(t, certs, "SSL://127.0.0.1:0", nil)
	addr := b.ListenerAddr("SSL")
	org := func() []string {
		c, err := tls.Dial("tcp", addr, certs.ClientConfig())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.Organization
	}
	if got := org(); len(got) != 0 {
		t.Fatalf("first certificate organization %v", got)
	}
	certs.RenewServer(t)
	if got := org(); len(got) != 0 {
		t.Fatalf("certificate changed before reload: %v", got)
	}
	if err := b.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if got := org(); len(got) != 1 || got[0] != "renewed" {
		t.Fatalf("after reload organization %v, want [renewed]", got)
	}
	if err := writeFile(certs.ServerFile, "garbage"); err != nil {
		t.Fatal(err)
	}
	if err := b.ReloadTLS(); err == nil {
		t.Fatal("reload of a garbage keystore succeeded")
	}
	if got := org(); len(got) != 1 || got[0] != "renewed" {
		t.Fatalf("after a failed reload organization %v, want [renewed]", got)
	}
}

// TestScramCredentialAdmin: AlterUserScramCredentials and
// DescribeUserScramCredentials (KIP-554) through kadm; the new user can
// log in, refusals are Kafka's errors, and credentials survive a restart.
func TestScramCredentialAdmin(t *testing.T) {
	dir := t.TempDir()
	cfg := map[string]string{"listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN"}
	b, err := exactly.Start(exactly.Options{DataDir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("PLAINTEXT")))
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	res, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{
		{User: "carol", Mechanism: kadm.ScramSha256, Iterations: 4096, Password: "carol-pw"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if e := res["carol"].Err; e != nil {
		t.Fatalf("carol: %v", e)
	}
	// kadm checks iterations itself; a raw request reaches the broker's
	// own checks.
	alter := kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
	for _, u := range []struct {
		name  string
		mech  int8
		iters int32
	}{{"dave", 2, 100}, {"erin", 2, 20000}, {"", 2, 4096}, {"frank", 3, 4096}} {
		up := kmsg.NewAlterUserSCRAMCredentialsRequestUpsertion()
		up.Name, up.Mechanism, up.Iterations, up.Salt, up.SaltedPassword = u.name, u.mech, u.iters, []byte("salt"), []byte("salted")
		alter.Upsertions = append(alter.Upsertions, up)
	}
	ar, err := alter.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int16{"dave": kerr.UnacceptableCredential.Code, "erin": kerr.UnacceptableCredential.Code,
		"": kerr.UnacceptableCredential.Code, "frank": kerr.UnsupportedSaslMechanism.Code}
	for _, r := range ar.Results {
		if r.ErrorCode != want[r.User] {
			t.Errorf("user %q: error %d, want %d", r.User, r.ErrorCode, want[r.User])
		}
		delete(want, r.User)
	}
	if len(want) != 0 {
		t.Errorf("no result for %v", want)
	}
	del, err := adm.AlterUserSCRAMs(ctx, []kadm.DeleteSCRAM{{User: "nobody", Mechanism: kadm.ScramSha256}}, nil)
	if err != nil || del["nobody"].Err != kerr.ResourceNotFound {
		t.Errorf("deleting a missing credential: %v %v", err, del["nobody"].Err)
	}
	cl.Close()
	b.Close()

	b, err = exactly.Start(exactly.Options{DataDir: dir, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cl, err = kgo.NewClient(kgo.SeedBrokers(b.ListenerAddr("PLAINTEXT")))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm = kadm.NewClient(cl)
	described, err := kadm.NewClient(cl).DescribeUserSCRAMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := described["carol"]; len(d.CredInfos) != 1 || d.CredInfos[0].Mechanism != kadm.ScramSha256 || d.CredInfos[0].Iterations != 4096 {
		t.Fatalf("carol described as %+v", d)
	}
	if _, ok := described["dave"]; ok {
		t.Error("refused dave was stored")
	}
	for _, m := range []sasl.Mechanism{scram.Auth{User: "carol", Pass: "carol-pw"}.AsSha256Mechanism(), plain.Auth{User: "carol", Pass: "carol-pw"}.AsMechanism()} {
		if err := roundTrip(t, "carol-"+m.Name(), 1, kgo.SeedBrokers(b.ListenerAddr("SASL_PLAINTEXT")), kgo.SASL(m)); err != nil {
			t.Fatalf("carol with %s: %v", m.Name(), err)
		}
	}
	if _, err := adm.AlterUserSCRAMs(ctx, []kadm.DeleteSCRAM{{User: "carol", Mechanism: kadm.ScramSha256}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := firstRequest(t, kgo.SeedBrokers(b.ListenerAddr("SASL_PLAINTEXT")),
		kgo.SASL(scram.Auth{User: "carol", Pass: "carol-pw"}.AsSha256Mechanism())); err == nil {
		t.Fatal("deleted credential still authenticates")
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }

// TestMetricsEndpointTLSAndBasicAuth: with a keystore the metrics endpoint
// speaks only HTTPS, and with basic-auth users it serves only them, by the
// password of their SCRAM credential; everyone else gets 401 and the
// failure is counted. Without a host the endpoint binds loopback.
func TestMetricsEndpointTLSAndBasicAuth(t *testing.T) {
	certs := testenv.NewTLSCerts(t)
	b := exactly.NewTestBroker(t, exactly.Options{MetricsListen: ":0", Config: map[string]string{
		"metrics.ssl.keystore.location": certs.ServerFile,
		"metrics.basic.auth.users":      "prometheus",
	}, ScramUsers: []exactly.ScramUser{
		{Mechanism: "SCRAM-SHA-512", Name: "prometheus", Password: "scrape-secret"},
		{Mechanism: "SCRAM-SHA-512", Name: "admin", Password: "admin-secret"},
	}})
	host, port, err := net.SplitHostPort(b.MetricsAddr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("metrics on %q (%v), want loopback", b.MetricsAddr(), err)
	}
	url := "https://localhost:" + port + "/metrics"
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientConfig()}}
	get := func(user, password string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, c := range []struct{ name, user, password string }{
		{"no credentials", "", ""},
		{"wrong password", "prometheus", "guess"},
		{"unknown user", "mallory", "scrape-secret"},
		{"a real user the endpoint does not admit", "admin", "admin-secret"},
	} {
		if code, _ := get(c.user, c.password); code != http.StatusUnauthorized {
			t.Errorf("%s: HTTP %d, want 401", c.name, code)
		}
	}
	code, body := get("prometheus", "scrape-secret")
	if code != http.StatusOK || !strings.Contains(body, `kafka_server_authentication_failures_total{mechanism="BASIC"} 3`) {
		t.Fatalf("prometheus: HTTP %d, want 200 with three BASIC failures counted:\n%s", code, body)
	}
	if resp, err := http.Get("http://127.0.0.1:" + port + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP served metrics on an HTTPS endpoint")
		}
	}
}
