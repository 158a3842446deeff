package log

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// keyedTestBatch builds an uncompressed batch with one record per key,
// each with a value of valSize bytes, stamped ts.
func keyedTestBatch(keys []string, valSize int, ts int64) []byte {
	var records []byte
	for i, k := range keys {
		r := kmsg.Record{OffsetDelta: int32(i), Key: []byte(k), Value: make([]byte, valSize)}
		body := r.AppendTo(nil)[1:]
		records = binary.AppendVarint(records, int64(len(body)))
		records = append(records, body...)
	}
	b := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1, Magic: 2, LastOffsetDelta: int32(len(keys) - 1),
		FirstTimestamp: ts, MaxTimestamp: ts, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: int32(len(keys)), Records: records,
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

func TestOffsetMap(t *testing.T) {
	m := NewOffsetMap(24 * 10)
	if m.Capacity() != 9 {
		t.Fatalf("capacity %d, want 9 (90%% of 10 slots)", m.Capacity())
	}
	for i := 0; i < 9; i++ {
		if !m.Put([]byte(fmt.Sprint("k", i)), int64(i)) {
			t.Fatalf("put %d refused", i)
		}
	}
	if m.Put([]byte("one more"), 100) {
		t.Fatal("a full map took a new key")
	}
	if !m.Put([]byte("k3"), 42) {
		t.Fatal("a full map refused to update a known key")
	}
	if off, ok := m.Get([]byte("k3")); !ok || off != 42 {
		t.Fatalf("k3 = %d, %v", off, ok)
	}
	if _, ok := m.Get([]byte("one more")); ok {
		t.Fatal("refused key found")
	}
	m.Reset()
	if _, ok := m.Get([]byte("k3")); ok || m.Len() != 0 {
		t.Fatal("reset kept keys")
	}
}

// TestCleanMemoryBoundedByDedupeBuffer measures the heap while a log of
// 40k distinct keys (about 4 MiB) is cleaned with a 96 KiB key map:
// cleaning needs many passes, and what it holds live beyond the map stays
// a small constant (read windows, one batch), whatever the number of keys.
// A Go map of the keys alone would take several MiB.
func TestCleanMemoryBoundedByDedupeBuffer(t *testing.T) {
	// A real disk: MemFS would count the files themselves as heap.
	cfg := DefaultConfig()
	cfg.SegmentBytes = 256 << 10
	l := mustOpen(t, vfs.OS(), filepath.Join(t.TempDir(), "p"), cfg)
	defer l.Close()
	const keys, perBatch = 40_000, 50
	for i := 0; i < keys; i += perBatch {
		var ks []string
		for j := i; j < i+perBatch; j++ {
			ks = append(ks, fmt.Sprintf("key-%08d", j))
		}
		mustAppend(t, l, keyedTestBatch(ks, 64, 1))
	}
	// Overwrite a tenth, so that the passes have something to remove.
	for i := 0; i < keys; i += 10 * perBatch {
		var ks []string
		for j := i; j < i+perBatch; j++ {
			ks = append(ks, fmt.Sprintf("key-%08d", j))
		}
		mustAppend(t, l, keyedTestBatch(ks, 64, 1))
	}
	// Fresh keys after the overwrites, so that the overwrites lie in
	// closed segments.
	const fill = 5000
	for i := 0; i < fill; i += perBatch {
		var ks []string
		for j := i; j < i+perBatch; j++ {
			ks = append(ks, fmt.Sprintf("fill-%08d", j))
		}
		mustAppend(t, l, keyedTestBatch(ks, 64, 1))
	}
	if err := l.Sync(l.NextOffset()); err != nil {
		t.Fatal(err)
	}
	before := l.Size()
	m := NewOffsetMap(96 << 10)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak uint64
	calls := 0
	var charged int64
	sample := func(n int) {
		charged += int64(n)
		calls++
		if calls%500 == 0 {
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	passes := 0
	var io int64
	for {
		st, err := l.Clean(CleanOptions{UpTo: l.NextOffset(), Map: m, Throttle: sample, NowMs: 1 << 40, DeleteRetentionMs: 1 << 50})
		if err != nil {
			t.Fatal(err)
		}
		if st.End == 0 {
			break
		}
		passes++
		io += st.BytesRead + st.BytesWritten
		if st.MapKeys > m.Capacity() {
			t.Fatalf("map holds %d keys, capacity %d", st.MapKeys, m.Capacity())
		}
	}
	if charged != io {
		t.Fatalf("the throttle was charged %d bytes, the passes read and wrote %d", charged, io)
	}
	over := int64(peak) - int64(base)
	t.Logf("log %d -> %d bytes in %d passes; key map %d bytes (%d keys); heap above the start at most %d bytes (%d samples)",
		before, l.Size(), passes, m.Bytes(), m.Capacity(), over, calls/500)
	if passes < 5 {
		t.Fatalf("%d passes: the key map was not the bound", passes)
	}
	if over > 4<<20 {
		t.Fatalf("cleaning held %d bytes of heap beyond its start (key map %d bytes): not bounded by the dedupe buffer", over, m.Bytes())
	}
	// Every key is still there, once below the active segment (which is
	// never cleaned).
	segs := l.Segments()
	active := segs[len(segs)-1].BaseOffset
	seen := map[string]int64{}
	for _, b := range readBatches(t, l, l.StartOffset(), 1<<20) {
		h, _ := record.Parse(b)
		record.ForEach(h, b, func(r record.Record) bool {
			off := h.BaseOffset + int64(r.OffsetDelta)
			if prev, ok := seen[string(r.Key)]; ok && off < active {
				t.Fatalf("key %s at %d and %d after cleaning", r.Key, prev, off)
			}
			seen[string(r.Key)] = off
			return true
		})
	}
	if len(seen) != keys+fill {
		t.Fatalf("%d keys after cleaning, want %d", len(seen), keys+fill)
	}
	if l.Size() >= before {
		t.Fatalf("cleaning removed nothing: %d bytes before, %d after", before, l.Size())
	}
}

// TestSwapReplayedOnOpen: a .swap file left by a crash replaces the
// segments of its range on open, and a .cleaned file is discarded.
func TestSwapReplayedOnOpen(t *testing.T) {
	fsys := vfs.NewMem()
	cfg := smallConfig()
	l := mustOpen(t, fsys, "/p", cfg)
	for i := 0; i < 80; i++ {
		mustAppend(t, l, keyedTestBatch([]string{fmt.Sprint("k", i%4)}, 200, 1))
	}
	segs := l.Segments()
	if len(segs) < 4 {
		t.Fatalf("%d segments", len(segs))
	}
	l.Close()
	// A swap for the first two segments holding only their last batch, a
	// cleaned file for the third.
	last := keyedTestBatch([]string{"k9"}, 10, 1)
	record.SetBaseOffset(last, segs[1].NextOffset-1)
	write := func(name string, b []byte) {
		f, err := fsys.OpenFile(filepath.Join("/p", name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.Write(b)
		f.Sync()
		f.Close()
	}
	write(groupFileName(segs[0].BaseOffset, segs[2].BaseOffset, swapSuffix), last)
	write(groupFileName(segs[2].BaseOffset, segs[3].BaseOffset, cleanedSuffix), last)
	write(cleanerCheckpointName, []byte("v1 0\n"))
	fsys.SyncDir("/p")
	l = mustOpen(t, fsys, "/p", cfg)
	defer l.Close()
	got := l.Segments()
	if len(got) != len(segs)-1 || got[0].BaseOffset != segs[0].BaseOffset || got[0].NextOffset != segs[1].NextOffset || got[1].BaseOffset != segs[2].BaseOffset {
		t.Fatalf("segments after replay %+v, before %+v", got, segs)
	}
	names, _ := fsys.ReadDir("/p")
	for _, n := range names {
		if filepath.Ext(n) == swapSuffix || filepath.Ext(n) == cleanedSuffix {
			t.Fatalf("%s left after open", n)
		}
	}
	b := readBatches(t, l, 0, 1<<20)
	if h, _ := record.Parse(b[0]); h.BaseOffset != segs[1].NextOffset-1 {
		t.Fatalf("first batch at %d, want the swapped one at %d", h.BaseOffset, segs[1].NextOffset-1)
	}
}

// BenchmarkAppendWhileCleaning measures appends to one log (1 KiB batches,
// no fsync) while another log of the same filesystem is cleaned over and
// over, against the same appends alone: the cost of compaction to
// producers of other topics.
func BenchmarkAppendWhileCleaning(b *testing.B) {
	for _, cleaning := range []bool{false, true} {
		b.Run(fmt.Sprintf("cleaning=%v", cleaning), func(b *testing.B) {
			fsys := vfs.OS()
			dir := b.TempDir()
			l := mustOpen(b, fsys, filepath.Join(dir, "produce"), DefaultConfig())
			defer l.Close()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			if cleaning {
				cfg := DefaultConfig()
				cfg.SegmentBytes = 1 << 20
				c := mustOpen(b, fsys, filepath.Join(dir, "compacted"), cfg)
				defer c.Close()
				for i := 0; i < 8000; i++ {
					mustAppend(b, c, keyedTestBatch([]string{fmt.Sprint("k", i%1000), fmt.Sprint("j", i%700)}, 500, 1))
				}
				m := NewOffsetMap(1 << 20)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						// Clean from scratch each time: rewrite everything.
						c.firstDirty.Store(0)
						if _, err := c.Clean(CleanOptions{UpTo: c.NextOffset(), Map: m, NowMs: 1 << 40, DeleteRetentionMs: 1 << 50}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			batch := batch1K()
			b.SetBytes(int64(len(batch)))
			for b.Loop() {
				if _, err := l.Append(batch); err != nil {
					b.Fatal(err)
				}
			}
			close(stop)
			wg.Wait()
		})
	}
}

// TestCleanConcurrentWithAppendsRetentionAndReads runs cleanings while
// appends, retention (compact,delete), DeleteRecordsBefore and readers go
// on: readers always see whole batches in increasing offset order, a group
// whose segments retention took is abandoned, not swapped, and the log
// reopens healthy with the same end.
func TestCleanConcurrentWithAppendsRetentionAndReads(t *testing.T) {
	fsys := vfs.NewMem()
	cfg := smallConfig()
	cfg.RetentionBytes = 40 << 10
	l := mustOpen(t, fsys, "/p", cfg)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	m := NewOffsetMap(24 * 64)
	var swapped atomic.Int64
	run(func() error {
		st, err := l.Clean(CleanOptions{UpTo: l.NextOffset(), Map: m, NowMs: 1 << 42, DeleteRetentionMs: 1 << 50})
		swapped.Add(int64(st.Groups))
		return err
	})
	run(func() error {
		_, err := l.ApplyRetention(time.Now())
		return err
	})
	run(func() error {
		last := int64(-1)
		for off := l.StartOffset(); off < l.NextOffset(); {
			b, err := l.Read(off, 64<<10, l.NextOffset())
			if errors.Is(err, ErrOffsetOutOfRange) {
				return nil // retention moved the start meanwhile
			}
			if err != nil {
				return err
			}
			if len(b) == 0 {
				return nil
			}
			if _, err := record.Split(b, func(h record.Header, _ []byte) error {
				if h.LastOffset() < off {
					return nil
				}
				if h.BaseOffset <= last {
					return fmt.Errorf("batch at %d after offset %d", h.BaseOffset, last)
				}
				last, off = h.LastOffset(), h.LastOffset()+1
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	for i := 0; i < 3000; i++ {
		mustAppend(t, l, keyedTestBatch([]string{fmt.Sprint("k", i%50), fmt.Sprint("u", i)}, 40, time.Now().UnixMilli()))
		if i%500 == 499 {
			if err := l.DeleteRecordsBefore(l.NextOffset() - 200); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d groups swapped in", swapped.Load())
	if swapped.Load() == 0 {
		t.Fatal("no cleaning swapped anything in")
	}
	end := l.NextOffset()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2 := mustOpen(t, fsys, "/p", cfg)
	defer l2.Close()
	if l2.Err() != nil || l2.NextOffset() != end {
		t.Fatalf("reopen: end %d (was %d), err %v", l2.NextOffset(), end, l2.Err())
	}
}

// TestCleanRespectsMinCompactionLag: segments with a batch younger than
// min.compaction.lag.ms are not cleaned; once old enough they are.
func TestCleanRespectsMinCompactionLag(t *testing.T) {
	l := mustOpen(t, vfs.NewMem(), "/p", smallConfig())
	defer l.Close()
	for i := 0; i < 60; i++ {
		mustAppend(t, l, keyedTestBatch([]string{fmt.Sprint("k", i%3)}, 100, 1000))
	}
	opt := CleanOptions{UpTo: l.NextOffset(), Map: NewOffsetMap(1 << 12), NowMs: 1500, MinCompactionLagMs: 1000, DeleteRetentionMs: 1 << 50}
	if st, err := l.Clean(opt); err != nil || st.End != 0 {
		t.Fatalf("young segments cleaned: %+v %v", st, err)
	}
	opt.NowMs = 2001
	if st, err := l.Clean(opt); err != nil || st.RecordsRemoved == 0 {
		t.Fatalf("old enough segments not cleaned: %+v %v", st, err)
	}
}

// TestCleanKeepsBatchCodec: a compressed batch that loses some records to
// cleaning is rewritten in the codec it was written with (as Kafka's
// cleaner does, so a topic's compression.type keeps holding), with the
// records that stay intact.
func TestCleanKeepsBatchCodec(t *testing.T) {
	for _, codec := range []int{record.CompressionGzip, record.CompressionSnappy, record.CompressionLZ4, record.CompressionZstd} {
		l := mustOpen(t, vfs.NewMem(), "/p", smallConfig())
		compressed := func(keys []string) []byte {
			plain := keyedTestBatch(keys, 100, 1)
			_, rec, err := record.ValidateRecode(context.Background(), plain, 1<<20, record.Target{Codec: codec}, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer rec.Release()
			return append([]byte(nil), rec.Bytes...)
		}
		mustAppend(t, l, compressed([]string{"a", "b", "c"}))
		for i := 0; i < 60; i++ { // b's newer value, and enough to roll segments
			mustAppend(t, l, keyedTestBatch([]string{"b"}, 100, 1))
		}
		opt := CleanOptions{UpTo: l.NextOffset(), Map: NewOffsetMap(1 << 12), NowMs: 2, DeleteRetentionMs: 1 << 50, MaxRecordsBytes: 1 << 20}
		if st, err := l.Clean(opt); err != nil || st.RecordsRemoved == 0 {
			t.Fatalf("codec %d: cleaning: %+v %v", codec, st, err)
		}
		first := readBatches(t, l, l.StartOffset(), 1)[0]
		h, err := record.Parse(first)
		if err != nil {
			t.Fatal(err)
		}
		if h.Compression() != codec || h.BaseOffset != 0 || h.NumRecords != 2 {
			t.Fatalf("codec %d: first batch after cleaning: codec %d, base %d, %d records", codec, h.Compression(), h.BaseOffset, h.NumRecords)
		}
		var keys []string
		var deltas []int32
		if err := record.ForEach(h, first, func(r record.Record) bool {
			keys, deltas = append(keys, string(r.Key)), append(deltas, r.OffsetDelta)
			return true
		}); err != nil {
			t.Fatalf("codec %d: %v", codec, err)
		}
		if fmt.Sprint(keys, deltas) != "[a c] [0 2]" {
			t.Fatalf("codec %d: kept %v at deltas %v, want a and c at 0 and 2", codec, keys, deltas)
		}
		l.Close()
	}
}
