package preset_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/exactly/exactly/eos/preset"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The presets are ordinary kgo options, so a secured cluster is reached by
// adding the connection's options: TLS with the cluster's CA, and SASL
// SCRAM-SHA-512 (SASL_SSL, what managed Kafka services require). The same
// works for eos/ctp, eos/outbox and eos/sink, which take kgo options too.
func Example_saslSSL() {
	caPEM, err := os.ReadFile("ca.pem") // the cluster's CA bundle (ssl.ca.location)
	if err != nil {
		fmt.Println("no CA bundle here")
		return
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	conn := []kgo.Opt{
		kgo.SeedBrokers("broker-1.example.com:9093"),
		kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}),
		kgo.SASL(scram.Auth{User: "orders-service", Pass: os.Getenv("KAFKA_PASSWORD")}.AsSha512Mechanism()),
	}
	cl, err := kgo.NewClient(append(conn, preset.ExactlyOnceProducer("orders-service-1")...)...)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cl.Close()
	// Output: no CA bundle here
}
