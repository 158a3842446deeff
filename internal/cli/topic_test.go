package cli

import (
	"strings"
	"testing"
	"time"
)

func TestTopicCreateListDescribeDelete(t *testing.T) {
	t.Parallel() // owns its broker
	addr := startBroker(t)

	r := mustRun(t, "", "topic", "create", "orders", "-b", addr,
		"--partitions", "3", "--replication-factor", "1", "--config", "retention.ms=12345")
	if !strings.Contains(r.stdout, "Created topic orders.") {
		t.Errorf("create output = %q", r.stdout)
	}
	mustRun(t, "", "topic", "create", "audit", "--bootstrap-server", addr)

	r = mustRun(t, "", "topic", "list", "-b", addr)
	if r.stdout != "audit\norders\n" {
		t.Errorf("list = %q, want audit and orders, sorted", r.stdout)
	}

	r = mustRun(t, "", "topic", "describe", "orders", "-b", addr)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("describe printed %d lines, want 1 + 3 partitions:\n%s", len(lines), r.stdout)
	}
	for _, want := range []string{"Topic: orders", "PartitionCount: 3", "ReplicationFactor: 1", "CleanupPolicy: delete", "Configs: retention.ms=12345"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("describe header %q lacks %q", lines[0], want)
		}
	}
	for p, l := range lines[1:] {
		for _, want := range []string{"Partition: " + string(rune('0'+p)), "Leader: 0", "Replicas: 0", "Isr: 0"} {
			if !strings.Contains(l, want) {
				t.Errorf("partition line %q lacks %q", l, want)
			}
		}
	}
	// Broker defaults are not listed.
	r = mustRun(t, "", "topic", "describe", "audit", "-b", addr)
	if !strings.Contains(r.stdout, "Configs: \n") && !strings.HasSuffix(strings.SplitN(r.stdout, "\n", 2)[0], "Configs: ") {
		t.Errorf("describe of a topic without overrides shows configs: %q", r.stdout)
	}
	// Without names, every topic is described.
	r = mustRun(t, "", "topic", "describe", "-b", addr)
	if !strings.Contains(r.stdout, "Topic: audit\t") || !strings.Contains(r.stdout, "Topic: orders\t") {
		t.Errorf("describe all = %q", r.stdout)
	}

	r = mustRun(t, "", "topic", "delete", "orders", "audit", "-b", addr)
	if r.stdout != "Deleted topic orders.\nDeleted topic audit.\n" {
		t.Errorf("delete output = %q", r.stdout)
	}
	r = mustRun(t, "", "topic", "list", "-b", addr)
	if r.stdout != "" {
		t.Errorf("list after delete = %q, want nothing", r.stdout)
	}
}

func TestTopicCreateExisting(t *testing.T) {
	t.Parallel() // owns its broker
	addr := startBroker(t)
	createTopic(t, addr, "dup", 1)
	wantErr(t, `topic "dup" already exists`, "", "topic", "create", "dup", "-b", addr)
	r := mustRun(t, "", "topic", "create", "dup", "-b", addr, "--if-not-exists")
	if r.stdout != "" {
		t.Errorf("--if-not-exists on an existing topic printed %q", r.stdout)
	}
}

func TestTopicDeleteMissing(t *testing.T) {
	t.Parallel() // owns its broker
	addr := startBroker(t)
	wantErr(t, `topic "nope" does not exist`, "", "topic", "delete", "nope", "-b", addr)
	mustRun(t, "", "topic", "delete", "nope", "-b", addr, "--if-exists")

	// One missing topic among several: the others are still deleted.
	createTopic(t, addr, "real", 1)
	r := wantErr(t, `topic "ghost" does not exist`, "", "topic", "delete", "ghost", "real", "-b", addr)
	if !strings.Contains(r.stdout, "Deleted topic real.") {
		t.Errorf("delete output = %q", r.stdout)
	}
}

func TestTopicDescribeMissing(t *testing.T) {
	t.Parallel() // owns its broker
	addr := startBroker(t)
	createTopic(t, addr, "here", 2)
	wantErr(t, `topic "gone" does not exist`, "", "topic", "describe", "gone", "-b", addr)
	r := mustRun(t, "", "topic", "describe", "gone", "here", "-b", addr, "--if-exists")
	if strings.Contains(r.stdout, "gone") || !strings.Contains(r.stdout, "Topic: here") {
		t.Errorf("describe --if-exists = %q", r.stdout)
	}
}

func TestTopicAlterConfig(t *testing.T) {
	t.Parallel() // owns its broker
	addr := startBroker(t)
	createTopic(t, addr, "cfg", 1)

	r := mustRun(t, "", "topic", "alter-config", "cfg", "-b", addr,
		"--set", "retention.ms=60000", "--set", "max.message.bytes=2000000")
	if !strings.Contains(r.stdout, "Updated config of topic cfg.") {
		t.Errorf("alter-config output = %q", r.stdout)
	}
	r = mustRun(t, "", "topic", "describe", "cfg", "-b", addr)
	if !strings.Contains(r.stdout, "Configs: max.message.bytes=2000000,retention.ms=60000\n") {
		t.Errorf("describe after set = %q", r.stdout)
	}

	mustRun(t, "", "topic", "alter-config", "cfg", "-b", addr, "--delete", "retention.ms")
	r = mustRun(t, "", "topic", "describe", "cfg", "-b", addr)
	if !strings.Contains(r.stdout, "Configs: max.message.bytes=2000000\n") {
		t.Errorf("describe after delete = %q", r.stdout)
	}

	// A value containing commas reaches the broker whole (--set is not
	// split on commas): the list is stored as given, and a bad item is
	// named in the rejection, which changes nothing.
	mustRun(t, "", "topic", "alter-config", "cfg", "-b", addr, "--set", "cleanup.policy=compact,delete")
	r = mustRun(t, "", "topic", "describe", "cfg", "-b", addr)
	if !strings.Contains(r.stdout, "cleanup.policy=compact,delete") || !strings.Contains(r.stdout, "\tCleanupPolicy: compact,delete\t") {
		t.Errorf("describe after setting a list = %q", r.stdout)
	}
	mustRun(t, "", "topic", "alter-config", "cfg", "-b", addr, "--delete", "cleanup.policy")
	r = wantErr(t, `INVALID_CONFIG`, "", "topic", "alter-config", "cfg", "-b", addr, "--set", "cleanup.policy=compact,shred")
	if !strings.Contains(r.err.Error(), `"shred"`) {
		t.Errorf("rejection %q does not name the bad item", r.err)
	}
	r = mustRun(t, "", "topic", "describe", "cfg", "-b", addr)
	if !strings.Contains(r.stdout, "Configs: max.message.bytes=2000000\n") {
		t.Errorf("describe after a rejected set = %q", r.stdout)
	}

	wantErr(t, "nothing to change", "", "topic", "alter-config", "cfg", "-b", addr)
	wantErr(t, `invalid --set "retention.ms"`, "", "topic", "alter-config", "cfg", "-b", addr, "--set", "retention.ms")
	wantErr(t, `topic "nope" does not exist`, "", "topic", "alter-config", "nope", "-b", addr, "--set", "retention.ms=1")
	mustRun(t, "", "topic", "alter-config", "nope", "-b", addr, "--set", "retention.ms=1", "--if-exists")
}

func TestTopicUsageErrors(t *testing.T) {
	t.Parallel() // owns its broker
	addr := startBroker(t)
	wantErr(t, "unknown flag: --bogus", "", "topic", "list", "-b", addr, "--bogus")
	wantErr(t, "accepts 1 arg", "", "topic", "create", "-b", addr)
	wantErr(t, "requires at least 1 arg", "", "topic", "delete", "-b", addr)
	wantErr(t, `invalid --config "retention.ms"`, "", "topic", "create", "x", "-b", addr, "--config", "retention.ms")
	wantErr(t, "invalid --partitions 0", "", "topic", "create", "x", "-b", addr, "--partitions", "0")
	wantErr(t, "invalid --replication-factor 0", "", "topic", "create", "x", "-b", addr, "--replication-factor", "0")
	wantErr(t, `creating topic "x": INVALID_REPLICATION_FACTOR`, "", "topic", "create", "x", "-b", addr, "--replication-factor", "3")
}

func TestTopicBrokerUnreachable(t *testing.T) {
	t.Parallel() // owns its broker
	start := time.Now()
	wantErr(t, "listing topics: cannot connect to broker 127.0.0.1:1: ", "", "topic", "list", "-b", "127.0.0.1:1", "--request-timeout", "500ms")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("unreachable broker took %s to report", d)
	}
}
