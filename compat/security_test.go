package compat

import (
	"crypto/x509/pkix"
	"testing"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
)

// securedBroker starts a broker with PLAINTEXT (for setup), SASL_SSL and
// SSL listeners (client certificates requested), user admin with
// SCRAM-SHA-512 and PLAIN enabled.
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
	}, ScramUsers: []exactly.ScramUser{{Mechanism: "SCRAM-SHA-512", Name: "admin", Password: "admin-secret"}}})
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
