package group

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

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
			if err := m.Replay(h.now(), kv.Key, kv.Value); err != nil {
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
		out := m.CompleteTxn(h.now(), 1, 42, "g1", true)
		m.Persisted(h.now(), out.Persist.Seq)
		if got := m.Committed(); len(got) != 4 || got[2].Offset != 500 {
			t.Errorf("%s: completing the replayed transaction gave %+v", name, got)
		}
	}
}

func consumerMeta(topics ...string) []byte {
	m := kmsg.ConsumerMemberMetadata{Version: 0, Topics: topics}
	return m.AppendTo(nil)
}

// After a persistence failure nothing more is accepted.
func TestPersistFailure(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 1})
	c := h.send("c", commitReq("g", "", nil, -1, "t/0=1"))
	out := h.m.PersistFailed(h.now(), errors.New("disk on fire"))
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
