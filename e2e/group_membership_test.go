package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestGroupMembershipSurvivesBrokerKill: a classic group's last completed
// generation (members, leader, assignments) is durable, so after a broker
// SIGKILL and restart the members carry on in the same generation with the
// same partitions — no rebalance, and above all no fresh group in which a
// new leader hands a live member's partitions to someone else while it is
// still processing them. A group that emptied before the kill stays empty.
func TestGroupMembershipSurvivesBrokerKill(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	b := startBroker(t, dir, addr, "--set", "group.initial.rebalance.delay.ms=0")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	admCl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopic(ctx, 4, 1, nil, "members"); err != nil {
		t.Fatal(err)
	}

	// Two members of "live" keep polling; "gone" is joined and left.
	var members []*kgo.Client
	for i := range 2 {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup("live"), kgo.ConsumeTopics("members"),
			kgo.ClientID(fmt.Sprintf("m%d", i)), kgo.HeartbeatInterval(200*time.Millisecond),
			kgo.SessionTimeout(20*time.Second), kgo.RetryTimeout(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		members = append(members, cl)
		go func() {
			for ctx.Err() == nil {
				pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				cl.PollRecords(pctx, 10)
				pcancel()
			}
		}()
	}
	gone, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup("gone"), kgo.ConsumeTopics("members"))
	if err != nil {
		t.Fatal(err)
	}

	type snapshot struct {
		state      string
		generation int32
		members    []string // member id = assigned partitions
	}
	describe := func(group string) (snapshot, error) {
		d, err := adm.DescribeGroups(ctx, group)
		if err != nil {
			return snapshot{}, err
		}
		g := d[group]
		if g.Err != nil {
			return snapshot{}, g.Err
		}
		s := snapshot{state: g.State}
		for _, m := range g.Members {
			var parts []int32
			if ca, ok := m.Assigned.AsConsumer(); ok {
				for _, tp := range ca.Topics {
					parts = append(parts, tp.Partitions...)
				}
			}
			slices.Sort(parts)
			s.members = append(s.members, fmt.Sprintf("%s=%v", m.MemberID, parts))
		}
		slices.Sort(s.members)
		return s, nil
	}
	stable := func() snapshot {
		t.Helper()
		for ctx.Err() == nil {
			s, err := describe("live")
			_, g0 := members[0].GroupMetadata()
			_, g1 := members[1].GroupMetadata()
			// Cooperative rebalancing passes through a stable generation
			// in which the newer member owns nothing yet; the snapshot
			// must be the settled one, or a rebalance that completes
			// after it changes what the restart should restore.
			settled := !slices.ContainsFunc(s.members, func(m string) bool { return strings.HasSuffix(m, "=[]") })
			if err == nil && s.state == "Stable" && len(s.members) == 2 && settled && g0 >= 0 && g0 == g1 {
				s.generation = g0
				return s
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatal("group live never became stable with both members")
		return snapshot{}
	}
	before := stable()

	for ctx.Err() == nil {
		pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
		gone.PollRecords(pctx, 1)
		pcancel()
		if s, err := describe("gone"); err == nil && s.state == "Stable" {
			break
		}
	}
	gone.Close() // leaves: the group is Empty before the kill

	b.kill()
	b = startBroker(t, dir, addr, "--set", "group.initial.rebalance.delay.ms=0")

	// The group is back as it was before any member has talked to the
	// new process (DescribeGroups needs no membership).
	after, err := describe("live")
	if err != nil {
		t.Fatal(err)
	}
	if after.state != "Stable" || !slices.Equal(after.members, before.members) {
		t.Fatalf("after restart group live is %s %v, want Stable %v", after.state, after.members, before.members)
	}
	if s, err := describe("gone"); err != nil || s.state != "Empty" || len(s.members) != 0 {
		t.Fatalf("group gone after restart: %+v %v, want Empty without members", s, err)
	}

	// Members heartbeat on in the same generation and their commits,
	// made with it, are accepted.
	time.Sleep(2 * time.Second)
	for i, cl := range members {
		if _, g := cl.GroupMetadata(); g != before.generation {
			t.Fatalf("member %d is in generation %d after the restart, want %d (no rebalance)", i, g, before.generation)
		}
		var commitErr error
		done := make(chan struct{})
		cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{"members": {int32(i): {Epoch: -1, Offset: 0}}},
			func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				defer close(done)
				if err != nil {
					commitErr = err
					return
				}
				for _, rt := range resp.Topics {
					for _, rp := range rt.Partitions {
						if rp.ErrorCode != 0 {
							commitErr = fmt.Errorf("partition %d: error code %d", rp.Partition, rp.ErrorCode)
						}
					}
				}
			})
		<-done
		if commitErr != nil {
			t.Fatalf("member %d commit with its pre-restart generation: %v", i, commitErr)
		}
	}
	final, err := describe("live")
	if err != nil || final.state != "Stable" || !slices.Equal(final.members, before.members) {
		t.Fatalf("group live drifted after the restart: %+v %v, want %v", final, err, before.members)
	}
}

// TestConsumerGroupMembershipSurvivesBrokerKill is the KIP-848 twin: the
// group's epochs and each member's partitions are durable, so after a
// broker SIGKILL and restart the members keep their epoch and partitions
// (no partition is lost or revoked), their commits with that epoch are
// accepted, and a member that joins afterwards is balanced in without a
// partition ever having two owners.
func TestConsumerGroupMembershipSurvivesBrokerKill(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	fast := []string{"--set", "group.consumer.heartbeat.interval.ms=300"}
	b := startBroker(t, dir, addr, fast...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admCl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer admCl.Close()
	if _, err := kadm.NewClient(admCl).CreateTopic(ctx, 4, 1, nil, "members848"); err != nil {
		t.Fatal(err)
	}

	type tracked struct {
		cl     *kgo.Client
		mu     sync.Mutex
		owned  map[int32]bool
		losses int // partitions revoked or lost
	}
	join := func(name string) *tracked {
		tr := &tracked{owned: map[int32]bool{}}
		drop := func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			tr.mu.Lock()
			defer tr.mu.Unlock()
			for _, p := range m["members848"] {
				delete(tr.owned, p)
				tr.losses++
			}
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup("live848"), kgo.ConsumeTopics("members848"),
			kgo.ServerSideBalancer(), kgo.ClientID(name), kgo.RetryTimeout(time.Minute),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				tr.mu.Lock()
				defer tr.mu.Unlock()
				for _, p := range m["members848"] {
					tr.owned[p] = true
				}
			}),
			kgo.OnPartitionsRevoked(drop), kgo.OnPartitionsLost(drop))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		tr.cl = cl
		go func() {
			for ctx.Err() == nil {
				pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
				cl.PollRecords(pctx, 10)
				pcancel()
			}
		}()
		return tr
	}
	snapshot := func(trs ...*tracked) (owned [][]int32, losses int) {
		for _, tr := range trs {
			tr.mu.Lock()
			var ps []int32
			for p := range tr.owned {
				ps = append(ps, p)
			}
			slices.Sort(ps)
			owned = append(owned, ps)
			losses += tr.losses
			tr.mu.Unlock()
		}
		return owned, losses
	}
	// exclusive checks that no partition has two owners and reports
	// whether all four are owned.
	exclusive := func(owned [][]int32) bool {
		seen := map[int32]bool{}
		for _, ps := range owned {
			for _, p := range ps {
				if seen[p] {
					t.Fatalf("partition %d owned twice: %v", p, owned)
				}
				seen[p] = true
			}
		}
		return len(seen) == 4
	}
	// A member that comes and goes first lifts the group epoch well
	// above where a fresh coordinator would start.
	x := join("x")
	for ctx.Err() == nil {
		if owned, _ := snapshot(x); len(owned[0]) == 4 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	a, bm := join("a"), join("b")
	for ctx.Err() == nil {
		if owned, _ := snapshot(a, bm, x); len(owned[0]) > 0 && len(owned[1]) > 0 && exclusive(owned) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	x.cl.Close()
	var before [][]int32
	var lossesBefore int
	for {
		owned, losses := snapshot(a, bm)
		if exclusive(owned) && len(owned[0]) == 2 && len(owned[1]) == 2 {
			before, lossesBefore = owned, losses
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("group never settled: %v", owned)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the epochs settle after x left
	_, epochA := a.cl.GroupMetadata()
	_, epochB := bm.cl.GroupMetadata()
	owned, losses := snapshot(a, bm)
	before, lossesBefore = owned, losses
	if epochA < 4 || epochB < 4 {
		t.Fatalf("member epochs %d and %d: expected the group to have moved past epoch 3", epochA, epochB)
	}

	adm := kadm.NewClient(admCl)
	describe := func() (string, error) {
		d, err := adm.DescribeConsumerGroups(ctx, "live848")
		if err != nil {
			return "", err
		}
		g := d["live848"]
		if g.Err != nil {
			return "", g.Err
		}
		var ms []string
		for _, m := range g.Members {
			ps := m.Assignment.Sorted()

			ms = append(ms, fmt.Sprintf("%s@%d=%v", m.MemberID, m.MemberEpoch, ps))
		}
		slices.Sort(ms)
		return fmt.Sprintf("%s epoch %d %v", g.State, g.Epoch, ms), nil
	}
	described, err := describe()
	if err != nil {
		t.Fatal(err)
	}

	b.kill()
	b = startBroker(t, dir, addr, fast...)
	// Before any member has talked to the new process, the group is
	// back as it was: epochs, members and their partitions.
	if got, err := describe(); err != nil || got != described {
		t.Fatalf("after the restart the group is %q (%v), before it was %q", got, err, described)
	}
	time.Sleep(3 * time.Second) // about ten heartbeats against the new process

	owned, losses = snapshot(a, bm)
	if !slices.EqualFunc(owned, before, slices.Equal) || losses != lossesBefore {
		t.Fatalf("after the restart the members own %v (%d partitions revoked or lost), before %v (%d)", owned, losses, before, lossesBefore)
	}
	if _, e := a.cl.GroupMetadata(); e != epochA {
		t.Fatalf("member a moved from epoch %d to %d across the restart", epochA, e)
	}
	if _, e := bm.cl.GroupMetadata(); e != epochB {
		t.Fatalf("member b moved from epoch %d to %d across the restart", epochB, e)
	}
	for name, tr := range map[string]*tracked{"a": a, "b": bm} {
		tr.mu.Lock()
		var p int32 = -1
		for q := range tr.owned {
			p = q
		}
		tr.mu.Unlock()
		err := tr.cl.CommitRecords(ctx, &kgo.Record{Topic: "members848", Partition: p, Offset: 0, LeaderEpoch: -1})
		if err != nil {
			t.Fatalf("member %s commit for its partition %d after the restart: %v", name, p, err)
		}
	}

	// A third member joins after the restart: partitions move only
	// through revocation, never to two owners at once.
	c := join("c")
	deadline := time.Now().Add(60 * time.Second)
	for {
		owned, _ := snapshot(a, bm, c)
		if exclusive(owned) && len(owned[2]) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("third member never got partitions: %v", owned)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
