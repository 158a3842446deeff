package e2e

import (
	"context"
	"fmt"
	"slices"
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
			if err == nil && s.state == "Stable" && len(s.members) == 2 && g0 >= 0 && g0 == g1 {
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
