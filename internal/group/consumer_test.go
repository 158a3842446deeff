package group

import (
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// cgh returns a heartbeat's answer, making what it waits on durable first
// (a heartbeat that changed the group is answered after its record is).
func cgh(h *harness, tok Token) *kmsg.ConsumerGroupHeartbeatResponse {
	h.t.Helper()
	if h.pending(tok) {
		h.durable()
	}
	return h.reply(tok).(*kmsg.ConsumerGroupHeartbeatResponse)
}

func assigned(h *harness, r *kmsg.ConsumerGroupHeartbeatResponse, topic string) []int32 {
	if r.Assignment == nil {
		return nil
	}
	for _, t := range r.Assignment.Topics {
		if topicName(t.TopicID, h.topics) == topic {
			return t.Partitions
		}
	}
	return []int32{}
}

func commit848(group, member string, epoch int32, offsets ...string) *kmsg.OffsetCommitRequest {
	return commitReq(group, member, nil, epoch, offsets...)
}

func TestTranscriptConsumerReconcile(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 4})
	subs := []string{"t"}
	h.note("first member gets everything at epoch 1")
	r := cgh(h, h.send("c1", cghReq("g", "m1", 0, subs, map[string][]int32{}, h.topics)))
	if r.MemberEpoch != 1 || !slices.Equal(assigned(h, r, "t"), []int32{0, 1, 2, 3}) {
		t.Fatalf("first join: %s", render(r, h.topics))
	}
	h.note("second member: new target, but t2,t3 are still m1's, so it waits at epoch 2 with nothing")
	r = cgh(h, h.send("c2", cghReq("g", "m2", 0, subs, map[string][]int32{}, h.topics)))
	if r.MemberEpoch != 2 || len(assigned(h, r, "t")) != 0 {
		t.Fatalf("second join: %s", render(r, h.topics))
	}
	h.note("m1 is told to revoke t2,t3 and keeps epoch 1 until it has")
	r = cgh(h, h.send("c1", cghReq("g", "m1", 1, nil, map[string][]int32{"t": {0, 1, 2, 3}}, h.topics)))
	if r.MemberEpoch != 1 || !slices.Equal(assigned(h, r, "t"), []int32{0, 1}) {
		t.Fatalf("revocation: %s", render(r, h.topics))
	}
	h.note("it commits the revoked partitions before letting go (epoch 1 is still current)")
	c := h.send("c1", commit848("g", "m1", 1, "t/2=20", "t/3=30"))
	h.durable()
	wantCode(t, "commit on revoke", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, nil)
	h.note("a keepalive (owned=null) does not release anything")
	h.send("c1", cghReq("g", "m1", 1, nil, nil, h.topics))
	r = cgh(h, h.send("c2", cghReq("g", "m2", 2, nil, map[string][]int32{}, h.topics)))
	if len(assigned(h, r, "t")) != 0 && r.Assignment != nil {
		t.Fatalf("m2 got partitions m1 still holds: %s", render(r, h.topics))
	}
	h.note("m1 reports it released them and moves to epoch 2; then m2 gets them")
	r = cgh(h, h.send("c1", cghReq("g", "m1", 1, nil, map[string][]int32{"t": {0, 1}}, h.topics)))
	if r.MemberEpoch != 2 {
		t.Fatalf("after release: %s", render(r, h.topics))
	}
	r = cgh(h, h.send("c2", cghReq("g", "m2", 2, nil, map[string][]int32{}, h.topics)))
	if !slices.Equal(assigned(h, r, "t"), []int32{2, 3}) {
		t.Fatalf("m2 after release: %s", render(r, h.topics))
	}
	h.note("KIP-1251: an older epoch may commit partitions held since then; newer or foreign ones are stale")
	c = h.send("c1", commit848("g", "m1", 1, "t/0=5", "t/2=21"))
	h.durable()
	res := h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions
	wantCode(t, "old epoch, partition held since then", res[0].ErrorCode, nil)
	wantCode(t, "old epoch, partition moved away", res[1].ErrorCode, kerr.StaleMemberEpoch)
	c = h.send("c1", commit848("g", "m1", 3, "t/0=5"))
	wantCode(t, "future epoch", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.StaleMemberEpoch)
	c = h.send("c9", commit848("g", "nobody", 2, "t/0=5"))
	wantCode(t, "unknown member", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.UnknownMemberID)
	old := commit848("g", "m1", 2, "t/0=5")
	old.Version = 8
	c = h.send("c1", old)
	wantCode(t, "commit below v9 from a consumer-protocol member", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.UnsupportedVersion)
	h.note("a heartbeat from a stale epoch is fenced; OffsetFetch checks the epoch too")
	r = cgh(h, h.send("c2", cghReq("g", "m2", 1, nil, map[string][]int32{"t": {2, 3}}, h.topics)))
	wantCode(t, "stale heartbeat", r.ErrorCode, kerr.FencedMemberEpoch)
	f := fetchReq("g", true, map[string][]int32{"t": {2}})
	f.Groups[0].MemberID, f.Groups[0].MemberEpoch = ptr("m2"), 1
	fr := h.reply(h.send("c2", f)).(*kmsg.OffsetFetchResponse)
	wantCode(t, "fetch with stale epoch", fr.Groups[0].ErrorCode, kerr.StaleMemberEpoch)
	f.Groups[0].MemberEpoch = 2
	h.send("c2", f)
	h.send("admin", &kmsg.ConsumerGroupDescribeRequest{Version: 1, Groups: []string{"g", "nosuch"}})
	h.send("admin", &kmsg.DescribeGroupsRequest{Version: 6, Groups: []string{"g"}})
	h.note("m2 goes silent: after the 45s session m1 gets everything back")
	for i := 0; i < 10; i++ {
		h.advance(5 * time.Second)
		h.send("c1", cghReq("g", "m1", r1epoch(h, "m1"), nil, nil, h.topics))
	}
	r = cgh(h, h.send("c1", cghReq("g", "m1", r1epoch(h, "m1"), subs, map[string][]int32{"t": {0, 1}}, h.topics)))
	if !slices.Equal(assigned(h, r, "t"), []int32{0, 1, 2, 3}) {
		t.Fatalf("after m2's eviction: %s", render(r, h.topics))
	}
	r = cgh(h, h.send("c2", cghReq("g", "m2", 2, nil, map[string][]int32{"t": {2, 3}}, h.topics)))
	wantCode(t, "evicted member's heartbeat", r.ErrorCode, kerr.UnknownMemberID)
	h.note("m1 leaves: the group is empty")
	h.send("c1", cghReq("g", "m1", -1, nil, nil, h.topics))
	h.send("admin", &kmsg.ListGroupsRequest{Version: 5})
	h.check()
}

// r1epoch is the member's current epoch (the heartbeat loop of a real
// client would know it).
func r1epoch(h *harness, member string) int32 {
	for _, g := range h.m.groups {
		if g.cg != nil {
			if cm := g.cg.members[member]; cm != nil {
				return cm.epoch
			}
		}
	}
	return -3
}

func TestTranscriptConsumerStatic(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 2})
	join := func(client, member, instance string) *kmsg.ConsumerGroupHeartbeatResponse {
		req := cghReq("g", member, 0, []string{"t"}, map[string][]int32{}, h.topics)
		req.InstanceID = ptr(instance)
		return cgh(h, h.send(client, req))
	}
	join("c1", "a1", "i1")
	join("c2", "b1", "i2")
	h.send("c1", cghReq("g", "a1", 1, nil, map[string][]int32{"t": {0, 1}}, h.topics))
	h.send("c1", cghReq("g", "a1", 1, nil, map[string][]int32{"t": {0}}, h.topics))
	r := cgh(h, h.send("c2", cghReq("g", "b1", 2, nil, map[string][]int32{}, h.topics)))
	if !slices.Equal(assigned(h, r, "t"), []int32{1}) {
		t.Fatalf("b1: %s", render(r, h.topics))
	}
	h.note("i2 bounces: static leave keeps its partition reserved; its next incarnation takes it over, same epoch")
	leave := cghReq("g", "b1", -2, nil, nil, h.topics)
	leave.InstanceID = ptr("i2")
	h.send("c2", leave)
	r = cgh(h, h.send("c1", cghReq("g", "a1", 2, nil, map[string][]int32{"t": {0}}, h.topics)))
	if r.Assignment != nil && len(assigned(h, r, "t")) != 1 {
		t.Fatalf("a1 got i2's partition while i2 was away: %s", render(r, h.topics))
	}
	r = join("c2b", "b2", "i2")
	if !slices.Equal(assigned(h, r, "t"), []int32{1}) || r.MemberEpoch != 2 {
		t.Fatalf("static rejoin: %s", render(r, h.topics))
	}
	h.note("a second process with i1 while a1 is active: UNRELEASED_INSTANCE_ID")
	r = join("c1x", "a2", "i1")
	wantCode(t, "instance in use", r.ErrorCode, kerr.UnreleasedInstanceID)
	hb := cghReq("g", "b1", 2, nil, nil, h.topics)
	hb.InstanceID = ptr("i2")
	r = cgh(h, h.send("c2", hb))
	wantCode(t, "old incarnation", r.ErrorCode, kerr.FencedInstanceID)
	h.note("a static member that left and never returns is removed after its session")
	leave = cghReq("g", "b2", -2, nil, nil, h.topics)
	leave.InstanceID = ptr("i2")
	h.send("c2b", leave)
	for i := 0; i < 10; i++ {
		h.advance(5 * time.Second)
		h.send("c1", cghReq("g", "a1", r1epoch(h, "a1"), nil, map[string][]int32{"t": {0}}, h.topics))
	}
	h.send("admin", &kmsg.ConsumerGroupDescribeRequest{Version: 1, Groups: []string{"g"}})
	h.check()
}

func TestTranscriptConsumerSubscriptions(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"orders": 2, "other": 1})
	req := cghReq("g", "m1", 0, nil, map[string][]int32{}, h.topics)
	req.SubscribedTopicRegex = ptr("ord.*")
	r := cgh(h, h.send("c1", req))
	if !slices.Equal(assigned(h, r, "orders"), []int32{0, 1}) || assigned(h, r, "other") != nil && len(assigned(h, r, "other")) > 0 {
		t.Fatalf("regex join: %s", render(r, h.topics))
	}
	h.note("a matching topic appears and orders grows: the next heartbeat gets a new epoch and assignment")
	h.topics.add("ordinals", 1)
	h.topics.add("orders", 3)
	r = cgh(h, h.send("c1", cghReq("g", "m1", 1, nil, map[string][]int32{"orders": {0, 1}}, h.topics)))
	if r.MemberEpoch != 2 || !slices.Equal(assigned(h, r, "orders"), []int32{0, 1, 2}) || !slices.Equal(assigned(h, r, "ordinals"), []int32{0}) {
		t.Fatalf("after metadata change: %s", render(r, h.topics))
	}
	h.note("a range-assignor member joins by name; the group switches to the assignor its members ask for")
	req = cghReq("g", "m2", 0, []string{"orders"}, map[string][]int32{}, h.topics)
	req.ServerAssignor = ptr("range")
	h.send("c2", req)
	h.send("c1", cghReq("g", "m1", 2, nil, map[string][]int32{"orders": {0, 1, 2}, "ordinals": {0}}, h.topics))
	h.send("admin", &kmsg.ConsumerGroupDescribeRequest{Version: 1, Groups: []string{"g"}})
	h.note("invalid requests")
	bad := cghReq("g", "m3", 0, []string{"orders"}, map[string][]int32{}, h.topics)
	bad.ServerAssignor = ptr("sticky")
	wantCode(t, "unknown assignor", cgh(h, h.send("c3", bad)).ErrorCode, kerr.UnsupportedAssignor)
	bad = cghReq("g", "m3", 0, nil, map[string][]int32{}, h.topics)
	bad.SubscribedTopicRegex = ptr("(")
	wantCode(t, "bad regex", cgh(h, h.send("c3", bad)).ErrorCode, kerr.InvalidRegularExpression)
	bad = cghReq("g", "m3", 0, []string{"orders"}, map[string][]int32{"orders": {0}}, h.topics)
	wantCode(t, "join owning partitions", cgh(h, h.send("c3", bad)).ErrorCode, kerr.InvalidRequest)
	bad = cghReq("g", "", 0, []string{"orders"}, map[string][]int32{}, h.topics)
	wantCode(t, "v1 without member id", cgh(h, h.send("c3", bad)).ErrorCode, kerr.InvalidRequest)
	h.note("a classic member cannot join an active consumer group, nor the reverse")
	_, code := joinCode(h, h.send("c4", joinReq("g", "", nil, "range:x")))
	wantCode(t, "classic join to consumer group", code, kerr.InconsistentGroupProtocol)
	h.send("c5", joinReq("classic", "", nil, "range:x"))
	j := h.send("c5", joinReq("classic", "c5-id1", nil, "range:x"))
	_ = j
	wantCode(t, "consumer heartbeat to classic group", cgh(h, h.send("c6", cghReq("classic", "z", 0, []string{"orders"}, map[string][]int32{}, h.topics))).ErrorCode, kerr.GroupIDNotFound)
	h.check()
}
