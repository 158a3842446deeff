package cli

import (
	"testing"

	"github.com/exactly/exactly"
)

// startBroker starts a single-node broker for one test and returns its
// host:port. It is the only place tests know which broker they talk to:
// everything else goes through the Kafka protocol.
//
// New topics default to one partition, and automatic topic creation is off
// so that producing to or consuming from a missing topic is an error the
// tests can see.
func startBroker(t *testing.T) (addr string) {
	t.Helper()
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{
		"num.partitions":            "1",
		"auto.create.topics.enable": "false",
	}})
	return b.Addr()
}
