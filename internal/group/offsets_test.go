package group

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func (h *harness) stage(pid int64, epoch int16, group string, offsets ...TxnOffset) Token {
	h.tok++
	fmt.Fprintf(&h.buf, "%s txn #%d StageTxnOffsets pid=%d epoch=%d group=%s %v\n", h.elapsed(h.now), h.tok, pid, epoch, group, offsets)
	h.record(h.m.StageTxnOffsets(h.now, h.tok, pid, epoch, group, offsets))
	return h.tok
}

func (h *harness) complete(pid int64, group string, commit bool) Token {
	h.tok++
	fmt.Fprintf(&h.buf, "%s txn #%d CompleteTxn pid=%d group=%s commit=%v\n", h.elapsed(h.now), h.tok, pid, group, commit)
	h.record(h.m.CompleteTxn(h.now, h.tok, pid, group, commit))
	return h.tok
}

func (h *harness) validate(group, member string, gen int32, instance *string) error {
	err := h.m.ValidateTxnCommit(group, member, gen, instance)
	fmt.Fprintf(&h.buf, "%s txn ValidateTxnCommit group=%s member=%q gen=%d instance=%s -> %v\n", h.elapsed(h.now), group, member, gen, strp(instance), err)
	return err
}

func fetched(h *harness, tok Token) (int64, int16) {
	h.t.Helper()
	p := h.reply(tok).(*kmsg.OffsetFetchResponse).Groups[0].Topics[0].Partitions[0]
	return p.Offset, p.ErrorCode
}

func TestTranscriptTxnOffsets(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 2})
	m1, j := h.join("c1", "g", "range:t")
	r, _ := joinCode(h, j)
	h.send("c1", syncReq("g", m1, nil, r.Generation, m1+"=all"))
	h.note("KIP-447 checks for TxnOffsetCommit")
	if err := h.validate("g", m1, r.Generation, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		member string
		gen    int32
		inst   *string
		want   *kerr.Error
	}{
		{m1, r.Generation - 1, nil, kerr.IllegalGeneration},
		{"zombie", r.Generation, nil, kerr.UnknownMemberID},
		{"", -1, nil, nil}, // a producer not using group membership
	} {
		if err := h.validate("g", tc.member, tc.gen, tc.inst); !errors.Is(err, errOrNil(tc.want)) || (tc.want == nil) != (err == nil) {
			t.Fatalf("ValidateTxnCommit(%s, %d) = %v, want %v", tc.member, tc.gen, err, tc.want)
		}
	}
	c := h.send("c1", commitReq("g", m1, nil, r.Generation, "t/0=1"))
	h.durable()
	_ = c
	h.note("staged offsets are durable but invisible; RequireStable fetches see them as unstable")
	s := h.stage(7, 0, "g", TxnOffset{Topic: "t", Partition: 0, Offset: 10, LeaderEpoch: -1, Metadata: "m"})
	if !h.pending(s) {
		t.Fatal("staging answered before durable")
	}
	if h.m.HasPendingTxnOffsets("g", "t", 0) {
		t.Fatal("pending before durable")
	}
	h.durable()
	if !h.m.HasPendingTxnOffsets("g", "t", 0) || h.m.HasPendingTxnOffsets("g", "t", 1) {
		t.Fatal("HasPendingTxnOffsets wrong after staging")
	}
	if off, code := fetched(h, h.send("c2", fetchReq("g", true, map[string][]int32{"t": {0}}))); code != kerr.UnstableOffsetCommit.Code || off != -1 {
		t.Fatalf("require-stable fetch: %d %s", off, errName(code))
	}
	if off, _ := fetched(h, h.send("c2", fetchReq("g", false, map[string][]int32{"t": {0}}))); off != 1 {
		t.Fatalf("plain fetch saw %d, want the committed 1", off)
	}
	h.note("commit marker: staged offsets become the committed ones")
	h.complete(7, "g", true)
	h.durable()
	if off, code := fetched(h, h.send("c2", fetchReq("g", true, map[string][]int32{"t": {0}}))); off != 10 || code != 0 {
		t.Fatalf("after commit: %d %s", off, errName(code))
	}
	h.note("abort marker: staged offsets vanish")
	h.stage(8, 3, "g", TxnOffset{Topic: "t", Partition: 1, Offset: 99, LeaderEpoch: -1})
	h.durable()
	h.complete(8, "g", false)
	h.durable()
	if off, _ := fetched(h, h.send("c2", fetchReq("g", true, map[string][]int32{"t": {1}}))); off != -1 {
		t.Fatalf("aborted offset visible: %d", off)
	}
	h.note("completing a transaction that staged nothing answers at once")
	h.complete(9, "g", true)
	h.note("a transaction may stage into a group that does not exist yet")
	h.stage(10, 0, "fresh", TxnOffset{Topic: "t", Partition: 0, Offset: 3, LeaderEpoch: -1})
	h.durable()
	h.send("admin", &kmsg.ListGroupsRequest{Version: 5})
	h.check()
}

func errOrNil(e *kerr.Error) error {
	if e == nil {
		return nil
	}
	return e
}

// Replaying a log — whole, or from a snapshot — rebuilds the same offsets
// and staged transactions.
func TestReplayAndSnapshot(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 3, "u": 1})
	for i := 0; i < 3; i++ {
		h.send("c", commitReq("g1", "", nil, -1, fmt.Sprintf("t/%d=%d", i, 10*i+1)))
	}
	h.send("c", commitReq("g2", "", nil, -1, "u/0=5", "t/0=7"))
	h.durable()
	h.send("c", commitReq("g1", "", nil, -1, "t/0=100"))
	od := kmsg.NewPtrOffsetDeleteRequest()
	od.Group = "g2"
	od.Topics = []kmsg.OffsetDeleteRequestTopic{{Topic: "u", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}}}
	h.send("c", od)
	h.stage(42, 1, "g1", TxnOffset{Topic: "t", Partition: 2, Offset: 500, LeaderEpoch: 4, Metadata: "x"})
	h.stage(43, 1, "g2", TxnOffset{Topic: "u", Partition: 0, Offset: 1, LeaderEpoch: -1})
	h.durable()
	h.complete(43, "g2", false)
	h.send("c", &kmsg.DeleteGroupsRequest{Groups: []string{"g3"}})
	h.send("c", commitReq("g3", "", nil, -1, "u/0=1"))
	h.durable()
	h.send("c", &kmsg.DeleteGroupsRequest{Groups: []string{"g3"}})
	h.durable()

	want := h.m.Committed()
	if len(want) != 4 {
		t.Fatalf("committed: %+v", want)
	}
	replay := func(kvs []KV) *Machine {
		m := NewMachine(Config{NewID: func() string { return "x" }}, h.topics)
		for _, kv := range kvs {
			if err := m.Replay(h.now, kv.Key, kv.Value); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	for name, kvs := range map[string][]KV{
		"whole log":               h.log,
		"snapshot":                h.m.SnapshotRecords(),
		"log then snapshot again": append(append([]KV(nil), h.log...), h.m.SnapshotRecords()...),
		"snapshot then half log":  append(h.m.SnapshotRecords(), h.log[len(h.log)/2:]...),
	} {
		if name == "snapshot then half log" {
			continue // not a valid history: a snapshot is only ever followed by later records
		}
		m := replay(kvs)
		if got := m.Committed(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: committed %+v, want %+v", name, got, want)
		}
		if !m.HasPendingTxnOffsets("g1", "t", 2) || m.HasPendingTxnOffsets("g2", "u", 0) {
			t.Errorf("%s: staged transactions not restored", name)
		}
		if m.LiveRecords() != h.m.LiveRecords() {
			t.Errorf("%s: %d live records, want %d", name, m.LiveRecords(), h.m.LiveRecords())
		}
		// The staged transaction completes after the restart.
		out := m.CompleteTxn(h.now, 1, 42, "g1", true)
		m.Persisted(h.now, out.Persist.Seq)
		if got := m.Committed(); len(got) != 4 || got[2].Offset != 500 {
			t.Errorf("%s: completing the replayed transaction gave %+v", name, got)
		}
	}
}

func TestTranscriptAdmin(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 2, "u": 1})
	m1, j := h.join("c1", "active", `range:`+string(consumerMeta("t")))
	r, _ := joinCode(h, j)
	h.send("c1", syncReq("active", m1, nil, r.Generation, m1+"=x"))
	h.send("c1", commitReq("active", m1, nil, r.Generation, "t/0=4", "u/0=2"))
	h.send("admin", commitReq("idle", "", nil, -1, "t/0=1", "t/1=2"))
	h.durable()
	h.send("admin", &kmsg.ListGroupsRequest{Version: 5})
	h.send("admin", &kmsg.ListGroupsRequest{Version: 5, StatesFilter: []string{"stable"}})
	h.send("admin", &kmsg.ListGroupsRequest{Version: 5, TypesFilter: []string{"consumer"}})
	h.note("offset delete: refused for subscribed topics of an active group, fine otherwise")
	od := kmsg.NewPtrOffsetDeleteRequest()
	od.Group = "active"
	od.Topics = []kmsg.OffsetDeleteRequestTopic{
		{Topic: "t", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}},
		{Topic: "u", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}},
		{Topic: "nosuch", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}},
	}
	h.send("admin", od)
	h.durable()
	od.Group = "nosuch"
	h.send("admin", od)
	h.note("delete groups: not while members remain")
	d := h.send("admin", &kmsg.DeleteGroupsRequest{Version: 2, Groups: []string{"active", "idle", "nosuch"}})
	h.send("admin", commitReq("idle", "", nil, -1, "t/0=9")) // refused: being deleted
	h.send("admin", fetchReq("idle", false, nil))
	h.durable()
	if res := h.reply(d).(*kmsg.DeleteGroupsResponse).Groups; res[0].ErrorCode != kerr.NonEmptyGroup.Code || res[1].ErrorCode != 0 || res[2].ErrorCode != kerr.GroupIDNotFound.Code {
		t.Fatalf("delete groups: %s", render(h.reply(d), h.topics))
	}
	h.send("admin", &kmsg.ListGroupsRequest{Version: 5})
	h.send("admin", commitReq("idle", "", nil, -1, "t/0=9")) // a new incarnation
	h.durable()
	h.note("a deleted topic's offsets go")
	h.send("admin", commitReq("idle", "", nil, -1, "u/0=3"))
	h.durable()
	delete(h.topics.byName, "u")
	h.dropDeleted()
	h.durable()
	h.send("admin", fetchReq("active", false, nil))
	h.note("offsets of groups without members expire after offsets.retention.minutes")
	l := kmsg.NewPtrLeaveGroupRequest()
	l.Version = 5
	l.Group = "active"
	l.Members = []kmsg.LeaveGroupRequestMember{{MemberID: m1}}
	h.send("c1", l)
	h.now = h.now.Add(7*24*time.Hour - time.Minute)
	h.expire()
	h.now = h.now.Add(2 * time.Minute)
	h.expire()
	h.durable()
	h.send("admin", &kmsg.ListGroupsRequest{Version: 5})
	h.note("the next cycle forgets groups left with nothing")
	h.expire()
	h.send("admin", &kmsg.ListGroupsRequest{Version: 5})
	h.check()
}

func consumerMeta(topics ...string) []byte {
	m := kmsg.ConsumerMemberMetadata{Version: 0, Topics: topics}
	return m.AppendTo(nil)
}

// After a persistence failure nothing more is accepted.
func TestPersistFailure(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 1})
	c := h.send("c", commitReq("g", "", nil, -1, "t/0=1"))
	out := h.m.PersistFailed(h.now, errors.New("disk on fire"))
	h.record(out)
	if code := h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode; code != kerr.CoordinatorNotAvailable.Code {
		t.Fatalf("failed commit answered %s", errName(code))
	}
	if len(h.m.Committed()) != 0 {
		t.Fatal("a commit that never became durable took effect")
	}
	_, code := joinCode(h, h.send("c", joinReq("g", "", nil, "range:x")))
	wantCode(t, "join after failure", code, kerr.CoordinatorNotAvailable)
	if err := h.m.ValidateTxnCommit("g", "", -1, nil); !errors.Is(err, kerr.CoordinatorNotAvailable) {
		t.Fatalf("ValidateTxnCommit after failure: %v", err)
	}
}
