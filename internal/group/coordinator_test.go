package group

import (
	"fmt"
	"log/slog"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// These tests run the driver over a real partition (on the crash-simulating
// in-memory filesystem): the durability and compaction claims are about
// what is on "disk", so they are checked there.

func openOffsets(t *testing.T, fsys vfs.FS, segmentBytes int64) *partition.Partition {
	t.Helper()
	cfg := log.DefaultConfig()
	cfg.RetentionMs, cfg.RetentionBytes = -1, -1
	if segmentBytes > 0 {
		cfg.SegmentBytes = segmentBytes
	}
	p, err := partition.Open(fsys, "/data/"+OffsetsTopic+"-0", OffsetsTopic, 0, cfg, slog.New(slog.DiscardHandler), partition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startCoordinator(t *testing.T, p *partition.Partition, topics TopicView, compactMin int) *Coordinator {
	t.Helper()
	n := 0
	var mu sync.Mutex
	c, err := Start(Options{Partition: p, Topics: topics, CompactMinRecords: compactMin,
		Config: Config{NewID: func() string { mu.Lock(); defer mu.Unlock(); n++; return fmt.Sprint(n) }}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func commit(t *testing.T, c *Coordinator, group string, offsets map[int32]int64) {
	t.Helper()
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Version = 8
	req.Group, req.Generation = group, -1
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = "t"
	for p, o := range offsets {
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = p, o
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	resp := c.Await(req, c.Submit(Client{ID: "test"}, req)).(*kmsg.OffsetCommitResponse)
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode != 0 {
			t.Fatalf("commit %s/%d: %v", group, p.Partition, kerr.ErrorForCode(p.ErrorCode))
		}
	}
}

func fetchAll(t *testing.T, c *Coordinator, group string) map[int32]int64 {
	t.Helper()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Version = 8
	rg := kmsg.NewOffsetFetchRequestGroup()
	rg.Group = group
	req.Groups = append(req.Groups, rg)
	resp := c.Await(req, c.Submit(Client{ID: "test"}, req)).(*kmsg.OffsetFetchResponse)
	out := map[int32]int64{}
	for _, tp := range resp.Groups[0].Topics {
		for _, p := range tp.Partitions {
			out[p.Partition] = p.Offset
		}
	}
	return out
}

func TestCoordinatorCommitsSurviveCrash(t *testing.T) {
	fsys := vfs.NewMem()
	topics := newTopics(map[string]int32{"t": 4})
	p := openOffsets(t, fsys, 0)
	c := startCoordinator(t, p, topics, 0)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(1); i <= 25; i++ {
				commit(t, c, fmt.Sprintf("g%d", g), map[int32]int64{int32(i % 4): i})
			}
		}()
	}
	wg.Wait()
	// Every acknowledged commit is on disk: crash without closing.
	crashed := fsys.Crash(rand.New(rand.NewSource(1)))
	c.Close()
	p.Close()
	p2 := openOffsets(t, crashed, 0)
	defer p2.Close()
	c2 := startCoordinator(t, p2, topics, 0)
	defer c2.Close()
	for g := 0; g < 8; g++ {
		got := fetchAll(t, c2, fmt.Sprintf("g%d", g))
		want := map[int32]int64{1: 25, 2: 22, 3: 23, 0: 24}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("g%d after crash: %v, want %v", g, got, want)
		}
	}
}

func TestCoordinatorCompaction(t *testing.T) {
	fsys := vfs.NewMem()
	topics := newTopics(map[string]int32{"t": 2})
	p := openOffsets(t, fsys, 4096) // small segments so old ones can go
	c := startCoordinator(t, p, topics, 200)
	for i := int64(0); i < 2000; i++ {
		commit(t, c, fmt.Sprintf("g%d", i%3), map[int32]int64{int32(i % 2): i})
	}
	// Automatic compaction kept the log near the live state (6 offsets):
	// at most CompactMinRecords appended since the last snapshot. The loop
	// compacts after answering the commit that crossed the threshold, so
	// pass one request through it first to observe the settled log.
	fetchAll(t, c, "g0")
	if n := p.LogEndOffset() - p.LogStartOffset(); n > 200+6 {
		t.Fatalf("offsets log holds %d records for 6 live offsets", n)
	}
	if err := c.CompactNow(); err != nil {
		t.Fatal(err)
	}
	if n := p.LogEndOffset() - p.LogStartOffset(); n != 6 {
		t.Fatalf("right after a snapshot the log holds %d records, want the 6 live ones", n)
	}
	if segs := len(p.Log().Segments()); segs > 2 {
		t.Fatalf("%d segments left after compaction", segs)
	}
	want := map[string]map[int32]int64{}
	for g := 0; g < 3; g++ {
		want[fmt.Sprintf("g%d", g)] = fetchAll(t, c, fmt.Sprintf("g%d", g))
	}
	c.Close()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	p2 := openOffsets(t, fsys, 4096)
	defer p2.Close()
	c2 := startCoordinator(t, p2, topics, 200)
	defer c2.Close()
	for g, w := range want {
		if got := fetchAll(t, c2, g); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Fatalf("%s after compaction and restart: %v, want %v", g, got, w)
		}
	}
	if w := want["g1"]; w[0] != 1996 || w[1] != 1999 {
		t.Fatalf("g1 = %v; want the last commits 1996 and 1999", w)
	}
}

func TestCoordinatorTxnAPI(t *testing.T) {
	fsys := vfs.NewMem()
	topics := newTopics(map[string]int32{"t": 1})
	p := openOffsets(t, fsys, 0)
	c := startCoordinator(t, p, topics, 0)
	if err := c.ValidateTxnCommit("g", "", -1, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.StageTxnOffsets(5, 0, "g", TxnOffset{Topic: "t", Partition: 0, Offset: 77, LeaderEpoch: -1}); err != nil {
		t.Fatal(err)
	}
	if !c.HasPendingTxnOffsets("g", "t", 0) || fmt.Sprint(c.PendingTxns("g")) != "[5]" {
		t.Fatal("staged offsets not pending")
	}
	// Restart with the transaction open: still pending, then committed.
	c.Close()
	p.Close()
	p = openOffsets(t, fsys, 0)
	c = startCoordinator(t, p, topics, 0)
	defer func() { c.Close(); p.Close() }()
	if !c.HasPendingTxnOffsets("g", "t", 0) {
		t.Fatal("staged offsets lost across restart")
	}
	if err := c.CompleteTxn(5, "g", true); err != nil {
		t.Fatal(err)
	}
	if got := fetchAll(t, c, "g"); got[0] != 77 || c.HasPendingTxnOffsets("g", "t", 0) {
		t.Fatalf("after CompleteTxn: %v", got)
	}
}

// A JoinGroup parked in a rebalance is answered when the coordinator stops.
func TestCoordinatorCloseAnswersParked(t *testing.T) {
	fsys := vfs.NewMem()
	p := openOffsets(t, fsys, 0)
	defer p.Close()
	c := startCoordinator(t, p, newTopics(nil), 0)
	c.m.cfg.InitialRebalanceDelay = time.Hour // reaching into the loop's machine before any request: safe
	req := joinReq("g", "", ptr("i"), "range:x")
	ch := c.Submit(Client{ID: "c"}, req)
	time.Sleep(50 * time.Millisecond)
	c.Close()
	resp := c.Await(req, ch).(*kmsg.JoinGroupResponse)
	if resp.ErrorCode != kerr.CoordinatorNotAvailable.Code {
		t.Fatalf("parked join answered %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	late := c.Await(req, c.Submit(Client{ID: "c"}, req)).(*kmsg.JoinGroupResponse)
	if late.ErrorCode != kerr.CoordinatorNotAvailable.Code {
		t.Fatalf("join after close answered %v", kerr.ErrorForCode(late.ErrorCode))
	}
	if err := c.StageTxnOffsets(1, 0, "g"); err == nil {
		t.Fatal("staging after close succeeded")
	}
}
