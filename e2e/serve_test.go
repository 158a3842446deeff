package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestServeConfigAndCleanShutdown: server.properties and --set are applied
// (with --set winning), SIGTERM shuts down cleanly with exit status 0, and
// the data is there on the next start.
func TestServeConfigAndCleanShutdown(t *testing.T) {
	dir := t.TempDir()
	props := filepath.Join(dir, "server.properties")
	os.WriteFile(props, []byte("# test config\nnum.partitions=2\nlog.retention.hours=48\nauto.create.topics.enable = true\n"), 0o644)
	data := filepath.Join(dir, "data")
	addr := freePort(t)
	p := startBroker(t, data, addr, "--config", props, "--set", "num.partitions=4")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("auto"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(cl)
	md, err := adm.ListTopics(context.Background(), "auto")
	if err != nil || len(md["auto"].Partitions) != 4 {
		t.Fatalf("auto-created topic has %d partitions (err %v), want 4 from --set", len(md["auto"].Partitions), err)
	}
	rc, err := adm.DescribeTopicConfigs(context.Background(), "auto")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rc[0].Configs {
		if c.Key == "retention.ms" && c.MaybeValue() != "172800000" {
			t.Fatalf("retention.ms %s, want 172800000 from log.retention.hours=48", c.MaybeValue())
		}
	}
	cl.Close()
	p.stop(t)

	p = startBroker(t, data, addr)
	got := testenv.ReadToEnd(t, addr, "auto", false)
	n := 0
	for _, rs := range got {
		n += len(rs)
	}
	if n != 1 {
		t.Fatalf("%d records after restart, want 1", n)
	}
	p.stop(t)
}

// TestServeKafkaShippedConfig: the keys of the server.properties Kafka 4
// ships for a single combined node (KRaft roles, a dynamic quorum
// bootstrapped at its own controller listener, thread pools, socket
// buffers, internal topics of replication factor 1) start a broker that
// clients can use.
func TestServeKafkaShippedConfig(t *testing.T) {
	dir := t.TempDir()
	addr, ctrl := freePort(t), freePort(t)
	_, ctrlPort, _ := strings.Cut(ctrl, ":")
	props := filepath.Join(dir, "server.properties")
	lines := []string{
		"process.roles=broker,controller",
		"node.id=1",
		"controller.quorum.bootstrap.servers=localhost:" + ctrlPort,
		"listeners=PLAINTEXT://" + addr + ",CONTROLLER://" + ctrl,
		"inter.broker.listener.name=PLAINTEXT",
		"advertised.listeners=PLAINTEXT://" + addr + ",CONTROLLER://" + ctrl,
		"controller.listener.names=CONTROLLER",
		"listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
		"num.network.threads=3",
		"num.io.threads=8",
		"socket.send.buffer.bytes=102400",
		"socket.receive.buffer.bytes=102400",
		"socket.request.max.bytes=104857600",
		"log.dirs=" + filepath.Join(dir, "data"),
		"num.partitions=1",
		"num.recovery.threads.per.data.dir=1",
		"offsets.topic.replication.factor=1",
		"share.coordinator.state.topic.replication.factor=1",
		"share.coordinator.state.topic.min.isr=1",
		"transaction.state.log.replication.factor=1",
		"transaction.state.log.min.isr=1",
		"log.retention.hours=168",
		"log.segment.bytes=1073741824",
		"log.retention.check.interval.ms=300000",
	}
	os.WriteFile(props, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	p := startServe(t, addr, "--config", props, "--log-level", "warn")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("shipped"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if got := testenv.ReadToEnd(t, addr, "shipped", true); len(got[0]) != 1 {
		t.Fatalf("read back %v, want the one record", got)
	}
	p.stop(t)
}

func TestServeRejectsBadConfig(t *testing.T) {
	for _, args := range [][]string{
		{"--set", "num.partitions=-3"},
		{"--set", "log.retention.ms"},
		{"--set", "bogus.key=1"},
		// Another node's controller: a cluster this node would split.
		{"--set", "controller.quorum.bootstrap.servers=127.0.0.1:1"},
		{"--config", "/nonexistent/server.properties"},
	} {
		cmd := exec.Command(exactlyBinary(t), append([]string{"serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%v: started with a bad config", args)
			continue
		}
		if !strings.Contains(string(out), "exactly:") || strings.Contains(string(out), "panic") {
			t.Errorf("%v: unclear error:\n%s", args, out)
		}
	}
}
