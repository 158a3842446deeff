package group

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Replaying the log (whole, or a snapshot of it) restores each classic
// group's last completed generation: its members heartbeat and commit on,
// static members keep their instance ids, a group that emptied or was
// deleted stays gone, and members that never come back expire.
func TestReplayRestoresClassicMembership(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 2})
	inst := "inst-1"
	ja := h.send("a", joinReq("live", "", &inst, "range:t"))
	ra, _ := joinCode(h, ja)
	a := ra.MemberID
	h.send("a", syncReq("live", a, &inst, ra.Generation, a+"=t0,t1"))
	b, jb := h.join("b", "live", "range:t")
	h.send("a", joinReq("live", a, &inst, "range:t"))
	rb, _ := joinCode(h, jb)
	gen := rb.Generation
	h.send("a", syncReq("live", a, &inst, gen, a+"=t0", b+"=t1"))
	h.send("b", syncReq("live", b, nil, gen))
	h.durable()

	e, je := h.join("e", "emptied", "range:t")
	re, _ := joinCode(h, je)
	h.send("e", syncReq("emptied", e, nil, re.Generation, e+"=t0"))
	h.send("e", &kmsg.LeaveGroupRequest{Group: "emptied", MemberID: e})
	d, jd := h.join("d", "deleted", "range:t")
	rd, _ := joinCode(h, jd)
	h.send("d", syncReq("deleted", d, nil, rd.Generation, d+"=t0"))
	h.send("d", &kmsg.LeaveGroupRequest{Group: "deleted", MemberID: d})
	h.send("admin", &kmsg.DeleteGroupsRequest{Groups: []string{"deleted"}})
	h.durable()

	for name, kvs := range map[string][]KV{"whole log": h.log, "snapshot": h.m.SnapshotRecords()} {
		t.Run(name, func(t *testing.T) {
			r := newHarness(t, testConfig(), map[string]int32{"t": 2})
			r.clock.Advance(h.clock.Since(h.now()))
			for _, kv := range kvs {
				if err := r.m.Replay(r.now(), kv.Key, kv.Value); err != nil {
					t.Fatal(err)
				}
			}
			desc := r.reply(r.send("admin", &kmsg.DescribeGroupsRequest{Groups: []string{"live", "emptied", "deleted"}})).(*kmsg.DescribeGroupsResponse)
			live := desc.Groups[0]
			if live.State != "Stable" || len(live.Members) != 2 || live.Protocol != "range" {
				t.Fatalf("live after replay: state %s, %d members, protocol %q", live.State, len(live.Members), live.Protocol)
			}
			for _, m := range live.Members {
				want := map[string]string{a: "t0", b: "t1"}[m.MemberID]
				if string(m.MemberAssignment) != want {
					t.Fatalf("member %s assignment %q, want %q", m.MemberID, m.MemberAssignment, want)
				}
			}
			// Empty, or forgotten (Dead) once a snapshot drops a group
			// that holds nothing: never with its members back.
			if st := desc.Groups[1]; (st.State != "Empty" && st.State != "Dead") || len(st.Members) != 0 {
				t.Fatalf("emptied group came back as %s with %d members", st.State, len(st.Members))
			}
			if desc.Groups[2].ErrorCode != kerr.GroupIDNotFound.Code && desc.Groups[2].State != "Dead" {
				t.Fatalf("deleted group came back as %s", desc.Groups[2].State)
			}
			hb := r.send("b", hbReq("live", b, nil, gen))
			wantCode(t, "heartbeat in the replayed generation", r.reply(hb).(*kmsg.HeartbeatResponse).ErrorCode, nil)
			c := r.send("a", commitReq("live", a, &inst, gen, "t/0=9"))
			r.durable()
			wantCode(t, "commit in the replayed generation", r.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, nil)
			old := r.send("x", commitReq("live", a, &inst, gen-1, "t/0=9"))
			wantCode(t, "commit with an older generation", r.reply(old).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, kerr.IllegalGeneration)

			// b keeps heartbeating, a never comes back: its session
			// (counted from the replay) expires and b must rejoin.
			for range 4 {
				r.advance(3 * time.Second)
				r.send("b", hbReq("live", b, nil, gen))
			}
			hb = r.send("b", hbReq("live", b, nil, gen))
			wantCode(t, "heartbeat after the absent member expired", r.reply(hb).(*kmsg.HeartbeatResponse).ErrorCode, kerr.RebalanceInProgress)
			nj := r.send("b", joinReq("live", b, nil, "range:t"))
			r.advance(time.Second)
			if rj, code := joinCode(r, nj); code != 0 || rj.Generation <= gen || len(rj.Members) != 1 {
				t.Fatalf("rejoin after expiry: %s", render(rj, r.topics))
			}
		})
	}
}

// Replaying the log (whole, or a snapshot) restores KIP-848 groups: every
// member's epoch and partitions, so members heartbeat on with the epoch
// they hold, their commits are accepted, nobody can take a partition that
// is still owned, and a group whose members all left stays empty.
func TestReplayRestoresConsumerGroups(t *testing.T) {
	h := newHarness(t, testConfig(), map[string]int32{"t": 4})
	subs := []string{"t"}
	r1 := cgh(h, h.send("c1", cghReq("g", "m1", 0, subs, map[string][]int32{}, h.topics)))
	r2 := cgh(h, h.send("c2", cghReq("g", "m2", 0, subs, map[string][]int32{}, h.topics)))
	r1 = cgh(h, h.send("c1", cghReq("g", "m1", r1.MemberEpoch, nil, map[string][]int32{"t": {0, 1, 2, 3}}, h.topics)))
	m1Parts := assigned(h, r1, "t") // what m1 keeps; the rest is being revoked
	r1 = cgh(h, h.send("c1", cghReq("g", "m1", r1.MemberEpoch, nil, map[string][]int32{"t": m1Parts}, h.topics)))
	r2 = cgh(h, h.send("c2", cghReq("g", "m2", r2.MemberEpoch, nil, map[string][]int32{}, h.topics)))
	if len(m1Parts) != 2 || len(assigned(h, r2, "t")) != 2 || r1.MemberEpoch != r2.MemberEpoch {
		t.Fatalf("not reconciled: m1 %v %s, m2 %s", m1Parts, render(r1, h.topics), render(r2, h.topics))
	}
	e := cgh(h, h.send("c3", cghReq("gone", "m3", 0, subs, map[string][]int32{}, h.topics)))
	cgh(h, h.send("c3", cghReq("gone", "m3", -1, nil, nil, h.topics)))
	_ = e
	h.durable()
	describe := func(h *harness) string {
		d := h.reply(h.send("admin", &kmsg.ConsumerGroupDescribeRequest{Version: 1, Groups: []string{"g", "gone"}})).(*kmsg.ConsumerGroupDescribeResponse)
		// A group whose members all left is Empty, or forgotten
		// after a replay: never with members again.
		if gone := d.Groups[1]; len(gone.Members) != 0 {
			t.Fatalf("group gone has members: %s", render(d, h.topics))
		}
		d.Groups = d.Groups[:1]
		return render(d, h.topics)
	}
	want := describe(h)

	for name, kvs := range map[string][]KV{"whole log": h.log, "snapshot": h.m.SnapshotRecords()} {
		t.Run(name, func(t *testing.T) {
			r := newHarness(t, testConfig(), map[string]int32{"t": 4})
			r.topics = h.topics
			r.m = NewMachine(r.m.cfg, h.topics)
			r.clock.Advance(h.clock.Since(h.now()))
			for _, kv := range kvs {
				if err := r.m.Replay(r.now(), kv.Key, kv.Value); err != nil {
					t.Fatal(err)
				}
			}
			if got := describe(r); got != want {
				t.Fatalf("after replay:\n%s\nwant:\n%s", got, want)
			}
			hb := cgh(r, r.send("c1", cghReq("g", "m1", r1.MemberEpoch, nil, nil, r.topics)))
			wantCode(t, "heartbeat with the replayed epoch", hb.ErrorCode, nil)
			if hb.MemberEpoch != r1.MemberEpoch {
				t.Fatalf("epoch after replay %d, want %d", hb.MemberEpoch, r1.MemberEpoch)
			}
			c := r.send("c1", commit848("g", "m1", r1.MemberEpoch, fmt.Sprintf("t/%d=5", m1Parts[0])))
			r.durable()
			wantCode(t, "commit with the replayed epoch", r.reply(c).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode, nil)
			// A newcomer gets nothing m1 or m2 still holds.
			n := cgh(r, r.send("c4", cghReq("g", "m4", 0, subs, map[string][]int32{}, r.topics)))
			for _, p := range assigned(r, n, "t") {
				t.Fatalf("newcomer got partition %d that a replayed member still owns", p)
			}
		})
	}
}
