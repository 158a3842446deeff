package txn

import (
	"errors"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kerr"
)

// fakeMarkers records markers; while hold is set, writes block until
// release is closed (a coordinator stuck between prepare and complete).
type fakeMarkers struct {
	mu      sync.Mutex
	written []string
	hold    chan struct{}
	started chan struct{}
}

func (f *fakeMarkers) WriteTxnMarker(tp TopicPartition, pid int64, epoch int16, commit bool, _ int32) error {
	f.mu.Lock()
	hold, started := f.hold, f.started
	f.mu.Unlock()
	if started != nil {
		select {
		case started <- struct{}{}:
		default:
		}
	}
	if hold != nil {
		<-hold
	}
	kind := "ABORT"
	if commit {
		kind = "COMMIT"
	}
	f.mu.Lock()
	f.written = append(f.written, kind+" "+tp.String()+" "+itoa(pid)+"/"+itoa(int64(epoch)))
	f.mu.Unlock()
	return nil
}

// list returns the markers written, sorted: one transaction's partitions
// get their markers concurrently, so only the set is meaningful.
func (f *fakeMarkers) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.written...)
	sort.Strings(out)
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

type testEnv struct {
	t       *testing.T
	fs      vfs.FS
	part    *partition.Partition
	d       *Driver
	markers *fakeMarkers
	once    sync.Once
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openEnv(t *testing.T, fs vfs.FS, markers *fakeMarkers, cfg func(*DriverConfig)) *testEnv {
	t.Helper()
	p, err := partition.Open(fs, "/data/__transaction_state-0", "__transaction_state", 0, log.DefaultConfig(), quiet(), partition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dc := DriverConfig{Machine: Config{MaxTimeoutMs: 900000, IDExpirationMs: 3600000, PIDBlockSize: 5}, Log: p, Markers: markers, Logger: quiet()}
	if cfg != nil {
		cfg(&dc)
	}
	d, err := NewDriver(dc)
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	d.Start()
	e := &testEnv{t: t, fs: fs, part: p, d: d, markers: markers}
	t.Cleanup(e.close)
	return e
}

func (e *testEnv) close() {
	e.once.Do(func() {
		e.d.Stop()
		e.part.Close()
	})
}

func mustWait(t *testing.T, w Waiter) {
	t.Helper()
	if err := w(); err != nil {
		t.Fatal(err)
	}
}

func strp(s string) *string { return &s }

func TestDriverCommitWritesMarkersBeforeAnswering(t *testing.T) {
	m := &fakeMarkers{}
	e := openEnv(t, vfs.NewMem(), m, nil)
	init, w := e.d.InitProducerID(InitRequest{TxnID: strp("a"), TimeoutMs: 60000, ProducerID: -1, ProducerEpoch: -1})
	mustWait(t, w)
	if init.Err != nil {
		t.Fatal(init.Err)
	}
	add, w := e.d.Add(AddRequest{TxnID: "a", ProducerID: init.ProducerID, ProducerEpoch: init.ProducerEpoch,
		Partitions: []TopicPartition{{"foo", 0}, {"foo", 1}}})
	mustWait(t, w)
	if add.Err != nil {
		t.Fatal(add.Err)
	}
	end, w := e.d.EndTxn(EndRequest{TxnID: "a", ProducerID: init.ProducerID, ProducerEpoch: init.ProducerEpoch, Commit: true, TV2: true})
	mustWait(t, w)
	if end.Err != nil || end.ProducerEpoch != 1 {
		t.Fatalf("end: %+v", end)
	}
	want := []string{"COMMIT foo/0 1/1", "COMMIT foo/1 1/1"}
	if got := m.list(); !equal(got, want) {
		t.Fatalf("markers %v, want %v", got, want)
	}
	metas, found, w := e.d.Describe([]string{"a"})
	mustWait(t, w)
	if !found[0] || metas[0].State != CompleteCommit {
		t.Fatalf("state after commit: %v", metas[0].String())
	}
}

// A crash after the prepare record is durable and before the markers are
// all written: after restart the coordinator writes them again and
// completes the transaction.
func TestDriverFinishesPreparedTransactionAfterCrash(t *testing.T) {
	fs := vfs.NewMem()
	m := &fakeMarkers{hold: make(chan struct{}), started: make(chan struct{}, 1)}
	e := openEnv(t, fs, m, nil)
	init, w := e.d.InitProducerID(InitRequest{TxnID: strp("a"), TimeoutMs: 60000, ProducerID: -1, ProducerEpoch: -1})
	mustWait(t, w)
	_, w = e.d.Add(AddRequest{TxnID: "a", ProducerID: init.ProducerID, ProducerEpoch: 0, Partitions: []TopicPartition{{"foo", 0}}, Groups: []string{"g"}})
	mustWait(t, w)
	_, _ = e.d.EndTxn(EndRequest{TxnID: "a", ProducerID: init.ProducerID, ProducerEpoch: 0, Commit: true})
	<-m.started // the prepare record is durable: markers started
	crashed := fs.Crash(nil)
	close(m.hold)
	e.close()

	m2 := &fakeMarkers{}
	e2 := openEnv(t, crashed, m2, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		metas, _, w := e2.d.Describe([]string{"a"})
		mustWait(t, w)
		if metas[0].State == CompleteCommit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("transaction not completed after restart: %s", metas[0].String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, want := m2.list(), []string{"COMMIT foo/0 1/0"}; !equal(got, want) {
		t.Fatalf("markers after restart %v, want %v", got, want)
	}
}

// Producer ids are never handed out twice, even when a crash loses every
// record that was not fsynced.
func TestDriverProducerIDsUniqueAcrossCrashes(t *testing.T) {
	fs := vfs.NewMem()
	seen := map[int64]bool{}
	for round := 0; round < 4; round++ {
		e := openEnv(t, fs, &fakeMarkers{}, nil)
		for i := 0; i < 7; i++ {
			res, w := e.d.InitProducerID(InitRequest{ProducerID: -1, ProducerEpoch: -1})
			mustWait(t, w)
			if seen[res.ProducerID] {
				t.Fatalf("round %d: producer id %d handed out twice", round, res.ProducerID)
			}
			seen[res.ProducerID] = true
		}
		fs = fs.Crash(nil)
		e.close()
	}
}

func TestDriverTimeoutAbortsWithEpochBump(t *testing.T) {
	m := &fakeMarkers{}
	e := openEnv(t, vfs.NewMem(), m, nil)
	init, w := e.d.InitProducerID(InitRequest{TxnID: strp("slow"), TimeoutMs: 100, ProducerID: -1, ProducerEpoch: -1})
	mustWait(t, w)
	_, w = e.d.Add(AddRequest{TxnID: "slow", ProducerID: init.ProducerID, ProducerEpoch: 0, Partitions: []TopicPartition{{"foo", 3}}})
	mustWait(t, w)
	deadline := time.Now().Add(5 * time.Second)
	for len(m.list()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("timed-out transaction never aborted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got, want := m.list(), []string{"ABORT foo/3 1/1"}; !equal(got, want) {
		t.Fatalf("markers %v, want %v", got, want)
	}
	err := e.d.CheckProduce("slow", init.ProducerID, 0, TopicPartition{"foo", 3}, false)
	if err != kerr.InvalidProducerEpoch {
		t.Fatalf("produce at the fenced epoch: %v", err)
	}
}

// Compaction rewrites the live state and drops the log before it; a
// restart from the compacted log has the same state.
func TestDriverCompaction(t *testing.T) {
	fs := vfs.NewMem()
	e := openEnv(t, fs, &fakeMarkers{}, func(c *DriverConfig) { c.SnapshotEvery = 1 << 30 })
	ids := []string{"a", "b", "c"}
	for round := 0; round < 20; round++ {
		for _, id := range ids {
			_, w := e.d.InitProducerID(InitRequest{TxnID: &id, TimeoutMs: 60000, ProducerID: -1, ProducerEpoch: -1})
			mustWait(t, w)
		}
	}
	before := e.part.LogEndOffset()
	e.d.Compact()
	if start := e.part.LogStartOffset(); start != before {
		t.Fatalf("log start %d after compaction, want %d", start, before)
	}
	var want []Meta
	e.d.Machine(func(m *Machine) { want = m.List(time.UnixMilli(0), Filter{}) })
	fs = fs.Crash(nil)
	e.close()
	e2 := openEnv(t, fs, &fakeMarkers{}, nil)
	var got []Meta
	e2.d.Machine(func(m *Machine) { got = m.List(time.UnixMilli(0), Filter{}) })
	if len(got) != len(want) {
		t.Fatalf("after restart %d ids, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].String() != want[i].String() {
			t.Fatalf("after restart %s, want %s", got[i].String(), want[i].String())
		}
	}
	res, w := e2.d.InitProducerID(InitRequest{TxnID: strp("a"), TimeoutMs: 60000, ProducerID: -1, ProducerEpoch: -1})
	mustWait(t, w)
	if res.ProducerEpoch != 20 {
		t.Fatalf("epoch after restart %d, want 20", res.ProducerEpoch)
	}
}

func TestCheckProduceImplicitAddIsDurable(t *testing.T) {
	e := openEnv(t, vfs.NewMem(), &fakeMarkers{}, nil)
	init, w := e.d.InitProducerID(InitRequest{TxnID: strp("p"), TimeoutMs: 60000, ProducerID: -1, ProducerEpoch: -1})
	mustWait(t, w)
	if err := e.d.CheckProduce("p", init.ProducerID, 0, TopicPartition{"foo", 0}, false); err != kerr.InvalidTxnState {
		t.Fatalf("verify before add: %v", err)
	}
	if err := e.d.CheckProduce("p", init.ProducerID, 0, TopicPartition{"foo", 0}, true); err != nil {
		t.Fatalf("implicit add: %v", err)
	}
	if hw, end := e.part.HighWatermark(), e.part.LogEndOffset(); hw != end {
		t.Fatalf("implicit add returned before its record was durable (hw %d, end %d)", hw, end)
	}
	if err := e.d.CheckProduce("p", init.ProducerID, 0, TopicPartition{"foo", 0}, false); err != nil {
		t.Fatalf("verify after add: %v", err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A failed fsync of the transaction log makes the coordinator unavailable
// for good: its memory may be ahead of its disk, so nothing it decided
// after the failure may be revealed, now or later.
func TestDriverLogFailureIsSticky(t *testing.T) {
	faulty := vfs.NewFaulty(vfs.NewMem())
	e := openEnv(t, faulty, &fakeMarkers{}, nil)
	res, w := e.d.InitProducerID(InitRequest{TxnID: strp("f"), TimeoutMs: 60000, ProducerID: -1, ProducerEpoch: -1})
	mustWait(t, w)
	faulty.FailAfter(vfs.OpSync, 0, nil)
	_, w = e.d.Add(AddRequest{TxnID: "f", ProducerID: res.ProducerID, ProducerEpoch: 0, Partitions: []TopicPartition{{"foo", 0}}})
	if err := w(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("add after a failed fsync: %v, want ErrUnavailable", err)
	}
	faulty.Clear()
	if r, _ := e.d.InitProducerID(InitRequest{ProducerID: -1, ProducerEpoch: -1}); r.Err != kerr.CoordinatorNotAvailable {
		t.Fatalf("init after the failure: %v, want COORDINATOR_NOT_AVAILABLE", r.Err)
	}
	if err := e.d.CheckProduce("f", res.ProducerID, 0, TopicPartition{"foo", 0}, true); err != kerr.CoordinatorNotAvailable {
		t.Fatalf("produce check after the failure: %v", err)
	}
}

// A control batch in the coordinator's log (forged over WriteTxnMarkers
// before internal topics were refused) is skipped on replay: the driver
// starts, and the state around it survives.
func TestDriverReplaySkipsControlBatches(t *testing.T) {
	fs := vfs.NewMem()
	e := openEnv(t, fs, &fakeMarkers{}, nil)
	first, w := e.d.InitProducerID(InitRequest{TxnID: strp("a"), ProducerID: -1, ProducerEpoch: -1, TimeoutMs: 60000})
	mustWait(t, w)
	if err := e.part.WriteTxnMarker(77, 0, true, 0); err != nil {
		t.Fatal(err)
	}
	e.close()
	e = openEnv(t, fs, &fakeMarkers{}, nil)
	metas, found, w := e.d.Describe([]string{"a"})
	mustWait(t, w)
	if !found[0] || metas[0].ProducerID != first.ProducerID {
		t.Fatalf("after replaying past a forged marker: %+v found=%v, want producer %d", metas[0], found[0], first.ProducerID)
	}
}
