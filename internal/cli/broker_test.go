package cli

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// startBroker starts a single-node broker for one test and returns its
// host:port. It is the only place tests know which broker they talk to:
// everything else goes through the Kafka protocol.
func startBroker(t *testing.T) (addr string) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(1))
	if err != nil {
		t.Fatalf("starting broker: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}
