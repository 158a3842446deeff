package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// producedRecord is what a client wrote and had acknowledged (plain) or
// committed/aborted (transactional).
type producedRecord struct {
	key, value []byte
	aborted    bool
}

// TestCompactionSurvivesSIGKILL: random keyed writes (idempotent and
// transactional, a third of the transactions aborted) to a compacted topic
// whose cleaner runs every 20 ms, throttled so that a pass takes a while,
// and `exactly serve` SIGKILLed at a random moment after each round, while
// it cleans. After every restart a
// read_committed restore equals the model's table and every record read
// back is one that was written, at its offset, never an aborted one under
// read_committed. At the end the data directory is opened offline, cleaned
// to the end, and must hold each key at most once below the active
// segment, no aborted record, and the model's table.
func TestCompactionSurvivesSIGKILL(t *testing.T) {
	testenv.SkipShort(t, "subprocess SIGKILL compaction test")
	const topic, rounds = "compacted", 6
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	dataDir := t.TempDir()
	addr := freePort(t)
	// A throttled cleaner (20 kB/s) spends most of its time inside a
	// pass, so kills land in one.
	flags := []string{"--set", "log.cleaner.backoff.ms=20", "--set", "log.cleaner.io.max.bytes.per.second=20000"}
	broker := startBroker(t, dataDir, addr, flags...)
	admin, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	resp, err := kadm.NewClient(admin).CreateTopic(ctx, 1, 1, map[string]*string{
		"cleanup.policy": kadm.StringPtr("compact"), "segment.bytes": kadm.StringPtr("4096"),
		"min.cleanable.dirty.ratio": kadm.StringPtr("0.01"),
	}, topic)
	if err == nil {
		err = resp.Err
	}
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}

	written := map[int64]producedRecord{}
	table := map[string]string{}
	for round := 0; round < rounds; round++ {
		plain, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.RecordRetries(100))
		if err != nil {
			t.Fatal(err)
		}
		txn, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.TransactionalID("compacting"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 40; i++ {
			key := []byte(fmt.Sprintf("key-%02d", rng.Intn(30)))
			if rng.Intn(8) == 0 {
				key = []byte(fmt.Sprintf("once-%d-%d", round, i))
			}
			value := []byte(fmt.Sprintf("v-%d-%d", round, i))
			if rng.Intn(10) == 0 {
				value = nil
			}
			if rng.Intn(3) > 0 {
				r := &kgo.Record{Key: key, Value: value}
				if err := plain.ProduceSync(ctx, r).FirstErr(); err != nil {
					t.Fatal(err)
				}
				written[r.Offset] = producedRecord{key: key, value: value}
				applyTable(table, key, value)
				continue
			}
			commit := rng.Intn(3) > 0
			if err := txn.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			var recs []*kgo.Record
			for j := 0; j < 1+rng.Intn(3); j++ {
				r := &kgo.Record{Key: []byte(fmt.Sprintf("key-%02d", rng.Intn(30))), Value: []byte(fmt.Sprintf("t-%d-%d-%d-%v", round, i, j, commit))}
				if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
					t.Fatal(err)
				}
				recs = append(recs, r)
			}
			if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				written[r.Offset] = producedRecord{key: r.Key, value: r.Value, aborted: !commit}
				if commit {
					applyTable(table, r.Key, r.Value)
				}
			}
		}
		plain.Close()
		txn.Close()
		// The cleaner now has dirty segments: kill it at a random moment.
		time.Sleep(time.Duration(100+rng.Intn(400)) * time.Millisecond)
		broker.kill()
		// How often a kill lands inside a swap is luck; say so in the log.
		if names, err := os.ReadDir(filepath.Join(dataDir, topic+"-0")); err == nil {
			for _, n := range names {
				if ext := filepath.Ext(n.Name()); ext == ".cleaned" || ext == ".swap" {
					t.Logf("round %d: killed with %s on disk", round, n.Name())
				}
			}
		}
		broker = startBroker(t, dataDir, addr, flags...)
		checkRestored(t, addr, topic, written, table, round)
	}
	// The broker's cleaner completes a swap (it writes its checkpoint at
	// its first one). The kills may all have landed before any swap, so
	// the last broker is given time to finish one before it is killed.
	checkpoint := filepath.Join(dataDir, topic+"-0", "cleaner-offset.checkpoint")
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := os.Stat(checkpoint)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broker never cleaned the topic: %v", err)
		}
	}
	broker.kill()

	// Offline: finish cleaning and check the compacted view.
	p, err := partition.Open(vfs.OS(), filepath.Join(dataDir, topic+"-0"), topic, 0, log.DefaultConfig(),
		slog.New(slog.DiscardHandler), partition.Options{})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			p.Close()
		}
	}()
	for {
		st, err := p.Clean(partition.CleanConfig{NowMs: time.Now().UnixMilli(), DeleteRetentionMs: 86400000, Map: log.NewOffsetMap(1 << 20)})
		if err != nil {
			t.Fatal(err)
		}
		if st.End == 0 {
			break
		}
	}
	segs := p.Log().Segments()
	active := segs[len(segs)-1].BaseOffset
	seen := map[string]int64{}
	view := map[string]string{}
	for off := p.LogStartOffset(); off < p.HighWatermark(); {
		chunk, err := p.Read(off, 1<<20, false)
		if err != nil || len(chunk) == 0 {
			t.Fatalf("offline read at %d: %v", off, err)
		}
		record.Split(chunk, func(h record.Header, b []byte) error {
			if h.LastOffset() < off {
				return nil
			}
			off = h.LastOffset() + 1
			if h.IsControl() {
				return nil
			}
			return record.ForEach(h, b, func(r record.Record) bool {
				o := h.BaseOffset + int64(r.OffsetDelta)
				w, ok := written[o]
				switch {
				case !ok || !bytes.Equal(w.key, r.Key) || !bytes.Equal(w.value, r.Value):
					t.Fatalf("offset %d holds %q=%q, not what was written there", o, r.Key, r.Value)
				case w.aborted && o < active:
					t.Fatalf("aborted record %q=%q at %d survived cleaning", r.Key, r.Value, o)
				case o < active && seen[string(r.Key)] > 0:
					t.Fatalf("key %s at %d and %d below the active segment after cleaning", r.Key, seen[string(r.Key)]-1, o)
				}
				seen[string(r.Key)] = o + 1
				if !w.aborted {
					applyTable(view, r.Key, r.Value)
				}
				return true
			})
		})
	}
	if len(view) != len(table) {
		t.Fatalf("offline compacted table has %d keys, model %d", len(view), len(table))
	}
	for k, v := range table {
		if view[k] != v {
			t.Fatalf("offline compacted table: %s = %q, model %q", k, view[k], v)
		}
	}
	// The offline checker accepts the compacted (gapped) log.
	closed = true
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(exactlyBinary(t), "check-data", "--data-dir", dataDir).CombinedOutput(); err != nil {
		t.Fatalf("check-data on the compacted directory: %v\n%s", err, out)
	}
}

func applyTable(table map[string]string, key, value []byte) {
	if value == nil {
		delete(table, string(key))
		return
	}
	table[string(key)] = string(value)
}

// checkRestored restores the table read_committed and checks it, and every
// record read back, against what was written.
func checkRestored(t *testing.T, addr, topic string, written map[int64]producedRecord, table map[string]string, round int) {
	t.Helper()
	got := map[string]string{}
	for _, r := range testenv.ReadToEnd(t, addr, topic, true)[0] {
		w, ok := written[r.Offset]
		if !ok || !bytes.Equal(w.key, r.Key) || !bytes.Equal(w.value, r.Value) {
			t.Fatalf("round %d: offset %d holds %q=%q, not what was written there", round, r.Offset, r.Key, r.Value)
		}
		if w.aborted {
			t.Fatalf("round %d: aborted record %q=%q at %d read committed", round, r.Key, r.Value, r.Offset)
		}
		applyTable(got, r.Key, r.Value)
	}
	if len(got) != len(table) {
		t.Fatalf("round %d: restored %d keys, model %d", round, len(got), len(table))
	}
	for k, v := range table {
		if got[k] != v {
			t.Fatalf("round %d: restored %s = %q, model %q", round, k, got[k], v)
		}
	}
	testenv.StableEnds(t, addr, topic)
}
