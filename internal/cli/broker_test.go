package cli

import (
	"context"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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

// groupAPIs are the requests a consumer-group member sends: FindCoordinator,
// JoinGroup, Heartbeat, LeaveGroup, SyncGroup, OffsetCommit and OffsetFetch.
var groupAPIs = []kmsg.Key{kmsg.FindCoordinator, kmsg.JoinGroup, kmsg.Heartbeat,
	kmsg.LeaveGroup, kmsg.SyncGroup, kmsg.OffsetCommit, kmsg.OffsetFetch}

// requireGroups skips a test of --group while the broker at addr does not
// advertise the consumer-group APIs. The check asks the broker itself, so the
// test runs again by itself as soon as the broker serves groups.
func requireGroups(t *testing.T, addr string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	served := map[int16]bool{}
	for _, k := range resp.ApiKeys {
		served[k.ApiKey] = true
	}
	var missing []string
	for _, k := range groupAPIs {
		if !served[int16(k)] {
			missing = append(missing, k.Name())
		}
	}
	if len(missing) > 0 {
		t.Skipf("the broker does not serve consumer groups yet (ApiVersions lacks %v)", missing)
	}
}
