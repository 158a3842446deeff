package partition

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand"
	"testing"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// kv is one record of a keyed test batch; a nil value is a tombstone.
type kv struct{ key, value []byte }

// keyedBatch builds a produced batch of records with keys (spec.n is
// ignored), all stamped ts.
func keyedBatch(s spec, ts int64, recs []kv) ([]byte, record.Header) {
	var raw []byte
	for i, r := range recs {
		rec := kmsg.NewRecord()
		rec.OffsetDelta = int32(i)
		rec.Key, rec.Value = r.key, r.value
		body := rec.AppendTo(nil)[1:]
		raw = binary.AppendVarint(raw, int64(len(body)))
		raw = append(raw, body...)
	}
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.LastOffsetDelta = int32(len(recs) - 1)
	b.FirstTimestamp, b.MaxTimestamp = ts, ts
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = s.pid, s.epoch, s.seq
	if s.pid < 0 {
		b.ProducerEpoch, b.FirstSequence = -1, -1
	}
	if s.txn {
		b.Attributes = record.AttrTransactional
	}
	b.NumRecords = int32(len(recs))
	b.Records = raw
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	h, err := record.Validate(out)
	if err != nil {
		panic(err)
	}
	return out, h
}

// modelRecord is a record the model test appended.
type modelRecord struct {
	offset     int64
	key, value []byte
	txn        int // transaction number, 0 if none
}

// compactionModel drives a partition with random keyed writes from a plain,
// an idempotent and two transactional producers, and knows what a fully
// compacted log must hold.
type compactionModel struct {
	rng     *rand.Rand
	recs    []modelRecord
	aborted map[int]bool
	idemSeq int32
	txnSeq  map[int64]int32
	nextTxn int
	ts      int64
	unique  int
}

func (m *compactionModel) randomRecords(n int) []kv {
	out := make([]kv, n)
	for i := range out {
		out[i].key = fmt.Appendf(nil, "k%02d", m.rng.Intn(12))
		if m.rng.Intn(4) == 0 { // a key written once: its record is the latest for ever
			m.unique++
			out[i].key = fmt.Appendf(nil, "u%d", m.unique)
		}
		if m.rng.Intn(6) > 0 {
			out[i].value = fmt.Appendf(nil, "v%d", m.rng.Int63())
		}
	}
	return out
}

func (m *compactionModel) add(t *testing.T, p *Partition, s spec, recs []kv, txn int) {
	t.Helper()
	m.ts++
	raw, h := keyedBatch(s, m.ts, recs)
	res, err := p.Append(raw, h)
	if err != nil || res.Duplicate {
		t.Fatalf("append %+v: %+v %v", s, res, err)
	}
	for i, r := range recs {
		m.recs = append(m.recs, modelRecord{offset: res.BaseOffset + int64(i), key: r.key, value: r.value, txn: txn})
	}
}

// run appends ops random batches and ends every transaction it opened.
func (m *compactionModel) run(t *testing.T, p *Partition, ops int) {
	t.Helper()
	open := map[int64]int{} // producer id -> transaction number
	for i := 0; i < ops; i++ {
		recs := m.randomRecords(1 + m.rng.Intn(3))
		switch c := m.rng.Intn(10); {
		case c < 3:
			m.add(t, p, spec{pid: -1}, recs, 0)
		case c < 6:
			m.add(t, p, spec{pid: 1, seq: m.idemSeq}, recs, 0)
			m.idemSeq += int32(len(recs))
		default:
			pid := int64(10 + c%2)
			if open[pid] == 0 {
				m.nextTxn++
				open[pid] = m.nextTxn
			}
			m.add(t, p, spec{pid: pid, seq: m.txnSeq[pid], txn: true}, recs, open[pid])
			m.txnSeq[pid] += int32(len(recs))
			if m.rng.Intn(3) == 0 {
				m.endTxn(t, p, pid, open[pid])
				delete(open, pid)
			}
		}
	}
	for pid, txn := range open {
		m.endTxn(t, p, pid, txn)
	}
	if err := p.WaitDurable(p.LogEndOffset()); err != nil {
		t.Fatal(err)
	}
}

func (m *compactionModel) endTxn(t *testing.T, p *Partition, pid int64, txn int) {
	t.Helper()
	commit := m.rng.Intn(3) > 0
	if !commit {
		m.aborted[txn] = true
	}
	if err := p.WriteTxnMarker(pid, 0, commit, 0); err != nil {
		t.Fatal(err)
	}
}

// latest returns, per key, the model's last non-aborted record below
// bound.
func (m *compactionModel) latest(bound int64) map[string]modelRecord {
	out := map[string]modelRecord{}
	for _, r := range m.recs {
		if r.offset < bound && !m.aborted[r.txn] {
			out[string(r.key)] = r
		}
	}
	return out
}

// expected is the record view of a log fully compacted below bound:
// there, only each key's latest record (a tombstone only while
// delete.retention.ms has not passed); from bound on, everything.
func (m *compactionModel) expected(bound int64, tombstonesExpired bool) []modelRecord {
	latest := m.latest(bound)
	var out []modelRecord
	for _, r := range m.recs {
		if r.offset >= bound {
			out = append(out, r)
			continue
		}
		if l := latest[string(r.key)]; l.offset == r.offset && (r.value != nil || !tombstonesExpired) {
			out = append(out, r)
		}
	}
	return out
}

// readView reads every data record of p's log (read_uncommitted), and
// checks the batches on the way: offsets increasing, markers only where
// a transaction of their producer was.
func readView(t *testing.T, p *Partition) []modelRecord {
	t.Helper()
	var out []modelRecord
	last := int64(-1)
	for off := p.LogStartOffset(); off < p.HighWatermark(); {
		chunk, err := p.Read(off, 1<<20, false)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if len(chunk) == 0 {
			break
		}
		next := off
		if _, err := record.Split(chunk, func(h record.Header, b []byte) error {
			if h.LastOffset() < off {
				return nil
			}
			if h.BaseOffset <= last {
				return fmt.Errorf("batch at %d after offset %d", h.BaseOffset, last)
			}
			last = h.LastOffset()
			next = h.LastOffset() + 1
			if h.IsControl() {
				return nil
			}
			return record.ForEach(h, b, func(r record.Record) bool {
				out = append(out, modelRecord{offset: h.BaseOffset + int64(r.OffsetDelta), key: r.Key, value: r.Value})
				return true
			})
		}); err != nil {
			t.Fatal(err)
		}
		off = next
	}
	return out
}

func sameRecord(a, b modelRecord) bool {
	return a.offset == b.offset && bytes.Equal(a.key, b.key) && bytes.Equal(a.value, b.value) && (a.value == nil) == (b.value == nil)
}

func compactedConfig() log.Config {
	cfg := log.DefaultConfig()
	cfg.SegmentBytes = 700
	cfg.IndexIntervalBytes = 64
	return cfg
}

func openCompacted(t *testing.T, fsys vfs.FS) *Partition {
	t.Helper()
	p, err := Open(fsys, "/data/t-0", "t", 0, compactedConfig(), quiet, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Err(); err != nil {
		t.Fatalf("partition offline after open: %v", err)
	}
	return p
}

// cleanFully runs cleaning passes until one finds nothing dirty.
func cleanFully(t *testing.T, p *Partition, cfg CleanConfig) {
	t.Helper()
	for i := 0; ; i++ {
		st, err := p.Clean(cfg)
		if err != nil {
			t.Fatalf("clean: %v", err)
		}
		if st.End == 0 {
			return
		}
		if i > 1000 {
			t.Fatal("cleaning makes no progress")
		}
	}
}

// TestCompactionModelWithCrashes is the compaction model test: random keyed
// writes, idempotent and transactional producers with aborts, cleaning with
// a dedupe buffer small enough to need several passes, and in each of three
// cycles a crash at a random filesystem operation of a cleaning (MemFS
// keeps only what was fsynced, plus random parts of the rest), then more
// writes on the recovered log. Half the restarts rebuild the producer
// state from the log alone (snapshots removed), half from the newest
// snapshot plus the log after it. After it no record was invented
// or altered, each key's latest committed record is there, no transaction
// reopened (LSO = HW), and once cleaning finishes the log holds exactly the
// model's compacted view. At the end a replay without any snapshot still
// knows the idempotent producer's sequence.
func TestCompactionModelWithCrashes(t *testing.T) {
	for seed := int64(1); seed <= 40; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			mem := vfs.NewMem()
			m := &compactionModel{rng: rng, aborted: map[int]bool{}, txnSeq: map[int64]int32{}}
			tombstonesExpired := seed%2 == 0
			cfg := CleanConfig{NowMs: 1 << 42, DeleteRetentionMs: 1 << 50, Map: log.NewOffsetMap(24 * (3 + rng.Intn(10)))}
			if tombstonesExpired {
				cfg.DeleteRetentionMs = 0
			}
			for cycle := 0; cycle < 3; cycle++ {
				faulty := vfs.NewFaulty(mem)
				p := openCompacted(t, faulty)
				m.run(t, p, 40+rng.Intn(40))
				end := p.LogEndOffset() // all durable: run waits for it
				mem = crashWhileCleaning(t, rng, mem, faulty, p, cfg)
				p.Close()
				if rng.Intn(2) == 0 {
					dropSnapshots(t, mem) // rebuild the producer state from the log alone
				}
				q := openCompacted(t, mem)
				hw := q.HighWatermark()
				if q.LastStableOffset() != hw || hw != end {
					t.Fatalf("cycle %d after the crash: hw %d lso %d, want both %d", cycle, hw, q.LastStableOffset(), end)
				}
				checkNothingInventedOrLost(t, q, m, hw, tombstonesExpired)
				checkCommittedTable(t, q, m)
				segs := q.Log().Segments()
				bound := segs[len(segs)-1].BaseOffset // the active segment is never cleaned
				cleanFully(t, q, cfg)
				checkCompactedView(t, q, m.expected(bound, tombstonesExpired))
				checkCommittedTable(t, q, m)
				q.Close()
			}
			// Without a snapshot, replay must still know the idempotent
			// producer's last sequence.
			mem = mem.Crash(nil)
			dropSnapshots(t, mem)
			r := openCompacted(t, mem)
			defer r.Close()
			if r.LastStableOffset() != r.HighWatermark() {
				t.Fatalf("replay reopened a transaction: lso %d, hw %d", r.LastStableOffset(), r.HighWatermark())
			}
			checkCommittedTable(t, r, m)
			if m.idemSeq > 0 {
				raw, h := keyedBatch(spec{pid: 1, seq: m.idemSeq}, m.ts+1, []kv{{key: []byte("k00"), value: []byte("after")}})
				if _, err := r.Append(raw, h); err != nil {
					t.Fatalf("idempotent producer after compaction and replay: %v", err)
				}
				raw, h = keyedBatch(spec{pid: 1, seq: m.idemSeq + 5}, m.ts+1, []kv{{key: []byte("k00"), value: []byte("gap")}})
				if _, err := r.Append(raw, h); !errors.Is(err, producerstate.ErrOutOfOrderSequence) {
					t.Fatalf("sequence gap accepted after compaction: %v", err)
				}
			}
		})
	}
}

// dropSnapshots removes the producer state snapshots, so that the next
// open rebuilds the producer state from the (compacted) log alone.
func dropSnapshots(t *testing.T, fsys vfs.FS) {
	t.Helper()
	names, err := fsys.ReadDir("/data/t-0")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, ok := parseSnapshotName(n); ok {
			if err := fsys.Remove("/data/t-0/" + n); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// crashWhileCleaning cleans p until a crash at a random disk-changing
// operation (reads change nothing a crash could reveal), or until nothing
// is left to clean, and returns what the disk holds after the crash.
func crashWhileCleaning(t *testing.T, rng *rand.Rand, mem *vfs.MemFS, faulty *vfs.FaultyFS, p *Partition, cfg CleanConfig) *vfs.MemFS {
	t.Helper()
	var crashed *vfs.MemFS
	ops, crashAt := 0, 1+rng.Intn(40)
	faulty.SetHook(func(op vfs.Op, _ string) error {
		if crashed != nil {
			return vfs.ErrInjected
		}
		switch op {
		case vfs.OpReadAt, vfs.OpReadDir, vfs.OpStat, vfs.OpSize, vfs.OpClose:
			return nil
		}
		ops++
		if ops == crashAt {
			crashed = mem.Crash(rng)
			return vfs.ErrInjected
		}
		return nil
	})
	for i := 0; i < 200 && crashed == nil; i++ {
		st, err := p.Clean(cfg)
		if err != nil && crashed == nil {
			t.Fatalf("clean: %v", err)
		}
		if err == nil && st.End == 0 {
			break
		}
	}
	if crashed == nil {
		crashed = mem.Crash(rng)
	}
	faulty.SetHook(nil)
	return crashed
}

// checkNothingInventedOrLost: every record of p is the one appended at its
// offset, and each key's latest committed record below hw is there (a
// tombstone only while it has not expired).
func checkNothingInventedOrLost(t *testing.T, p *Partition, m *compactionModel, hw int64, tombstonesExpired bool) {
	t.Helper()
	orig := map[int64]modelRecord{}
	for _, r := range m.recs {
		orig[r.offset] = r
	}
	present := map[int64]bool{}
	for _, r := range readView(t, p) {
		if o, ok := orig[r.offset]; !ok || !sameRecord(o, r) {
			t.Fatalf("record at %d after the crash is not the one appended: %q=%q", r.offset, r.key, r.value)
		}
		present[r.offset] = true
	}
	for k, l := range m.latest(hw) {
		if !present[l.offset] && (l.value != nil || !tombstonesExpired) {
			t.Fatalf("latest record of %s (offset %d) lost by a crash during cleaning", k, l.offset)
		}
	}
}

// committedTable rebuilds a table as a read_committed consumer does: from
// read_committed fetches, skipping the records of aborted transactions the
// way clients do (a producer is aborted from an aborted transaction's
// first offset until its ABORT marker).
func committedTable(t *testing.T, p *Partition) map[string]string {
	t.Helper()
	table := map[string]string{}
	aborted := p.AbortedTxns(0, p.LastStableOffset())
	skipping := map[int64]bool{}
	for off := p.LogStartOffset(); off < p.LastStableOffset(); {
		chunk, err := p.Read(off, 1<<20, true)
		if err != nil {
			t.Fatalf("read_committed at %d: %v", off, err)
		}
		if len(chunk) == 0 {
			break
		}
		next := off
		if _, err := record.Split(chunk, func(h record.Header, b []byte) error {
			if h.LastOffset() < off {
				return nil
			}
			next = h.LastOffset() + 1
			for len(aborted) > 0 && aborted[0].FirstOffset <= h.LastOffset() {
				skipping[aborted[0].ProducerID] = true
				aborted = aborted[1:]
			}
			if h.IsControl() {
				ctype, _ := controlInfo(h, b)
				if ctype == 0 {
					delete(skipping, h.ProducerID)
				}
				return nil
			}
			if h.IsTransactional() && skipping[h.ProducerID] {
				return nil
			}
			return record.ForEach(h, b, func(r record.Record) bool {
				if r.Value == nil {
					delete(table, string(r.Key))
				} else {
					table[string(r.Key)] = string(r.Value)
				}
				return true
			})
		}); err != nil {
			t.Fatal(err)
		}
		off = next
	}
	return table
}

// checkCommittedTable compares a read_committed restore of p with the
// model's table.
func checkCommittedTable(t *testing.T, p *Partition, m *compactionModel) {
	t.Helper()
	want := map[string]string{}
	for k, r := range m.latest(p.HighWatermark()) {
		if r.value != nil {
			want[k] = string(r.value)
		}
	}
	got := committedTable(t, p)
	if len(got) != len(want) {
		t.Fatalf("read_committed restore has %d keys, model %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("read_committed restore: %s = %q, model %q", k, got[k], v)
		}
	}
}

// checkCompactedView compares p's records with the model's view.
func checkCompactedView(t *testing.T, p *Partition, want []modelRecord) {
	t.Helper()
	got := readView(t, p)
	if len(got) != len(want) {
		t.Fatalf("compacted view has %d records, model %d\ngot  %v\nwant %v", len(got), len(want), got, want)
	}
	for i := range got {
		if !sameRecord(got[i], want[i]) {
			t.Fatalf("record %d: got offset %d %q=%q, want offset %d %q=%q", i, got[i].offset, got[i].key, got[i].value, want[i].offset, want[i].key, want[i].value)
		}
	}
}

// TestCompactionTransactionMarkers: a committed transaction whose record is
// kept keeps its COMMIT marker, an aborted transaction's records go and its
// ABORT marker goes only after its aborted-index entry was dropped (two
// passes), and a replay of the compacted log alone (no snapshot) neither
// reopens a transaction nor hides the committed record behind the later
// abort.
func TestCompactionTransactionMarkers(t *testing.T) {
	mem := vfs.NewMem()
	p := openCompacted(t, mem)
	m := &compactionModel{rng: rand.New(rand.NewSource(1)), aborted: map[int]bool{}, txnSeq: map[int64]int32{}}
	m.add(t, p, spec{pid: 10, txn: true}, []kv{{[]byte("a"), []byte("committed")}}, 1)
	if err := p.WriteTxnMarker(10, 0, true, 0); err != nil {
		t.Fatal(err)
	}
	m.add(t, p, spec{pid: 10, seq: 1, txn: true}, []kv{{[]byte("b"), []byte("aborted")}}, 2)
	m.aborted[2] = true
	if err := p.WriteTxnMarker(10, 0, false, 0); err != nil {
		t.Fatal(err)
	}
	// A later transaction, so that the aborted batch is not the producer's
	// last (which would be kept, emptied, with its marker).
	m.add(t, p, spec{pid: 10, seq: 2, txn: true}, []kv{{[]byte("c"), []byte("committed")}}, 3)
	if err := p.WriteTxnMarker(10, 0, true, 0); err != nil {
		t.Fatal(err)
	}
	filler := func(i int) {
		m.add(t, p, spec{pid: -1}, []kv{{fmt.Appendf(nil, "f%d", i), []byte("filler-value-filler-value")}}, 0)
	}
	for i := 0; i < 30; i++ { // plain records to roll the markers out of the active segment
		filler(i)
	}
	if err := p.WaitDurable(p.LogEndOffset()); err != nil {
		t.Fatal(err)
	}
	cfg := CleanConfig{NowMs: 1 << 42, DeleteRetentionMs: 0, Map: log.NewOffsetMap(1 << 16)}
	st, err := p.Clean(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Unlisted) != 1 || len(p.AbortedTxns(0, p.HighWatermark())) != 0 {
		t.Fatalf("first pass: unlisted %v, aborted index %v; want the abort's entry dropped", st.Unlisted, p.AbortedTxns(0, p.HighWatermark()))
	}
	markers := func(q *Partition) (commits, aborts int) {
		for off := q.LogStartOffset(); off < q.HighWatermark(); {
			chunk, _ := q.Read(off, 1<<20, false)
			record.Split(chunk, func(h record.Header, b []byte) error {
				if h.LastOffset() >= off && h.IsControl() {
					if ct, _ := controlInfo(h, b); ct == 1 {
						commits++
					} else {
						aborts++
					}
				}
				off = max(off, h.LastOffset()+1)
				return nil
			})
		}
		return
	}
	if c, a := markers(p); c != 2 || a != 1 {
		t.Fatalf("after the first pass: %d commit and %d abort markers, want 2 and 1", c, a)
	}
	for i := 0; i < 30; i++ { // dirt for a second pass (overwrites)
		filler(i)
	}
	if err := p.WaitDurable(p.LogEndOffset()); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Clean(cfg); err != nil {
		t.Fatal(err)
	}
	if c, a := markers(p); c != 2 || a != 0 {
		t.Fatalf("after the second pass: %d commit and %d abort markers, want 2 and 0", c, a)
	}
	p.Close()
	dropSnapshots(t, mem)
	q := openCompacted(t, mem)
	defer q.Close()
	if q.LastStableOffset() != q.HighWatermark() {
		t.Fatalf("replay reopened a transaction: lso %d hw %d", q.LastStableOffset(), q.HighWatermark())
	}
	checkCommittedTable(t, q, m)
}
