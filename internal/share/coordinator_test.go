package share

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/group"
	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/partition"
	rec "github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// These tests run the coordinator over real partitions on the
// crash-simulating in-memory filesystem: the durability claims are about
// what is on "disk" when the machine dies.

var topicID = [16]byte{0xab, 1}

type oneTopic struct{}

func (oneTopic) TopicByName(name string) (group.TopicInfo, bool) {
	return group.TopicInfo{Name: "t", ID: topicID, Partitions: 1}, name == "t"
}

func (oneTopic) TopicByID(id [16]byte) (group.TopicInfo, bool) {
	return group.TopicInfo{Name: "t", ID: topicID, Partitions: 1}, id == topicID
}

func (oneTopic) Topics() []group.TopicInfo {
	return []group.TopicInfo{{Name: "t", ID: topicID, Partitions: 1}}
}

func openPart(t *testing.T, fsys vfs.FS, topic string) *partition.Partition {
	t.Helper()
	cfg := log.DefaultConfig()
	cfg.RetentionMs, cfg.RetentionBytes = -1, -1
	p, err := partition.Open(fsys, "/data/"+topic+"-0", topic, 0, cfg, slog.New(slog.DiscardHandler), partition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func testConfig(limit int) Config {
	return Config{
		RecordLockDuration: 30 * time.Second, MinRecordLock: 15 * time.Second, MaxRecordLock: time.Minute,
		DeliveryCountLimit: limit, MaxRecordLocks: 2000, MaxSessions: 10,
		SessionTimeout: 45 * time.Second, HeartbeatInterval: 5 * time.Second, MaxGroupSize: 10, MaxGroups: 10,
	}
}

// node is one "broker life" on fsys: the data partition t-0 and the
// coordinator over __share_group_state.
type node struct {
	data  *partition.Partition
	state *partition.Partition
	c     *Coordinator
	// source, if set, is what the coordinator reads t-0 through.
	source Source
}

func startNode(t *testing.T, fsys vfs.FS, limit int) *node {
	t.Helper()
	return startNodeWith(t, fsys, testConfig(limit))
}

func startNodeWith(t *testing.T, fsys vfs.FS, cfg Config) *node {
	t.Helper()
	n := &node{data: openPart(t, fsys, "t"), state: openPart(t, fsys, StateTopic)}
	c, err := Start(Options{Config: cfg, Log: n.state, Topics: oneTopic{},
		Partition: func(topic string, _ int32) Source {
			switch {
			case topic != "t":
				return nil
			case n.source != nil:
				return n.source
			}
			return n.data
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	n.c = c
	// The share group exists (a fetch does not create one): created by
	// AlterShareGroupOffsets with no partitions, as an operator would.
	if r := c.AlterOffsets(&kmsg.AlterShareGroupOffsetsRequest{GroupID: "g"}, nil); r.ErrorCode != 0 {
		t.Fatal(kerr.ErrorForCode(r.ErrorCode))
	}
	return n
}

func (n *node) produce(t *testing.T, values ...string) {
	t.Helper()
	b := testenv.Batch(values...)
	h, err := rec.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	res, err := n.data.Append(b, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.data.WaitDurable(res.LastOffset + 1); err != nil {
		t.Fatal(err)
	}
}

var lim = Limits{MaxBytes: 1 << 20, PartitionMaxBytes: 1 << 20, MaxWait: time.Second}

// fetch opens a session for member and returns its acquired ranges.
func (n *node) fetch(t *testing.T, member string, epoch int32) []AcquiredRange {
	t.Helper()
	out, err := n.fetchWait(member, epoch, 0, lim)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fetchWait is fetch as a long poll of up to wait within l; it returns
// errors rather than failing, so other goroutines may call it.
func (n *node) fetchWait(member string, epoch int32, wait time.Duration, l Limits) ([]AcquiredRange, error) {
	req := kmsg.NewPtrShareFetchRequest()
	req.Version = 2
	req.GroupID, req.MemberID, req.ShareSessionEpoch = kmsg.StringPtr("g"), kmsg.StringPtr(member), epoch
	req.MaxRecords, req.MaxWaitMillis = 1000, int32(wait/time.Millisecond)
	rt := kmsg.NewShareFetchRequestTopic()
	rt.TopicID = topicID
	rt.Partitions = append(rt.Partitions, kmsg.NewShareFetchRequestTopicPartition())
	req.Topics = append(req.Topics, rt)
	resp := n.c.Fetch(context.Background(), req, l)
	if resp.ErrorCode != 0 {
		return nil, fmt.Errorf("ShareFetch: %w", kerr.ErrorForCode(resp.ErrorCode))
	}
	var out []AcquiredRange
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 {
				return nil, fmt.Errorf("ShareFetch partition: %w", kerr.ErrorForCode(rp.ErrorCode))
			}
			for _, a := range rp.AcquiredRecords {
				out = append(out, AcquiredRange{a.FirstOffset, a.LastOffset, a.DeliveryCount})
			}
		}
	}
	return out, nil
}

func (n *node) ack(t *testing.T, member string, epoch int32, first, last int64, typ int8) int16 {
	t.Helper()
	req := kmsg.NewPtrShareAcknowledgeRequest()
	req.Version = 2
	req.GroupID, req.MemberID, req.ShareSessionEpoch = kmsg.StringPtr("g"), kmsg.StringPtr(member), epoch
	rt := kmsg.NewShareAcknowledgeRequestTopic()
	rt.TopicID = topicID
	rp := kmsg.NewShareAcknowledgeRequestTopicPartition()
	rp.AcknowledgementBatches = []kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch{{FirstOffset: first, LastOffset: last, AcknowledgeTypes: []int8{typ}}}
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := n.c.Acknowledge(req, lim)
	if resp.ErrorCode != 0 {
		return resp.ErrorCode
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

func (n *node) earliest(t *testing.T) {
	t.Helper()
	v := "earliest"
	if err := n.c.AlterGroupConfigs("g", []ConfigOp{{Name: "share.auto.offset.reset", Value: &v}}, false, false); err != nil {
		t.Fatal(err)
	}
}

// TestAnsweredStateSurvivesCrash: acknowledgements and delivery counts
// answered before a machine crash are there after it; records that were
// acquired come back with their counts, and at the limit they are
// archived, never delivered again.
func TestAnsweredStateSurvivesCrash(t *testing.T) {
	fsys := vfs.NewMem()
	n := startNode(t, fsys, 2)
	n.earliest(t)
	vals := make([]string, 20)
	for i := range vals {
		vals[i] = "v"
	}
	n.produce(t, vals...)
	if got := n.fetch(t, "m", 0); len(got) != 1 || got[0] != (AcquiredRange{0, 19, 1}) {
		t.Fatalf("first fetch acquired %+v, want 0-19 at count 1", got)
	}
	if code := n.ack(t, "m", 1, 0, 9, AckAccept); code != 0 {
		t.Fatalf("accept: %v", kerr.ErrorForCode(code))
	}
	if code := n.ack(t, "m", 2, 10, 14, AckRelease); code != 0 {
		t.Fatalf("release: %v", kerr.ErrorForCode(code))
	}

	// Crash: only what was fsynced survives. The coordinator of the dead
	// "machine" is stopped (its state is gone with it).
	crashed := fsys.Crash(nil)
	n.c.Close()
	n = startNode(t, crashed, 2)
	n.earliest(t)
	got := n.fetch(t, "m2", 0)
	if len(got) != 1 || got[0] != (AcquiredRange{10, 19, 2}) {
		t.Fatalf("after the crash acquired %+v, want 10-19 at count 2 (0-9 accepted)", got)
	}
	if code := n.ack(t, "m2", 1, 10, 10, AckAccept); code != 0 {
		t.Fatalf("accept: %v", kerr.ErrorForCode(code))
	}

	// Second crash with 11-19 acquired at the limit: archived on replay.
	crashed = crashed.Crash(nil)
	n.c.Close()
	n = startNode(t, crashed, 2)
	if got := n.fetch(t, "m3", 0); len(got) != 0 {
		t.Fatalf("records past the delivery-count limit delivered again: %+v", got)
	}
	resp := n.c.DescribeOffsets(&kmsg.DescribeShareGroupOffsetsRequest{Groups: []kmsg.DescribeShareGroupOffsetsRequestGroup{{GroupID: "g"}}}, nil)
	if len(resp.Groups) != 1 || len(resp.Groups[0].Topics) != 1 || resp.Groups[0].Topics[0].Partitions[0].StartOffset != 20 {
		t.Fatalf("SPSO after all settled: %+v, want 20", resp.Groups)
	}
}

// TestSessionEpochs: the share-session rules of KIP-932.
func TestSessionEpochs(t *testing.T) {
	n := startNode(t, vfs.NewMem(), 5)
	n.earliest(t)
	n.produce(t, "a", "b")
	if code := n.ack(t, "m", 1, 0, 0, AckAccept); code != kerr.ShareSessionNotFound.Code {
		t.Fatalf("ack without a session: %v", kerr.ErrorForCode(code))
	}
	n.fetch(t, "m", 0)
	if code := n.ack(t, "m", 0, 0, 0, AckAccept); code != kerr.InvalidShareSessionEpoch.Code {
		t.Fatalf("ShareAcknowledge at epoch 0: %v", kerr.ErrorForCode(code))
	}
	if code := n.ack(t, "m", 5, 0, 0, AckAccept); code != kerr.InvalidShareSessionEpoch.Code {
		t.Fatalf("wrong epoch: %v", kerr.ErrorForCode(code))
	}
	if code := n.ack(t, "other", 1, 0, 0, AckAccept); code != kerr.ShareSessionNotFound.Code {
		t.Fatalf("another member's epoch: %v", kerr.ErrorForCode(code))
	}
	if code := n.ack(t, "m", 1, 0, 0, AckAccept); code != 0 {
		t.Fatalf("accept: %v", kerr.ErrorForCode(code))
	}
	if code := n.ack(t, "m", 2, 0, 0, AckAccept); code != kerr.InvalidRecordState.Code {
		t.Fatalf("accepting twice: %v", kerr.ErrorForCode(code))
	}
	// Closing the session (-1) releases what the member still holds.
	if code := n.ack(t, "m", -1, 1, 1, AckRenew); code != 0 {
		t.Fatalf("close: %v", kerr.ErrorForCode(code))
	}
	if got := n.fetch(t, "m2", 0); len(got) != 1 || got[0] != (AcquiredRange{1, 1, 2}) {
		t.Fatalf("after the session closed acquired %+v, want offset 1 at count 2", got)
	}
	// A fetch does not create a group (nor state for one).
	nf := kmsg.NewPtrShareFetchRequest()
	nf.Version = 2
	nf.GroupID, nf.MemberID = kmsg.StringPtr("no-such-group"), kmsg.StringPtr("m")
	if resp := n.c.Fetch(context.Background(), nf, lim); resp.ErrorCode != kerr.GroupIDNotFound.Code || n.c.HasGroup("no-such-group") {
		t.Fatalf("fetch for an unknown group: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	// The session limit.
	for i := range 9 {
		n.fetch(t, string(rune('a'+i)), 0)
	}
	req := kmsg.NewPtrShareFetchRequest()
	req.Version = 2
	req.GroupID, req.MemberID = kmsg.StringPtr("g"), kmsg.StringPtr("one-too-many")
	if resp := n.c.Fetch(context.Background(), req, lim); resp.ErrorCode != kerr.ShareSessionLimitReached.Code {
		t.Fatalf("session past group.share.max.share.sessions: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
}

// TestHeartbeatAssignsAndShares: members join, partitions are shared
// when members outnumber them, leaving rebalances.
func TestHeartbeatAssignsAndShares(t *testing.T) {
	n := startNode(t, vfs.NewMem(), 5)
	hb := func(member string, epoch int32) *kmsg.ShareGroupHeartbeatResponse {
		req := kmsg.NewPtrShareGroupHeartbeatRequest()
		req.Version = 1
		req.GroupID, req.MemberID, req.MemberEpoch = "g", member, epoch
		req.SubscribedTopicNames = []string{"t"}
		return n.c.Heartbeat(req, Client{ID: "c"}, nil)
	}
	v := "1234"
	if err := n.c.AlterGroupConfigs("g", []ConfigOp{{Name: "share.heartbeat.interval.ms", Value: &v}}, false, false); err != nil {
		t.Fatal(err)
	}
	bad := "by_duration:PT1H"
	if err := n.c.AlterGroupConfigs("g", []ConfigOp{{Name: "share.auto.offset.reset", Value: &bad}}, false, false); err == nil {
		t.Fatal("an unsupported share.auto.offset.reset was accepted")
	}
	a, b := hb("a", 0), hb("b", 0)
	if a.HeartbeatIntervalMillis != 1234 {
		t.Fatalf("heartbeat interval %d, want the group's share.heartbeat.interval.ms 1234", a.HeartbeatIntervalMillis)
	}
	if a.ErrorCode != 0 || b.ErrorCode != 0 {
		t.Fatalf("joins: %v %v", kerr.ErrorForCode(a.ErrorCode), kerr.ErrorForCode(b.ErrorCode))
	}
	if b.Assignment == nil || len(b.Assignment.TopicPartitions) != 1 || b.Assignment.TopicPartitions[0].Partitions[0] != 0 {
		t.Fatalf("second member of a one-partition topic not assigned it: %+v", b.Assignment)
	}
	// a was told epoch 1; b's join moved the group on. a may still
	// heartbeat with 1 and hears of the new epoch; after that 1 is fenced.
	if r := hb("a", a.MemberEpoch); r.ErrorCode != 0 || r.MemberEpoch != b.MemberEpoch {
		t.Fatalf("heartbeat at the last told epoch: %v, epoch %d, want %d", kerr.ErrorForCode(r.ErrorCode), r.MemberEpoch, b.MemberEpoch)
	}
	if r := hb("a", a.MemberEpoch); r.ErrorCode != kerr.FencedMemberEpoch.Code {
		t.Fatalf("epoch older than the last told: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	if r := hb("zzz", 3); r.ErrorCode != kerr.UnknownMemberID.Code {
		t.Fatalf("unknown member: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	d := n.c.Describe(&kmsg.ShareGroupDescribeRequest{GroupIDs: []string{"g", "nope"}})
	if d.Groups[0].GroupState != "Stable" || len(d.Groups[0].Members) != 2 || d.Groups[1].ErrorCode != kerr.GroupIDNotFound.Code {
		t.Fatalf("describe: %+v", d.Groups)
	}
	if code := n.c.DeleteGroup("g"); code != kerr.NonEmptyGroup.Code {
		t.Fatalf("deleting a group with members: %v", kerr.ErrorForCode(code))
	}
	hb("a", -1)
	hb("b", -1)
	if code := n.c.DeleteGroup("g"); code != 0 {
		t.Fatalf("deleting the empty group: %v", kerr.ErrorForCode(code))
	}
	if n.c.HasGroup("g") {
		t.Fatal("deleted group still known")
	}
}

// appendTxn appends a transactional batch of values for pid.
func (n *node) appendTxn(t *testing.T, pid int64, values ...string) {
	t.Helper()
	b := testenv.Batch(values...)
	binary.BigEndian.PutUint16(b[21:], 0x10) // transactional
	binary.BigEndian.PutUint64(b[43:], uint64(pid))
	binary.BigEndian.PutUint16(b[51:], 0)
	binary.BigEndian.PutUint32(b[53:], 0)
	b = testenv.SealBatch(b)
	h, err := rec.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	res, err := n.data.Append(b, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.data.WaitDurable(res.LastOffset + 1); err != nil {
		t.Fatal(err)
	}
}

// TestReadCommittedNeverAcquiresAbortedOrOpen: under
// share.isolation.level=read_committed, records of aborted transactions
// are archived without delivery, control records are never delivered,
// and records of an open transaction wait for its end.
func TestReadCommittedNeverAcquiresAbortedOrOpen(t *testing.T) {
	n := startNode(t, vfs.NewMem(), 5)
	n.earliest(t)
	rc := "read_committed"
	if err := n.c.AlterGroupConfigs("g", []ConfigOp{{Name: "share.isolation.level", Value: &rc}}, false, false); err != nil {
		t.Fatal(err)
	}
	n.produce(t, "a")           // 0
	n.appendTxn(t, 7, "x", "y") // 1-2, aborted below
	if err := n.data.WriteTxnMarker(7, 0, false, 0); err != nil {
		t.Fatal(err) // 3
	}
	n.produce(t, "b")         // 4
	n.appendTxn(t, 8, "open") // 5, still open
	n.produce(t, "c")         // 6
	got := n.fetch(t, "m", 0)
	want := []AcquiredRange{{0, 0, 1}, {4, 4, 1}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("read_committed acquired %+v, want %+v", got, want)
	}
	for off := int64(1); off <= 3; off++ {
		if st, count := n.c.parts[partitionKey{"g", topicID, 0}].State(off); st != Archived || count != 0 {
			t.Fatalf("offset %d: state %d count %d, want archived undelivered", off, st, count)
		}
	}
	if err := n.data.WriteTxnMarker(8, 0, true, 0); err != nil {
		t.Fatal(err) // 7
	}
	got = n.fetch(t, "m2", 0)
	if len(got) != 1 || got[0] != (AcquiredRange{5, 6, 1}) {
		t.Fatalf("after the commit acquired %+v, want 5-6", got)
	}
}

// TestCompactionKeepsState: a snapshot followed by the deletion of
// everything before it replays to the same state.
func TestCompactionKeepsState(t *testing.T) {
	fsys := vfs.NewMem()
	n := startNode(t, fsys, 5)
	n.earliest(t)
	n.produce(t, "a", "b", "c", "d")
	n.fetch(t, "m", 0)
	if code := n.ack(t, "m", 1, 0, 1, AckAccept); code != 0 {
		t.Fatal(kerr.ErrorForCode(code))
	}
	before := n.state.LogEndOffset()
	if err := n.c.Compact(); err != nil {
		t.Fatal(err)
	}
	if n.state.LogStartOffset() != before {
		t.Fatalf("log start %d after compaction, want %d (everything before the snapshot deleted)", n.state.LogStartOffset(), before)
	}
	crashed := fsys.Crash(nil)
	n.c.Close()
	n = startNode(t, crashed, 5)
	if got := n.fetch(t, "m2", 0); len(got) != 1 || got[0] != (AcquiredRange{2, 3, 2}) {
		t.Fatalf("after compaction and a crash acquired %+v, want 2-3 at count 2", got)
	}
	if !n.c.HasGroup("g") {
		t.Fatal("group lost by compaction")
	}
	if cfg := n.c.DescribeGroupConfigs("g", []string{"share.auto.offset.reset"}); len(cfg) != 1 || cfg[0].Value != "earliest" || cfg[0].IsDefault {
		t.Fatalf("group config after compaction: %+v", cfg)
	}
}

// TestFullWindowWakesOnAcknowledge: a fetch waiting because the window is
// at group.share.partition.max.record.locks gets records as soon as an
// acknowledgement frees locks, not when its long poll ends.
func TestFullWindowWakesOnAcknowledge(t *testing.T) {
	cfg := testConfig(5)
	cfg.MaxRecordLocks = 10
	n := startNodeWith(t, vfs.NewMem(), cfg)
	n.earliest(t)
	n.produce(t, "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
	n.produce(t, "10", "11", "12", "13", "14", "15", "16", "17", "18", "19")
	if got := n.fetch(t, "a", 0); len(got) != 1 || got[0].First != 0 || got[0].Last != 9 {
		t.Fatalf("a acquired %v, want 0-9 (the window's 10 locks)", got)
	}
	long := Limits{MaxBytes: 1 << 20, PartitionMaxBytes: 1 << 20, MaxWait: 20 * time.Second}
	type answer struct {
		got  []AcquiredRange
		err  error
		took time.Duration
	}
	done := make(chan answer, 1)
	go func() {
		start := time.Now()
		got, err := n.fetchWait("b", 0, 20*time.Second, long)
		done <- answer{got, err, time.Since(start)}
	}()
	time.Sleep(200 * time.Millisecond) // b is waiting on the full window
	select {
	case a := <-done:
		t.Fatalf("b's fetch answered while the window was full: %+v", a)
	default:
	}
	if code := n.ack(t, "a", 1, 0, 9, AckAccept); code != 0 {
		t.Fatal(kerr.ErrorForCode(code))
	}
	a := <-done
	if a.err != nil || len(a.got) != 1 || a.got[0].First != 10 || a.got[0].Last != 19 {
		t.Fatalf("b got %v (%v), want 10-19", a.got, a.err)
	}
	if a.took > 5*time.Second {
		t.Errorf("b's fetch took %v: the acknowledgement did not wake it", a.took)
	}
}

// gatedSource holds the first Read until gate closes, so a test can start
// another fetch while one is reading.
type gatedSource struct {
	*partition.Partition
	reading chan struct{} // closed when the first Read started
	gate    chan struct{}
	once    sync.Once
}

func (g *gatedSource) Read(offset int64, maxBytes int, readCommitted bool) ([]byte, error) {
	first := false
	g.once.Do(func() { first = true })
	data, err := g.Partition.Read(offset, maxBytes, readCommitted)
	if first {
		close(g.reading)
		<-g.gate
	}
	return data, err
}

type fetchAnswer struct {
	got  []AcquiredRange
	err  error
	took time.Duration
}

// goFetch runs fetchWait in a goroutine.
func (n *node) goFetch(member string, wait time.Duration, l Limits) <-chan fetchAnswer {
	done := make(chan fetchAnswer, 1)
	go func() {
		start := time.Now()
		got, err := n.fetchWait(member, 0, wait, l)
		done <- fetchAnswer{got, err, time.Since(start)}
	}()
	return done
}

// TestConcurrentFetchesTakeTurns: fetches of one share partition read and
// acquire one at a time. A fetch arriving while another reads waits for
// its turn and then gets the records after the other's, rather than
// reading the same records, acquiring none and waiting out its long poll
// for an append that will not come.
func TestConcurrentFetchesTakeTurns(t *testing.T) {
	n := startNode(t, vfs.NewMem(), 5)
	n.earliest(t)
	n.produce(t, "0", "1", "2", "3", "4")
	n.produce(t, "5", "6", "7", "8", "9")
	gs := &gatedSource{Partition: n.data, reading: make(chan struct{}), gate: make(chan struct{})}
	n.source = gs
	// One batch per read.
	small := Limits{MaxBytes: 1 << 20, PartitionMaxBytes: 1, MaxWait: 20 * time.Second}
	a := n.goFetch("a", 20*time.Second, small)
	<-gs.reading
	b := n.goFetch("b", 20*time.Second, small)
	time.Sleep(100 * time.Millisecond) // b is waiting for its turn
	select {
	case got := <-b:
		t.Fatalf("b's fetch answered while a was reading: %+v", got)
	default:
	}
	close(gs.gate)
	for name, want := range map[string]struct {
		ch          <-chan fetchAnswer
		first, last int64
	}{"a": {a, 0, 4}, "b": {b, 5, 9}} {
		got := <-want.ch
		if got.err != nil || len(got.got) != 1 || got.got[0].First != want.first || got.got[0].Last != want.last {
			t.Fatalf("%s got %v (%v), want %d-%d", name, got.got, got.err, want.first, want.last)
		}
		if got.took > 5*time.Second {
			t.Errorf("%s's fetch took %v", name, got.took)
		}
	}
}

// TestFetchReadsPastRecordsNeverDelivered: a read that holds only an
// aborted transaction and its marker (read_committed) archives them and
// reads on in the same fetch: the committed record after them is already
// in the log, so no append would wake the fetch for it.
func TestFetchReadsPastRecordsNeverDelivered(t *testing.T) {
	n := startNode(t, vfs.NewMem(), 5)
	n.earliest(t)
	rc := "read_committed"
	if err := n.c.AlterGroupConfigs("g", []ConfigOp{{Name: "share.isolation.level", Value: &rc}}, false, false); err != nil {
		t.Fatal(err)
	}
	n.appendTxn(t, 7, "x", "y") // 0-1, aborted below
	if err := n.data.WriteTxnMarker(7, 0, false, 0); err != nil {
		t.Fatal(err) // 2
	}
	n.produce(t, "b") // 3
	small := Limits{MaxBytes: 1 << 20, PartitionMaxBytes: 1, MaxWait: 20 * time.Second}
	got := <-n.goFetch("m", 20*time.Second, small)
	if got.err != nil || len(got.got) != 1 || got.got[0] != (AcquiredRange{3, 3, 1}) {
		t.Fatalf("acquired %v (%v), want 3", got.got, got.err)
	}
	if got.took > 5*time.Second {
		t.Errorf("the fetch took %v: it waited after archiving the aborted records", got.took)
	}
}

// TestMetricsOutliveDeletedState: counters are totals since start, so
// deleting a group's share-partition state does not take its counts back;
// its in-flight records disappear with it.
func TestMetricsOutliveDeletedState(t *testing.T) {
	n := startNode(t, vfs.NewMem(), 5)
	n.earliest(t)
	n.produce(t, "0", "1", "2")
	if got := n.fetch(t, "a", 0); len(got) != 1 || got[0].Last != 2 {
		t.Fatalf("acquired %v", got)
	}
	if code := n.ack(t, "a", 1, 0, 0, AckAccept); code != 0 {
		t.Fatal(kerr.ErrorForCode(code))
	}
	st, groups := n.c.Metrics()
	if st.Acquired != 3 || st.Accepted != 1 || len(groups) != 1 || groups[0].Group != "g" || groups[0].Acquired != 2 {
		t.Fatalf("before deleting: %+v %+v", st, groups)
	}
	// The member's session must end before the group can go.
	if code := n.ack(t, "a", -1, 1, 2, AckRelease); code != 0 {
		t.Fatal(kerr.ErrorForCode(code))
	}
	if code := n.c.DeleteGroup("g"); code != 0 {
		t.Fatal(kerr.ErrorForCode(code))
	}
	st, groups = n.c.Metrics()
	if st.Acquired != 3 || st.Accepted != 1 || st.Released != 2 || len(groups) != 0 {
		t.Fatalf("after deleting: %+v %+v", st, groups)
	}
}

// TestFetchHoldingRecordsInFullWindowAnswersSoon: a member's fetch that
// finds the window full while the member itself holds records there is
// answered after a short hold, not at the end of its long poll: clients
// send their acknowledgements with their next fetch, and only
// acknowledgements free the window. A member that holds nothing waits.
func TestFetchHoldingRecordsInFullWindowAnswersSoon(t *testing.T) {
	cfg := testConfig(5)
	cfg.MaxRecordLocks = 10
	n := startNodeWith(t, vfs.NewMem(), cfg)
	n.earliest(t)
	n.produce(t, "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10")
	if got := n.fetch(t, "a", 0); len(got) != 1 || got[0].Last != 9 {
		t.Fatalf("a acquired %v, want 0-9", got)
	}
	long := Limits{MaxBytes: 1 << 20, PartitionMaxBytes: 1 << 20, MaxWait: 20 * time.Second}
	start := time.Now()
	got, err := n.fetchWait("a", 1, 20*time.Second, long)
	if err != nil || len(got) != 0 {
		t.Fatalf("a's second fetch: %v %v, want nothing", got, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a's fetch took %v while a held the full window", took)
	}
	start = time.Now()
	if got, err := n.fetchWait("b", 0, time.Second, long); err != nil || len(got) != 0 {
		t.Fatalf("b's fetch: %v %v, want nothing", got, err)
	}
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("b, holding nothing, waited only %v of its 1 s long poll", took)
	}
}
