package clientconf_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/exactly/exactly/clientconf"
	"github.com/exactly/exactly/eos/preset"
	"github.com/twmb/franz-go/pkg/kgo"
)

// A client properties file in librdkafka's (or the Java client's) keys —
// the one kcat -F and kafka-*.sh --command-config read — becomes kgo
// options, so a service reaches a SASL_SSL cluster with the same file as
// the operators' tools. The password may instead come from the
// environment (Settings.WithEnvPassword), never from a command line.
func Example_properties() {
	dir, _ := os.MkdirTemp("", "clientconf")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "client.properties")
	os.WriteFile(path, []byte(`bootstrap.servers=broker-1.example.com:9093
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.username=orders-service
sasl.password=orders-secret
`), 0o600)

	settings, err := clientconf.LoadProperties(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	conn, err := settings.Opts() // seed brokers, TLS and SASL as kgo options
	if err != nil {
		fmt.Println(err)
		return
	}
	cl, err := kgo.NewClient(append(conn, preset.ExactlyOnceProducer("orders-service-1")...)...)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cl.Close()
	fmt.Println(settings.Protocol(), settings.Mechanism, settings.User)
	// Output: SASL_SSL SCRAM-SHA-512 orders-service
}
