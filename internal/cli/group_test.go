package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

// shareConsume reads n records of topic with a share consumer of group,
// ACCEPTing each and waiting until the acknowledgements are answered; it
// returns the client (still a member) and the offsets it got, in order.
func shareConsume(t *testing.T, addr, group, topic string, n int) (*kgo.Client, []int64) {
	t.Helper()
	ackErrs := make(chan error, 100)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ShareGroup(group), kgo.ConsumeTopics(topic),
		kgo.ShareAckCallback(func(_ *kgo.Client, rs kgo.ShareAckResults) {
			if err := rs.Error(); err != nil {
				ackErrs <- err
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var offsets []int64
	for len(offsets) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("share consumer got %d of %d records", len(offsets), n)
		}
		if err := fs.Err(); err != nil {
			t.Fatal(err)
		}
		fs.EachRecord(func(r *kgo.Record) { offsets = append(offsets, r.Offset) })
		cl.MarkAcks(kgo.AckAccept)
	}
	if err := cl.FlushAcks(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ackErrs:
		t.Fatalf("acknowledgement refused: %v", err)
	default:
	}
	return cl, offsets
}

// startOffset is a share group's share-partition start offset of topic's
// partition 0 (-1: none).
func startOffset(t *testing.T, adm *kadm.Client, group, topic string) int64 {
	t.Helper()
	d, err := adm.DescribeShareGroupOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := d[group].Offsets.Lookup(topic, 0)
	if !ok {
		return -1
	}
	return o.StartOffset
}

// TestGroupResetShareOffsets: reset-offsets on a share group sets the
// share-partition start offset: a share consumer that accepted everything
// gets every record again after --to-earliest. It refuses while the group
// has members, as the broker does (NON_EMPTY_GROUP).
func TestGroupResetShareOffsets(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{})
	addr := b.Addr()
	mustGroupCLI(t, "topic", "create", "tasks", "-b", addr, "--partitions", "1", "--replication-factor", "1")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("tasks"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Five records an hour old, five from now: --to-datetime lands between.
	old, now := time.Now().Add(-time.Hour), time.Now()
	for i := range 10 {
		ts := old
		if i >= 5 {
			ts = now
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte{byte('a' + i)}, Timestamp: ts}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	// The share group does not exist yet: --share creates its state.
	out := mustGroupCLI(t, "group", "reset-offsets", "-b", addr, "--share", "--group", "workers", "--topic", "tasks", "--to-earliest", "--execute")
	if !strings.Contains(out, "Set 1 share-partition start offsets for share group workers.") || startOffset(t, adm, "workers", "tasks") != 0 {
		t.Fatalf("creating the share group at the earliest offset:\n%s", out)
	}
	first, got := shareConsume(t, addr, "workers", "tasks", 10)
	if fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("first consumer got offsets %v", got)
	}
	if so := startOffset(t, adm, "workers", "tasks"); so != 10 {
		t.Fatalf("start offset %d after every record was accepted, want 10", so)
	}

	// While the consumer is a member, both the command and the broker
	// refuse.
	r := groupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "workers", "--topic", "tasks", "--to-earliest", "--execute")
	if r.err == nil || !strings.Contains(r.err.Error(), "has 1 members") {
		t.Fatalf("reset of a share group with a member: %v\n%s", r.err, r.stdout)
	}
	if _, err := adm.AlterShareGroupOffsets(ctx, "workers", kadm.Offsets{"tasks": {0: {Topic: "tasks", At: 0}}}); !errors.Is(err, kerr.NonEmptyGroup) {
		t.Fatalf("AlterShareGroupOffsets with a member: %v, want NON_EMPTY_GROUP", err)
	}
	waitEmpty := func() {
		for {
			d, err := adm.DescribeShareGroups(ctx, "workers")
			if err == nil && len(d["workers"].Members) == 0 {
				return
			}
			if ctx.Err() != nil {
				t.Fatal("the closed consumer is still a member")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	first.Close()
	waitEmpty()

	// A dry run changes nothing; the reset finds the share group by name.
	out = mustGroupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "workers", "--topic", "tasks", "--to-earliest")
	if rs := rows(out); !strings.Contains(out, "Dry run") || len(rs) < 2 || strings.Join(rs[1], " ") != "workers tasks 0 0" {
		t.Fatalf("dry run:\n%s", out)
	}
	if so := startOffset(t, adm, "workers", "tasks"); so != 10 {
		t.Fatalf("start offset %d after a dry run, want 10", so)
	}
	mustGroupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "workers", "--topic", "tasks", "--to-earliest", "--execute")
	if so := startOffset(t, adm, "workers", "tasks"); so != 0 {
		t.Fatalf("start offset %d after --to-earliest, want 0", so)
	}
	second, got := shareConsume(t, addr, "workers", "tasks", 10)
	if fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("after --to-earliest the consumer got offsets %v, want every record again", got)
	}
	second.Close()
	waitEmpty()

	for _, c := range []struct {
		args []string
		want int64
	}{
		{[]string{"--topic", "tasks", "--to-datetime", now.Add(-time.Minute).UTC().Format(time.RFC3339)}, 5},
		{[]string{"--topic", "tasks:0", "--shift-by", "-2"}, 3},
		{[]string{"--all-topics", "--to-offset", "100"}, 10},
		{[]string{"--all-topics", "--to-offset", "4"}, 4},
		{[]string{"--topic", "tasks", "--to-latest"}, 10},
	} {
		args := append([]string{"group", "reset-offsets", "-b", addr, "--group", "workers", "--execute"}, c.args...)
		mustGroupCLI(t, args...)
		if so := startOffset(t, adm, "workers", "tasks"); so != c.want {
			t.Fatalf("%v: start offset %d, want %d", c.args, so, c.want)
		}
	}
	if r := groupCLI(t, "group", "reset-offsets", "-b", addr, "--group", "workers", "--topic", "tasks", "--to-datetime", "yesterday"); r.err == nil {
		t.Fatal("an unparsable --to-datetime was accepted")
	}
}
