package cli

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupCLI runs `exactly args...` with the group command registered.
func groupCLI(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	root := &cobra.Command{Use: "exactly", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(TopicCommand(), GroupCommand())
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(context.Background())
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

func mustGroupCLI(t *testing.T, args ...string) string {
	t.Helper()
	r := groupCLI(t, args...)
	if r.err != nil {
		t.Fatalf("exactly %s: %v\n%s%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r.stdout
}

// fields splits a table into rows of whitespace-separated cells.
func rows(out string) [][]string {
	var rs [][]string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			rs = append(rs, f)
		}
	}
	return rs
}

func committedAt(t *testing.T, adm *kadm.Client, group, topic string, p int32) int64 {
	t.Helper()
	os, err := adm.FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := os.Lookup(topic, p)
	return o.At
}

func TestGroupCommand(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{"group.initial.rebalance.delay.ms": "0"}})
	addr := b.Addr()
	mustGroupCLI(t, "topic", "create", "orders", "-b", addr, "--partitions", "2", "--replication-factor", "1")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 10; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "orders", Partition: int32(i % 2), Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := kadm.NewClient(cl)

	// An active consumer that processed and committed three records of
	// each partition.
	consumer, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ClientID("cli-test-consumer"), kgo.ConsumerGroup("cg"),
		kgo.ConsumeTopics("orders"), kgo.DisableAutoCommit())
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	got := 0
	for got < 10 {
		fs := consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("timed out consuming")
		}
		got += fs.NumRecords()
	}
	member, _ := consumer.GroupMetadata()
	var commitErr error
	consumer.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{"orders": {0: {Epoch: -1, Offset: 3}, 1: {Epoch: -1, Offset: 3}}},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			commitErr = err
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil && commitErr == nil {
						commitErr = err
					}
				}
			}
		})
	if commitErr != nil {
		t.Fatal(commitErr)
	}

	if out := mustGroupCLI(t, "group", "list", "-b", addr); strings.TrimSpace(out) != "cg" {
		t.Fatalf("group list = %q", out)
	}
	out := mustGroupCLI(t, "group", "list", "-b", addr, "--state")
	if !regexp.MustCompile(`(?m)^cg\s+consumer\s+Stable\s*$`).MatchString(out) {
		t.Fatalf("group list --state:\n%s", out)
	}
	out = mustGroupCLI(t, "group", "describe", "cg", "-b", addr)
	rs := rows(out)
	if len(rs) != 3 || strings.Join(rs[0], " ") != "GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID" {
		t.Fatalf("describe:\n%s", out)
	}
	for i, r := range rs[1:] {
		if r[0] != "cg" || r[1] != "orders" || r[2] != []string{"0", "1"}[i] || r[3] != "3" || r[4] != "5" || r[5] != "2" ||
			r[6] != member || r[7] != "/127.0.0.1" || r[8] != "cli-test-consumer" {
			t.Fatalf("describe row %v:\n%s", r, out)
		}
	}
	out = mustGroupCLI(t, "group", "describe", "cg", "-b", addr, "--members")
	if rs := rows(out); len(rs) != 2 || rs[1][1] != member || rs[1][4] != "2" {
		t.Fatalf("describe --members:\n%s", out)
	}
	out = mustGroupCLI(t, "group", "describe", "cg", "-b", addr, "--state")
	if rs := rows(out); len(rs) != 2 || rs[1][len(rs[1])-2] != "Stable" || rs[1][len(rs[1])-1] != "1" {
		t.Fatalf("describe --state:\n%s", out)
	}

	// Resetting needs an inactive group.
	r := groupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "cg", "--topic", "orders", "--to-earliest", "--execute")
	if r.err == nil || !strings.Contains(r.err.Error(), "inactive") {
		t.Fatalf("reset of an active group: %v", r.err)
	}
	if r := groupCLI(t, "group", "delete", "cg", "-b", addr); r.err == nil || !strings.Contains(r.err.Error(), "not empty") {
		t.Fatalf("delete of an active group: %v", r.err)
	}
	consumer.Close()

	out = mustGroupCLI(t, "group", "describe", "cg", "-b", addr)
	if !strings.Contains(out, "Consumer group 'cg' has no active members.") || !strings.Contains(out, "orders  0          3               5               2    -") {
		t.Fatalf("describe of an inactive group:\n%s", out)
	}
	out = mustGroupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "cg", "--topic", "orders", "--to-earliest")
	if !strings.Contains(out, "Dry run") || committedAt(t, adm, "cg", "orders", 0) != 3 {
		t.Fatalf("dry run changed offsets or said nothing:\n%s", out)
	}
	if rs := rows(out); rs[1][3] != "0" || rs[2][3] != "0" {
		t.Fatalf("dry run plan:\n%s", out)
	}
	mustGroupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "cg", "--topic", "orders:1", "--shift-by", "-2", "--execute")
	if a, b := committedAt(t, adm, "cg", "orders", 0), committedAt(t, adm, "cg", "orders", 1); a != 3 || b != 1 {
		t.Fatalf("after --shift-by -2 on partition 1: %d %d", a, b)
	}
	mustGroupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "cg", "--all-topics", "--to-offset", "100", "--execute")
	if a, b := committedAt(t, adm, "cg", "orders", 0), committedAt(t, adm, "cg", "orders", 1); a != 5 || b != 5 {
		t.Fatalf("after --to-offset 100 (clamped): %d %d", a, b)
	}
	mustGroupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "cg", "--topic", "orders", "--to-earliest", "--execute")
	if a := committedAt(t, adm, "cg", "orders", 0); a != 0 {
		t.Fatalf("after --to-earliest: %d", a)
	}
	if r := groupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "cg", "--topic", "orders", "--to-earliest", "--to-latest"); r.err == nil {
		t.Fatal("two reset modes accepted")
	}

	out = mustGroupCLI(t, "group", "delete", "cg", "-b", addr)
	if !strings.Contains(out, "Deleted consumer group cg.") {
		t.Fatalf("delete: %q", out)
	}
	if out := mustGroupCLI(t, "group", "list", "-b", addr); strings.TrimSpace(out) != "" {
		t.Fatalf("groups after delete: %q", out)
	}
	if r := groupCLI(t, "group", "delete", "cg", "-b", addr); r.err == nil || !strings.Contains(r.err.Error(), "does not exist") {
		t.Fatalf("deleting a missing group: %v", r.err)
	}
	if r := groupCLI(t, "group", "describe", "nosuch", "-b", addr); r.err == nil || !strings.Contains(r.err.Error(), "does not exist") {
		t.Fatalf("describing a missing group: %v", r.err)
	}
}

// TestGroupShareCommands: share groups in `group list --type share` and
// `group describe --share`, and kept out of the committed-offsets view.
func TestGroupShareCommands(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{})
	addr := b.Addr()
	mustGroupCLI(t, "topic", "create", "jobs", "-b", addr, "--partitions", "1", "--replication-factor", "1")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("jobs"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for range 5 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := kadm.NewClient(cl)
	if _, err := adm.CommitOffsets(ctx, "classic-g", kadm.OffsetsFromRecords(kgo.Record{Topic: "jobs", Offset: 0})); err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrAlterShareGroupOffsetsRequest()
	req.GroupID = "share-g"
	req.Topics = []kmsg.AlterShareGroupOffsetsRequestTopic{{Topic: "jobs", Partitions: []kmsg.AlterShareGroupOffsetsRequestTopicPartition{{Partition: 0, StartOffset: 2}}}}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || resp.ErrorCode != 0 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("AlterShareGroupOffsets: %v %+v", err, resp)
	}

	if out := mustGroupCLI(t, "group", "list", "-b", addr, "--type", "share"); strings.TrimSpace(out) != "share-g" {
		t.Fatalf("group list --type share:\n%s", out)
	}
	if out := mustGroupCLI(t, "group", "list", "-b", addr, "--type", "classic"); strings.TrimSpace(out) != "classic-g" {
		t.Fatalf("group list --type classic:\n%s", out)
	}
	if r := groupCLI(t, "group", "list", "-b", addr, "--type", "queue"); r.err == nil {
		t.Fatal("an unknown --type was accepted")
	}
	out := mustGroupCLI(t, "group", "describe", "--share", "share-g", "-b", addr)
	found := false
	for _, r := range rows(out) {
		if len(r) == 5 && r[0] == "jobs" {
			found = true
			if r[1] != "0" || r[2] != "2" || r[3] != "3" {
				t.Fatalf("share group partition row %v, want jobs 0 2 3 (SPSO 2, 3 records to go)", r)
			}
		}
	}
	if !found {
		t.Fatalf("no partition row in:\n%s", out)
	}
	// The committed-offsets view of every group is not broken by a share
	// group (which has none).
	if out := mustGroupCLI(t, "group", "describe", "--all-groups", "-b", addr); !strings.Contains(out, "classic-g") || strings.Contains(out, "share-g") {
		t.Fatalf("group describe --all-groups:\n%s", out)
	}
}
