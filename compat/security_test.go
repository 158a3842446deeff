package compat

import (
	"context"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// securedBroker starts a broker with PLAINTEXT (for setup), SASL_SSL and
// SSL listeners (client certificates requested), user admin with
// SCRAM-SHA-512 and SCRAM-SHA-256 credentials, PLAIN enabled.
func securedBroker(t *testing.T) (*exactly.Broker, *testenv.TLSCerts) {
	t.Helper()
	certs := testenv.NewTLSCerts(t)
	b := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir(), Config: map[string]string{
		"listeners":               "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0,SSL://127.0.0.1:0",
		"ssl.keystore.type":       "PEM",
		"ssl.keystore.location":   certs.ServerFile,
		"ssl.truststore.location": certs.CAFile,
		"ssl.client.auth":         "requested",
		"sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
	}, ScramUsers: []exactly.ScramUser{
		{Mechanism: "SCRAM-SHA-512", Name: "admin", Password: "admin-secret"},
		{Mechanism: "SCRAM-SHA-256", Name: "admin", Password: "admin-secret"},
	}})
	return b, certs
}

// TestKcatSecured: kcat (librdkafka) produces and consumes over SASL_SSL
// with SCRAM-SHA-512 and with PLAIN, and over SSL with a client
// certificate. librdkafka's SCRAM client-final nonce is its own nonce
// followed by the whole server nonce; the broker accepts a final nonce
// ending with the one it sent, as Kafka does.
func TestKcatSecured(t *testing.T) {
	requireKcat(t)
	b, certs := securedBroker(t)
	client := certs.Client(t, pkix.Name{CommonName: "kcat"})
	for _, tc := range []struct {
		name, listener string
		args           []string
	}{
		{"SASL_SSL-SCRAM-SHA-512", "SASL_SSL", []string{"-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=SCRAM-SHA-512",
			"-X", "sasl.username=admin", "-X", "sasl.password=admin-secret", "-X", "ssl.ca.location=" + certs.CAFile}},
		{"SASL_SSL-PLAIN", "SASL_SSL", []string{"-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=PLAIN",
			"-X", "sasl.username=admin", "-X", "sasl.password=admin-secret", "-X", "ssl.ca.location=" + certs.CAFile}},
		{"mTLS", "SSL", []string{"-X", "security.protocol=SSL", "-X", "ssl.ca.location=" + certs.CAFile,
			"-X", "ssl.certificate.location=" + client.CertFile, "-X", "ssl.key.location=" + client.KeyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "kcat-" + tc.name
			createTopic(t, b.ListenerAddr("PLAINTEXT"), topic, 2, nil)
			want := lineSafeRecords(topic, []int32{0, 1}, 10)
			addr := b.ListenerAddr(tc.listener)
			kcatProduce(t, addr, topic, want, tc.args...)
			diffRecords(t, "kcat", want, kcatConsume(t, addr, topic, tc.args...))
		})
	}
}

// TestKafkaPythonSecured: kafka-python 2.0.2 produces and consumes over
// SASL_SSL with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512. It speaks the
// legacy framing (SaslHandshake v0, then raw SASL tokens without a Kafka
// header), which Kafka 4 dropped and the broker keeps for such clients.
func TestKafkaPythonSecured(t *testing.T) {
	requireKafkaPython(t)
	b, certs := securedBroker(t)
	addr := b.ListenerAddr("SASL_SSL")
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			topic := "python-" + mech
			createTopic(t, b.ListenerAddr("PLAINTEXT"), topic, 2, nil)
			sec := &pySecurity{Protocol: "SASL_SSL", Mechanism: mech, Username: "admin", Password: "admin-secret", CAFile: certs.CAFile}
			want := pythonRecords(topic, []int32{0, 1})
			if err := pythonProduceSecured(addr, topic, want, "all", "none", 1<<20, sec); err != nil {
				t.Fatal(err)
			}
			diffRecords(t, "kafka-python", want, pythonConsumeSecured(t, addr, topic, len(want), sec))
		})
	}
}

// TestKafkaPythonSecuredWrongPassword: a kafka-python producer with a
// wrong password fails in the SASL exchange (the broker closes the
// connection, as Kafka does under the legacy framing, and kafka-python
// gives up with NoBrokersAvailable) instead of hanging or retrying
// forever, writes nothing, and the listener goes on serving the right
// password.
func TestKafkaPythonSecuredWrongPassword(t *testing.T) {
	requireKafkaPython(t)
	b, certs := securedBroker(t)
	addr := b.ListenerAddr("SASL_SSL")
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			topic := "python-denied-" + mech
			createTopic(t, b.ListenerAddr("PLAINTEXT"), topic, 1, nil)
			recs := lineSafeRecords(topic, []int32{0}, 3)
			bad := &pySecurity{Protocol: "SASL_SSL", Mechanism: mech, Username: "admin", Password: "not-the-secret", CAFile: certs.CAFile}
			err := pythonProduceSecured(addr, topic, recs, "all", "none", 1<<20, bad)
			if err == nil {
				t.Fatal("kafka-python produced with a wrong password")
			}
			// kafka-python's SASL code logs this when the broker closes
			// the connection mid-exchange; a TLS failure logs otherwise.
			var pe *pythonError
			if !errors.As(err, &pe) || !strings.Contains(pe.stderr, "Error receiving reply from server") ||
				!strings.Contains(pe.stderr, "NoBrokersAvailable") {
				t.Fatalf("kafka-python failed, but not in the SASL exchange: %v", err)
			}
			if n := endOffset(t, b.ListenerAddr("PLAINTEXT"), topic); n != 0 {
				t.Fatalf("end offset after the denied producer = %d, want 0", n)
			}
			good := *bad
			good.Password = "admin-secret"
			if err := pythonProduceSecured(addr, topic, recs, "all", "none", 1<<20, &good); err != nil {
				t.Fatalf("right password after a wrong one: %v", err)
			}
		})
	}
}

// endOffset is the log end offset of partition 0 of topic.
func endOffset(t *testing.T, addr, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	o, ok := ends.Lookup(topic, 0)
	if !ok {
		t.Fatalf("no end offset for %s/0", topic)
	}
	return o.Offset
}

// TestKafkaPythonMutualTLS: kafka-python 2.0.2 produces and consumes over
// an SSL listener that requires a client certificate, as the principal its
// certificate maps to, and only as far as that principal's ACLs allow: a
// trusted certificate of another principal is denied the topic, and a
// client without a certificate fails the handshake. Neither writes.
func TestKafkaPythonMutualTLS(t *testing.T) {
	requireKafkaPython(t)
	certs := testenv.NewTLSCerts(t)
	logs := &testenv.LogBuffer{}
	b := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir(), Logger: logs.Logger(), Config: map[string]string{
		"listeners":                   "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0",
		"ssl.keystore.type":           "PEM",
		"ssl.keystore.location":       certs.ServerFile,
		"ssl.truststore.location":     certs.CAFile,
		"ssl.client.auth":             "required",
		"ssl.principal.mapping.rules": `RULE:^CN=(.*?),O=.*$/$1/,DEFAULT`,
		"authorizer.class.name":       "exactly",
		"super.users":                 "User:ANONYMOUS",
	}})
	plain := b.ListenerAddr("PLAINTEXT")
	const topic = "python-mtls"
	createTopic(t, plain, topic, 2, nil)
	cl, err := kgo.NewClient(kgo.SeedBrokers(plain))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	acl := kadm.NewACLs().Allow("User:python").Topics(topic).Operations(kadm.OpWrite, kadm.OpRead)
	res, err := kadm.NewClient(cl).CreateACLs(context.Background(), acl)
	if err == nil {
		for _, r := range res {
			err = errors.Join(err, r.Err)
		}
	}
	if err != nil {
		t.Fatalf("granting User:python: %v", err)
	}

	addr := b.ListenerAddr("SSL")
	secFor := func(c testenv.ClientCert) *pySecurity {
		return &pySecurity{Protocol: "SSL", CAFile: certs.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}
	}
	recs := lineSafeRecords(topic, []int32{0}, 3)
	mallory := certs.Client(t, pkix.Name{CommonName: "mallory", Organization: []string{"exactly"}})
	err = pythonProduceSecured(addr, topic, recs, "all", "none", 1<<20, secFor(mallory))
	// kafka-python 2.0.2 treats a TOPIC_AUTHORIZATION_FAILED for the one
	// topic it asked about as a failed metadata update and retries until
	// max_block_ms: the refusal shows in the broker's audit line.
	if err == nil {
		t.Fatal("User:mallory without ACLs produced")
	}
	if !strings.Contains(logs.String(), `msg="authorization denied" principal=User:mallory`) {
		t.Fatalf("no audit line denying User:mallory (kafka-python: %v):\n%s", err, logs.String())
	}
	if err := pythonProduceSecured(addr, topic, recs, "all", "none", 1<<20, secFor(testenv.ClientCert{})); err == nil {
		t.Fatal("kafka-python without a client certificate produced on a listener that requires one")
	}
	if n := endOffset(t, plain, topic); n != 0 {
		t.Fatalf("end offset after the refused producers = %d, want 0", n)
	}

	python := certs.Client(t, pkix.Name{CommonName: "python", Organization: []string{"exactly"}})
	want := pythonRecords(topic, []int32{0, 1})
	if err := pythonProduceSecured(addr, topic, want, "all", "none", 1<<20, secFor(python)); err != nil {
		t.Fatal(err)
	}
	diffRecords(t, "kafka-python over mTLS", want, pythonConsumeSecured(t, addr, topic, len(want), secFor(python)))
}
