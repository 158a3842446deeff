package group

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func joinCode(h *harness, tok Token) (*kmsg.JoinGroupResponse, int16) {
	h.t.Helper()
	r := h.reply(tok).(*kmsg.JoinGroupResponse)
	return r, r.ErrorCode
}

func wantCode(t *testing.T, what string, got int16, want *kerr.Error) {
	t.Helper()
	code := int16(0)
	if want != nil {
		code = want.Code
	}
	if got != code {
		t.Fatalf("%s: got %s, want %s", what, errName(got), errName(code))
	}
}

// join runs the KIP-394 two-step join and returns the member id and the
// parked join's token.
func (h *harness) join(client, group string, protocols ...string) (string, Token) {
	h.t.Helper()
	tok := h.send(client, joinReq(group, "", nil, protocols...))
	r, code := joinCode(h, tok)
	wantCode(h.t, "first join", code, kerr.MemberIDRequired)
	return r.MemberID, h.send(client, joinReq(group, r.MemberID, nil, protocols...))
}

func TestTranscriptClassicJoinSyncCommit(t *testing.T) {
	cfg := testConfig()
	cfg.InitialRebalanceDelay = 3 * time.Second
	h := newHarness(t, cfg, map[string]int32{"t": 2})
	h.note("two members arrive within the initial rebalance delay: one rebalance")
	m1, j1 := h.join("c1", "g", "range:t", "roundrobin:t")
	h.advance(2 * time.Second)
	m2, j2 := h.join("c2", "g", "roundrobin:t", "range:t")
	if !h.pending(j1) || !h.pending(j2) {
		t.Fatal("joins answered during the initial delay")
	}
	h.advance(3 * time.Second) // first delay step ends; a member arrived: extend
	h.advance(3 * time.Second)
	r1, _ := joinCode(h, j1)
	r2, _ := joinCode(h, j2)
	if r1.Generation != 1 || r1.LeaderID != m1 || len(r1.Members) != 2 || len(r2.Members) != 0 {
		t.Fatalf("join results: %s / %s", render(r1, h.topics), render(r2, h.topics))
	}
	h.note("follower syncs first and waits for the leader")
	s2 := h.send("c2", syncReq("g", m2, nil, 1))
	if !h.pending(s2) {
		t.Fatal("follower sync answered before the leader's")
	}
	s1 := h.send("c1", syncReq("g", m1, nil, 1, m1+"=p0", m2+"=p1"))
	h.note("the generation is answered once its membership is durable")
	if !h.pending(s1) || !h.pending(s2) {
		t.Fatal("sync answered before the membership record was durable")
	}
	h.durable()
	if got := string(h.reply(s2).(*kmsg.SyncGroupResponse).MemberAssignment); got != "p1" {
		t.Fatalf("follower got assignment %q", got)
	}
	_ = s1
	h.send("c1", hbReq("g", m1, nil, 1))
	h.note("a commit is acknowledged (and visible) only once durable; a fetch of the same group")
	h.note("that arrives meanwhile is answered after it, other groups' fetches at once")
	c := h.send("c1", commitReq("g", m1, nil, 1, "t/0=10", "t/1=20", "nosuch/0=1"))
	f := h.send("c1", fetchReq("g", false, map[string][]int32{"t": {0, 1}}))
	other := h.send("c1", fetchReq("other", false, map[string][]int32{"t": {0}}))
	if !h.pending(c) || !h.pending(f) || h.pending(other) {
		t.Fatal("commit acknowledged, or its group's fetch answered, before durable")
	}
	h.durable()
	if off := h.reply(f).(*kmsg.OffsetFetchResponse).Groups[0].Topics[0].Partitions[0].Offset; off != 10 {
		t.Fatalf("fetch that followed the commit saw %d, want 10", off)
	}
	h.send("c1", fetchReq("g", false, map[string][]int32{"t": {0, 1}}))
	h.send("admin", fetchReq("g", false, nil))
	h.send("admin", &kmsg.DescribeGroupsRequest{Version: 5, Groups: []string{"g", "nosuch"}})
	h.check()
}

func TestTranscriptClassicRebalanceAndGenerations(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 3})
	m1, j1 := h.join("c1", "g", "range:t")
	r1, _ := joinCode(h, j1)
	h.send("c1", syncReq("g", m1, nil, r1.Generation, m1+"=all"))
	h.note("a second member joins: the first hears REBALANCE_IN_PROGRESS and rejoins")
	m2, j2 := h.join("c2", "g", "range:t")
	hb := h.send("c1", hbReq("g", m1, nil, 1))
	wantCode(t, "heartbeat during rebalance", h.reply(hb).(*kmsg.HeartbeatResponse).ErrorCode, kerr.RebalanceInProgress)
	h.note("commits with the current generation are still accepted while preparing")
	c := h.send("c1", commitReq("g", m1, nil, 1, "t/0=5"))
	h.durable()
	wantCode(t, "commit while preparing", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, nil)
	j1 = h.send("c1", joinReq("g", m1, nil, "range:t"))
	r1, _ = joinCode(h, j1)
	r2, _ := joinCode(h, j2)
	if r1.Generation != 2 || r2.Generation != 2 {
		t.Fatalf("generation after rebalance: %d %d", r1.Generation, r2.Generation)
	}
	h.note("during CompletingRebalance a commit is REBALANCE_IN_PROGRESS, an old generation ILLEGAL_GENERATION")
	c = h.send("c2", commitReq("g", m2, nil, 2, "t/1=1"))
	wantCode(t, "commit while completing", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.RebalanceInProgress)
	h.send("c1", syncReq("g", m1, nil, 2, m1+"=a", m2+"=b"))
	h.send("c2", syncReq("g", m2, nil, 2))
	c = h.send("c1", commitReq("g", m1, nil, 1, "t/0=6"))
	wantCode(t, "commit from old generation", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.IllegalGeneration)
	hb = h.send("c1", hbReq("g", m1, nil, 1))
	wantCode(t, "heartbeat from old generation", h.reply(hb).(*kmsg.HeartbeatResponse).ErrorCode, kerr.IllegalGeneration)
	c = h.send("x", commitReq("g", "stranger", nil, 2, "t/0=6"))
	wantCode(t, "commit from unknown member", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.UnknownMemberID)
	c = h.send("x", commitReq("g", "", nil, -1, "t/0=6"))
	wantCode(t, "admin commit to an active group", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.UnknownMemberID)
	h.note("the leader leaves; the follower rejoins and becomes leader")
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Version = 5
	leave.Group = "g"
	leave.Members = []kmsg.LeaveGroupRequestMember{{MemberID: m1}, {MemberID: "ghost"}}
	h.send("c1", leave)
	j2 = h.send("c2", joinReq("g", m2, nil, "range:t"))
	r2, _ = joinCode(h, j2)
	if r2.LeaderID != m2 || r2.Generation != 3 {
		t.Fatalf("after leave: %s", render(r2, h.topics))
	}
	h.check()
}

func TestTranscriptClassicSessionTimeout(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 2})
	m1, j1 := h.join("c1", "g", "range:t")
	h.send("c1", syncReq("g", m1, nil, 1, m1+"=t0,t1"))
	m2, j2 := h.join("c2", "g", "range:t")
	j1 = h.send("c1", joinReq("g", m1, nil, "range:t"))
	joinCode(h, j1)
	joinCode(h, j2)
	h.send("c1", syncReq("g", m1, nil, 2, m1+"=t0", m2+"=t1"))
	h.send("c2", syncReq("g", m2, nil, 2))
	h.note("c2 stops heartbeating; c1 keeps going; c2 is evicted after its 10s session")
	for i := 0; i < 4; i++ {
		h.advance(3 * time.Second)
		h.send("c1", hbReq("g", m1, nil, 2))
	}
	hb := h.send("c1", hbReq("g", m1, nil, 2))
	wantCode(t, "survivor's heartbeat after eviction", h.reply(hb).(*kmsg.HeartbeatResponse).ErrorCode, kerr.RebalanceInProgress)
	j1 = h.send("c1", joinReq("g", m1, nil, "range:t"))
	r1, _ := joinCode(h, j1)
	if len(r1.Members) != 1 || r1.Generation != 3 {
		t.Fatalf("after eviction: %s", render(r1, h.topics))
	}
	h.send("c1", syncReq("g", m1, nil, 3, m1+"=t0,t1"))
	c := h.send("c2", commitReq("g", m2, nil, 2, "t/1=9"))
	wantCode(t, "evicted member's commit", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.UnknownMemberID)
	hb = h.send("c2", hbReq("g", m2, nil, 2))
	wantCode(t, "evicted member's heartbeat", h.reply(hb).(*kmsg.HeartbeatResponse).ErrorCode, kerr.UnknownMemberID)
	h.note("a member that never syncs after a join is removed after the rebalance timeout")
	m3, _ := h.join("c3", "g", "range:t")
	j1 = h.send("c1", joinReq("g", m1, nil, "range:t"))
	h.send("c1", syncReq("g", m1, nil, 4, m1+"=t0", m3+"=t1"))
	h.advance(31 * time.Second)
	h.check()
}

func TestTranscriptStaticMembership(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 2})
	i1, i2 := ptr("inst-1"), ptr("inst-2")
	h.note("static members join without MEMBER_ID_REQUIRED")
	j1 := h.send("c1", joinReq("g", "", i1, "range:t"))
	r1, _ := joinCode(h, j1)
	m1 := r1.MemberID
	h.send("c1", syncReq("g", m1, i1, r1.Generation, m1+"=t0,t1"))
	j2 := h.send("c2", joinReq("g", "", i2, "range:t"))
	h.send("c1", hbReq("g", m1, i1, r1.Generation))
	j1 = h.send("c1", joinReq("g", m1, i1, "range:t"))
	r1, _ = joinCode(h, j1)
	r2, _ := joinCode(h, j2)
	m2 := r2.MemberID
	h.send("c1", syncReq("g", m1, i1, r1.Generation, m1+"=t0", m2+"=t1"))
	h.send("c2", syncReq("g", m2, i2, r1.Generation))
	h.note("inst-2 restarts (new process, no member id): it takes over without a rebalance")
	j := h.send("c2b", joinReq("g", "", i2, "range:t"))
	if !h.pending(j) {
		t.Fatal("static replacement answered before its new member id was durable")
	}
	h.durable()
	r, _ := joinCode(h, j)
	if r.Generation != r1.Generation || r.MemberID == m2 {
		t.Fatalf("static rejoin: %s", render(r, h.topics))
	}
	s := h.send("c2b", syncReq("g", r.MemberID, i2, r.Generation))
	if got := string(h.reply(s).(*kmsg.SyncGroupResponse).MemberAssignment); got != "t1" {
		t.Fatalf("replaced static member got assignment %q", got)
	}
	h.note("the old incarnation is fenced everywhere")
	hb := h.send("c2", hbReq("g", m2, i2, r1.Generation))
	wantCode(t, "fenced heartbeat", h.reply(hb).(*kmsg.HeartbeatResponse).ErrorCode, kerr.FencedInstanceID)
	c := h.send("c2", commitReq("g", m2, i2, r1.Generation, "t/1=3"))
	wantCode(t, "fenced commit", h.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.FencedInstanceID)
	jo := h.send("c2", joinReq("g", m2, i2, "range:t"))
	_, code := joinCode(h, jo)
	wantCode(t, "fenced join", code, kerr.FencedInstanceID)
	h.note("static leave by instance id (as the test suite's cleanup does) triggers a rebalance")
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Version = 5
	leave.Group = "g"
	leave.Members = []kmsg.LeaveGroupRequestMember{{InstanceID: i2}, {MemberID: "wrong", InstanceID: i1}}
	h.send("admin", leave)
	h.send("c1", hbReq("g", m1, i1, r1.Generation))
	h.check()
}

func TestTranscriptProtocolSelection(t *testing.T) {
	h := newHarness(t, testConfig(), nil)
	m1, j1 := h.join("c1", "g", "sticky:x", "range:x")
	_ = m1
	h.note("the leader's join completed alone; the next two members vote")
	j2 := h.send("c2", joinReq("g", "", nil, "range:x", "sticky:x", "roundrobin:x"))
	r2, _ := joinCode(h, j2)
	j2 = h.send("c2", joinReq("g", r2.MemberID, nil, "range:x", "sticky:x", "roundrobin:x"))
	j3 := h.send("c3", joinReq("g", "", nil, "range:x"))
	r3, _ := joinCode(h, j3)
	j3 = h.send("c3", joinReq("g", r3.MemberID, nil, "range:x"))
	j1 = h.send("c1", joinReq("g", m1, nil, "sticky:x", "range:x"))
	if r, _ := joinCode(h, j1); *r.Protocol != "range" {
		t.Fatalf("selected %s, want range (the only protocol all support)", *r.Protocol)
	}
	h.note("a member with no protocol in common, or another protocol type, is refused")
	bad := h.send("c4", joinReq("g", "", nil, "roundrobin:x"))
	_, code := joinCode(h, bad)
	wantCode(t, "no common protocol", code, kerr.InconsistentGroupProtocol)
	other := joinReq("g", "", nil, "range:x")
	other.ProtocolType = "connect"
	_, code = joinCode(h, h.send("c5", other))
	wantCode(t, "other protocol type", code, kerr.InconsistentGroupProtocol)
	short := joinReq("g2", "", nil, "range:x")
	short.SessionTimeoutMillis = 1000
	_, code = joinCode(h, h.send("c6", short))
	wantCode(t, "session timeout below group.min.session.timeout.ms", code, kerr.InvalidSessionTimeout)
	_ = j2
	_ = j3
	h.check()
}

// An old client (JoinGroup v0-v3) joins without KIP-394's extra round trip.
func TestTranscriptClassicOldVersions(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 1})
	req := joinReq("g", "", nil, "range:t")
	req.Version = 2
	j := h.send("py", req)
	r, code := joinCode(h, j)
	wantCode(t, "v2 join", code, nil)
	s := syncReq("g", r.MemberID, nil, r.Generation, r.MemberID+"=a")
	s.Version = 1
	h.send("py", s)
	c := commitReq("g", r.MemberID, nil, r.Generation, "t/0=7")
	c.Version = 2
	h.send("py", c)
	h.durable()
	f := kmsg.NewPtrOffsetFetchRequest()
	f.Version = 1
	f.Group = "g"
	f.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "t", Partitions: []int32{0}}}
	fr := h.send("py", f)
	if got := h.reply(fr).(*kmsg.OffsetFetchResponse).Topics[0].Partitions[0].Offset; got != 7 {
		t.Fatalf("v1 fetch got %d", got)
	}
	l := kmsg.NewPtrLeaveGroupRequest()
	l.Version = 1
	l.Group, l.MemberID = "g", r.MemberID
	h.send("py", l)
	h.send("admin", &kmsg.ListGroupsRequest{Version: 5})
	h.check()
}
