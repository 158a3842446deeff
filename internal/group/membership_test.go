package group

import (
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
			r.now = h.now
			for _, kv := range kvs {
				if err := r.m.Replay(r.now, kv.Key, kv.Value); err != nil {
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
