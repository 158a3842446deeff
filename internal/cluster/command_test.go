package cluster

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/exactly/exactly/internal/transcript"
)

// TestCatalogTranscripts runs the catalog's commands as the metadata
// quorum applies them (encoded, decoded, applied in order) from the
// transcripts in testdata/catalog. Every command's output ends with the
// state, and every state is also round-tripped through the snapshot form.
func TestCatalogTranscripts(t *testing.T) {
	transcript.Run(t, "testdata/catalog", func(t *testing.T) func(t *testing.T, d *datadriven.TestData) string {
		c := &Catalog{st: newState("test-cluster")}
		return func(t *testing.T, d *datadriven.TestData) string {
			return catalogCommand(t, c, d)
		}
	})
}

func catalogCommand(t *testing.T, c *Catalog, d *datadriven.TestData) string {
	var cmd Command
	switch d.Cmd {
	case "create-topic":
		transcript.Known(t, d, "name", "id", "partitions", "replicas", "internal")
		tp := &Topic{Partitions: 1, Internal: d.HasArg("internal")}
		d.ScanArgs(t, "name", &tp.Name)
		tp.ID = testTopicID(t, d)
		d.MaybeScanArgs(t, "partitions", &tp.Partitions)
		tp.Replicas = parseReplicas(t, d)
		cmd = Command{Op: OpCreateTopic, Topic: tp}
	case "delete-topic":
		transcript.Known(t, d, "name")
		cmd = Command{Op: OpDeleteTopic}
		d.ScanArgs(t, "name", &cmd.Name)
	case "deletion-done":
		transcript.Known(t, d, "id", "node")
		cmd = Command{Op: OpDeletionDone, ID: testTopicID(t, d)}
		d.MaybeScanArgs(t, "node", &cmd.BrokerID)
	case "set-partitions":
		transcript.Known(t, d, "name", "count", "replicas")
		cmd = Command{Op: OpSetPartitions, Replicas: parseReplicas(t, d)}
		d.ScanArgs(t, "name", &cmd.Name)
		d.ScanArgs(t, "count", &cmd.Partitions)
	case "register":
		transcript.Known(t, d, "node", "incarnation", "port")
		b := &Broker{Incarnation: "dir-a"}
		var port int
		d.ScanArgs(t, "node", &b.ID)
		d.MaybeScanArgs(t, "incarnation", &b.Incarnation)
		d.MaybeScanArgs(t, "port", &port)
		b.Listeners = []Endpoint{{Name: "PLAINTEXT", Host: "127.0.0.1", Port: int32(port), SecurityProtocol: "PLAINTEXT"}}
		cmd = Command{Op: OpRegisterBroker, Broker: b}
	case "fence", "unfence":
		transcript.Known(t, d, "node", "epoch")
		cmd = Command{Op: OpFenceBroker}
		if d.Cmd == "unfence" {
			cmd.Op = OpUnfenceBroker
		}
		d.ScanArgs(t, "node", &cmd.BrokerID)
		d.ScanArgs(t, "epoch", &cmd.BrokerEpoch)
	case "place":
		transcript.Known(t, d, "partitions", "rf", "start")
		var n, rf int32 = 1, 1
		start := 0
		d.MaybeScanArgs(t, "partitions", &n)
		d.MaybeScanArgs(t, "rf", &rf)
		d.MaybeScanArgs(t, "start", &start)
		rs, err := Place(c.Brokers(), n, rf, start)
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		return formatReplicas(rs) + "\n"
	case "decode":
		// A raw replicated command, as a quorum member might receive it.
		_, err := DecodeCommand([]byte(strings.TrimSpace(d.Input)))
		if err != nil {
			return "error: " + err.Error() + "\n"
		}
		return "ok\n"
	default:
		d.Fatalf(t, "unknown command %q", d.Cmd)
	}
	data, err := EncodeCommand(cmd)
	if err != nil {
		d.Fatalf(t, "encoding: %v", err)
	}
	out := c.Apply(0, data).(applied)
	var b strings.Builder
	switch r := out.res.(type) {
	case error:
		d.Fatalf(t, "result is an error value: %v", r)
	case *Topic:
		fmt.Fprintf(&b, "-> topic %s\n", formatTopic(r))
	case *Broker:
		fmt.Fprintf(&b, "-> broker %s\n", formatBroker(r))
	}
	if out.err != nil {
		fmt.Fprintf(&b, "error: %v\n", out.err)
	}
	b.WriteString(formatState(c.st))
	// The snapshot form restores the same state.
	snap, err := c.Snapshot()
	if err != nil {
		d.Fatalf(t, "snapshot: %v", err)
	}
	again := &Catalog{st: newState("")}
	if err := again.Restore(snap); err != nil {
		d.Fatalf(t, "restore: %v", err)
	}
	if got := formatState(again.st); got != formatState(c.st) {
		d.Fatalf(t, "the snapshot restores another state:\n%s\nwant\n%s", got, formatState(c.st))
	}
	return b.String()
}

func testTopicID(t *testing.T, d *datadriven.TestData) TopicID {
	var n int
	d.ScanArgs(t, "id", &n)
	var id TopicID
	id[15] = byte(n)
	return id
}

// parseReplicas reads replicas=1,2/3 as [[1 2] [3]] (partitions split by
// '/', replicas by ',').
func parseReplicas(t *testing.T, d *datadriven.TestData) [][]int32 {
	var s string
	if !d.MaybeScanArgs(t, "replicas", &s) {
		return nil
	}
	var out [][]int32
	for _, p := range strings.Split(s, "/") {
		var rs []int32
		for _, r := range strings.Split(p, ",") {
			n, err := strconv.Atoi(r)
			if err != nil {
				d.Fatalf(t, "replicas %q: %v", s, err)
			}
			rs = append(rs, int32(n))
		}
		out = append(out, rs)
	}
	return out
}

func formatReplicas(rs [][]int32) string {
	var parts []string
	for _, p := range rs {
		var ids []string
		for _, id := range p {
			ids = append(ids, strconv.Itoa(int(id)))
		}
		parts = append(parts, strings.Join(ids, ","))
	}
	return strings.Join(parts, "/")
}

func formatTopic(tp *Topic) string {
	s := fmt.Sprintf("%s id=%d partitions=%d", tp.Name, tp.ID[15], tp.Partitions)
	if tp.Replicas != nil {
		s += " replicas=" + formatReplicas(tp.Replicas)
	}
	if tp.Internal {
		s += " internal"
	}
	if len(tp.Pending) > 0 {
		s += fmt.Sprintf(" pending=%v", tp.Pending)
	}
	return s
}

func formatBroker(b *Broker) string {
	s := fmt.Sprintf("%d epoch=%d incarnation=%s", b.ID, b.Epoch, b.Incarnation)
	if b.Fenced {
		s += " fenced"
	}
	return s
}

func formatState(st *state) string {
	var b bytes.Buffer
	c := &Catalog{st: st}
	for _, tp := range c.Topics() {
		fmt.Fprintf(&b, "topic %s\n", formatTopic(tp))
	}
	for _, tp := range st.deleting {
		fmt.Fprintf(&b, "deleting %s\n", formatTopic(tp))
	}
	for _, br := range c.Brokers() {
		fmt.Fprintf(&b, "broker %s\n", formatBroker(br))
	}
	return b.String()
}
