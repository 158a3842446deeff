package e2e

// Consumer group tests with real franz-go clients against the embedded
// broker: eviction of a member that stops heartbeating (classic and
// KIP-848) with its partitions moving, and the fencing errors a zombie gets
// (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID,
// STALE_MEMBER_EPOCH, FENCED_MEMBER_EPOCH).

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// freezer is a TCP proxy in front of the broker whose traffic can be
// stopped, to make a live client look dead to the broker (no heartbeats)
// without closing its connections.
type freezer struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	frozen bool
	wake   chan struct{}
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target, wake: make(chan struct{})}
	t.Cleanup(func() { f.thaw(); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go f.pipe(c, s)
			go f.pipe(s, c)
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.waitThawed()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			return
		}
	}
}

func (f *freezer) waitThawed() {
	f.mu.Lock()
	for f.frozen {
		w := f.wake
		f.mu.Unlock()
		<-w
		f.mu.Lock()
	}
	f.mu.Unlock()
}

func (f *freezer) freeze() {
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
}

func (f *freezer) thaw() {
	f.mu.Lock()
	if f.frozen {
		f.frozen = false
		close(f.wake)
		f.wake = make(chan struct{})
	}
	f.mu.Unlock()
}

// dialer routes every connection of a client through the freezer.
func (f *freezer) dialer(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, f.ln.Addr().String())
}

func groupBroker(t *testing.T, extra map[string]string) *exactly.Broker {
	cfg := map[string]string{
		"group.initial.rebalance.delay.ms":     "0",
		"group.min.session.timeout.ms":         "1000",
		"group.consumer.session.timeout.ms":    "3000",
		"group.consumer.heartbeat.interval.ms": "500",
	}
	for k, v := range extra {
		cfg[k] = v
	}
	return exactly.NewTestBroker(t, exactly.Options{Config: cfg})
}

func createTopic(t *testing.T, addr, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopic(context.Background(), partitions, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
}

// assignedTo returns what DescribeGroups says each client id is assigned.
func assignedTo(t *testing.T, adm *kadm.Client, group string) map[string][]int32 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dg, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int32{}
	for _, m := range dg[group].Members {
		if ca, ok := m.Assigned.AsConsumer(); ok {
			for _, tp := range ca.Topics {
				out[m.ClientID] = append(out[m.ClientID], tp.Partitions...)
			}
		}
		slices.Sort(out[m.ClientID])
	}
	return out
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func commitRaw(t *testing.T, cl *kgo.Client, group, member string, instance *string, gen int32, topic string, partition int32) int16 {
	t.Helper()
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.MemberID, req.InstanceID, req.Generation = group, member, instance, gen
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = topic // v0-v9
	td, err := kadm.NewClient(cl).ListTopics(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	rt.TopicID = td[topic].ID // v10+
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset = partition, 1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

func wantErr(t *testing.T, what string, code int16, want *kerr.Error) {
	t.Helper()
	if code != want.Code {
		t.Fatalf("%s: got %v, want %v", what, kerr.ErrorForCode(code), want)
	}
}

// A classic member that stops heartbeating is evicted after its session
// timeout; its partitions move to the survivor; its commits and those of
// the survivor's previous generation are refused.
func TestGroupClassicEvictionAndFencing(t *testing.T) {
	b := groupBroker(t, nil)
	createTopic(t, b.Addr(), "ev", 4)
	fz := newFreezer(t, b.Addr())
	opts := func(id string) []kgo.Opt {
		return []kgo.Opt{kgo.SeedBrokers(b.Addr()), kgo.ClientID(id), kgo.ConsumerGroup("evict"), kgo.ConsumeTopics("ev"),
			kgo.SessionTimeout(2 * time.Second), kgo.HeartbeatInterval(200 * time.Millisecond), kgo.RebalanceTimeout(5 * time.Second),
			kgo.Balancers(kgo.RangeBalancer())}
	}
	zombie, err := kgo.NewClient(append(opts("zombie"), kgo.Dialer(fz.dialer))...)
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Close()
	survivor, err := kgo.NewClient(opts("survivor")...)
	if err != nil {
		t.Fatal(err)
	}
	defer survivor.Close()
	defer fz.thaw() // before the clients close: a frozen client cannot leave
	for _, cl := range []*kgo.Client{zombie, survivor} {
		go func() {
			for {
				if fs := cl.PollFetches(context.Background()); fs.IsClientClosed() {
					return
				}
			}
		}()
	}
	adm := kadm.NewClient(survivor)
	waitFor(t, 20*time.Second, "both members to hold two partitions", func() bool {
		a := assignedTo(t, adm, "evict")
		return len(a["zombie"]) == 2 && len(a["survivor"]) == 2
	})
	zMember, zGen := zombie.GroupMetadata()
	sMember, sGen := survivor.GroupMetadata()

	fz.freeze()
	frozeAt := time.Now()
	waitFor(t, 20*time.Second, "the survivor to own all partitions", func() bool {
		a := assignedTo(t, adm, "evict")
		return len(a) == 1 && slices.Equal(a["survivor"], []int32{0, 1, 2, 3})
	})
	// The session runs from the last heartbeat that got through, at most
	// one heartbeat interval before the freeze.
	if waited := time.Since(frozeAt); waited < 2*time.Second-200*time.Millisecond {
		t.Fatalf("zombie evicted after %v, before its 2s session timeout", waited)
	}
	if _, gen := survivor.GroupMetadata(); gen <= sGen {
		t.Fatalf("generation did not advance: %d", gen)
	}
	wantErr(t, "evicted member's commit", commitRaw(t, survivor, "evict", zMember, nil, zGen, "ev", 0), kerr.UnknownMemberID)
	wantErr(t, "commit from the previous generation", commitRaw(t, survivor, "evict", sMember, nil, sGen, "ev", 0), kerr.IllegalGeneration)
	fz.thaw()
}

// Two processes with the same group.instance.id: the second replaces the
// first, which is fenced.
func TestGroupStaticFencing(t *testing.T) {
	b := groupBroker(t, nil)
	createTopic(t, b.Addr(), "st", 2)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	inst := "instance-1"
	join := func() *kmsg.JoinGroupResponse {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.InstanceID, req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = "static", &inst, 10000, 10000
		req.ProtocolType = "consumer"
		meta := kmsg.ConsumerMemberMetadata{Topics: []string{"st"}}
		req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: meta.AppendTo(nil)}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("join: %v %v", err, kerr.ErrorForCode(resp.ErrorCode))
		}
		return resp
	}
	first := join()
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.InstanceID, sync.Generation = "static", first.MemberID, &inst, first.Generation
	if resp, err := sync.RequestWith(ctx, cl); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("sync: %v %v", err, resp)
	}
	if code := commitRaw(t, cl, "static", first.MemberID, &inst, first.Generation, "st", 0); code != 0 {
		t.Fatalf("commit before replacement: %v", kerr.ErrorForCode(code))
	}
	second := join()
	if second.MemberID == first.MemberID || second.Generation != first.Generation {
		t.Fatalf("replacement: %+v", second)
	}
	wantErr(t, "fenced instance's commit", commitRaw(t, cl, "static", first.MemberID, &inst, first.Generation, "st", 0), kerr.FencedInstanceID)
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Group, hb.MemberID, hb.InstanceID, hb.Generation = "static", first.MemberID, &inst, first.Generation
	resp, err := hb.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "fenced instance's heartbeat", resp.ErrorCode, kerr.FencedInstanceID)
	if code := commitRaw(t, cl, "static", second.MemberID, &inst, second.Generation, "st", 0); code != 0 {
		t.Fatalf("new incarnation's commit: %v", kerr.ErrorForCode(code))
	}
}

// KIP-848: a member that stops heartbeating is removed after
// group.consumer.session.timeout.ms and its partitions move; epochs fence
// stale heartbeats, commits and offset fetches.
func TestGroupConsumerProtocolEvictionAndEpochs(t *testing.T) {
	b := groupBroker(t, nil)
	createTopic(t, b.Addr(), "kip848", 4)
	fz := newFreezer(t, b.Addr())
	opts := func(id string) []kgo.Opt {
		return []kgo.Opt{kgo.SeedBrokers(b.Addr()), kgo.ClientID(id), kgo.ConsumerGroup("g848"), kgo.ConsumeTopics("kip848"),
			kgo.ServerSideBalancer()}
	}
	zombie, err := kgo.NewClient(append(opts("zombie"), kgo.Dialer(fz.dialer))...)
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Close()
	survivor, err := kgo.NewClient(opts("survivor")...)
	if err != nil {
		t.Fatal(err)
	}
	defer survivor.Close()
	defer fz.thaw() // before the clients close: a frozen client cannot leave
	for _, cl := range []*kgo.Client{zombie, survivor} {
		go func() {
			for {
				if fs := cl.PollFetches(context.Background()); fs.IsClientClosed() {
					return
				}
			}
		}()
	}
	adm := kadm.NewClient(survivor)
	described := func() map[string]kmsg.ConsumerGroupDescribeResponseGroupMember {
		req := kmsg.NewPtrConsumerGroupDescribeRequest()
		req.Groups = []string{"g848"}
		resp, err := req.RequestWith(context.Background(), survivor)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]kmsg.ConsumerGroupDescribeResponseGroupMember{}
		for _, m := range resp.Groups[0].Members {
			out[m.ClientID] = m
		}
		return out
	}
	count := func(a kmsg.Assignment) int {
		n := 0
		for _, tp := range a.TopicPartitions {
			n += len(tp.Partitions)
		}
		return n
	}
	waitFor(t, 20*time.Second, "two partitions each", func() bool {
		d := described()
		return len(d) == 2 && count(d["zombie"].Assignment) == 2 && count(d["survivor"].Assignment) == 2
	})
	_ = adm
	zMember, zEpoch := zombie.GroupMetadata()
	sMember, sEpoch := survivor.GroupMetadata()

	wantErr(t, "commit with a future epoch", commitRaw(t, survivor, "g848", sMember, nil, sEpoch+100, "kip848", 0), kerr.StaleMemberEpoch)
	wantErr(t, "commit from an unknown member", commitRaw(t, survivor, "g848", "not-a-member", nil, sEpoch, "kip848", 0), kerr.UnknownMemberID)
	hb := kmsg.NewPtrConsumerGroupHeartbeatRequest()
	hb.Group, hb.MemberID, hb.MemberEpoch = "g848", sMember, sEpoch-1
	if resp, err := hb.RequestWith(context.Background(), survivor); err != nil {
		t.Fatal(err)
	} else {
		wantErr(t, "heartbeat with an old epoch", resp.ErrorCode, kerr.FencedMemberEpoch)
	}

	fz.freeze()
	frozeAt := time.Now()
	waitFor(t, 20*time.Second, "the survivor to own all partitions", func() bool {
		d := described()
		_, gone := d["zombie"]
		return !gone && count(d["survivor"].Assignment) == 4
	})
	if waited := time.Since(frozeAt); waited < 3*time.Second-500*time.Millisecond {
		t.Fatalf("zombie evicted after %v, before the 3s session timeout", waited)
	}
	wantErr(t, "evicted member's commit", commitRaw(t, survivor, "g848", zMember, nil, zEpoch, "kip848", 0), kerr.UnknownMemberID)
	fetch := kmsg.NewPtrOffsetFetchRequest()
	fg := kmsg.NewOffsetFetchRequestGroup()
	_, now := survivor.GroupMetadata()
	fg.Group, fg.MemberID, fg.MemberEpoch = "g848", &sMember, now-1 // the eviction bumped it past sEpoch
	fetch.Groups = append(fetch.Groups, fg)
	if resp, err := fetch.RequestWith(context.Background(), survivor); err != nil {
		t.Fatal(err)
	} else {
		wantErr(t, "offset fetch with a stale epoch", resp.Groups[0].ErrorCode, kerr.StaleMemberEpoch)
	}
	fz.thaw()
}

// The broker's Prometheus endpoint reports each group's committed offset
// and lag per partition, and counts rebalances.
func TestGroupMetrics(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{MetricsListen: "127.0.0.1:0",
		Config: map[string]string{"group.initial.rebalance.delay.ms": "0"}})
	createTopic(t, b.Addr(), "lagged", 1)
	produceN(t, b.Addr(), "lagged", 10, 10)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumerGroup("metered"), kgo.ConsumeTopics("lagged"), kgo.DisableAutoCommit())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := 0
	for got < 10 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("timed out")
		}
		got += fs.NumRecords()
	}
	if err := cl.CommitRecords(ctx, &kgo.Record{Topic: "lagged", Partition: 0, Offset: 3, LeaderEpoch: -1}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + b.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`kafka_consumergroup_current_offset{consumergroup="metered",partition="0",topic="lagged"} 4`,
		`kafka_consumergroup_lag{consumergroup="metered",partition="0",topic="lagged"} 6`,
		`kafka_coordinator_group_rebalances_total{protocol="classic"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
