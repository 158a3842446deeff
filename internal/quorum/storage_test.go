package quorum

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
	"go.etcd.io/raft/v3"

	pb "go.etcd.io/raft/v3/raftpb"
)

const storeDir = "/raft"

var errCrashed = errors.New("crashed")

func openTestStorage(fsys vfs.FS) (*diskStorage, error) {
	return openStorage(fsys, storeDir, "c", 1, storageOptions{segmentBytes: 300}, slog.New(slog.DiscardHandler))
}

func testEntry(i, term uint64) *pb.Entry {
	return &pb.Entry{Index: new(i), Term: new(term), Data: fmt.Appendf(nil, "entry-%d", i)}
}

// acked is what the workload was told is durable.
type acked struct {
	last uint64 // entries 1..last were acknowledged
	hs   *pb.HardState
}

// workload appends 40 entries one save at a time, with a snapshot every 12,
// and stops at the first error (the crash).
func workload(fsys vfs.FS, ack *acked) error {
	st, err := openTestStorage(fsys)
	if err != nil {
		return err
	}
	defer st.close()
	cs := &pb.ConfState{Voters: []uint64{1}}
	for i := uint64(1); i <= 40; i++ {
		hs := &pb.HardState{Term: new(1 + i/10), Vote: new(uint64(1)), Commit: new(i - 1)}
		if err := st.save(nil, hs, []*pb.Entry{testEntry(i, 1+i/10)}, true); err != nil {
			return err
		}
		ack.last, ack.hs = i, hs
		if i%12 == 0 {
			if err := st.snapshot(i-1, cs, fmt.Appendf(nil, "state-%d", i-1), 2); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkRecovered reopens a crashed filesystem and checks every
// acknowledged entry and the acknowledged hard state survived.
func checkRecovered(t *testing.T, fsys vfs.FS, ack acked, what string) {
	t.Helper()
	st, err := openTestStorage(fsys)
	if err != nil {
		t.Fatalf("%s: reopen: %v", what, err)
	}
	defer st.close()
	hs, _, _ := st.InitialState()
	if ack.hs != nil {
		if hs.GetTerm() < ack.hs.GetTerm() || hs.GetCommit() < ack.hs.GetCommit() || hs.GetVote() != ack.hs.GetVote() {
			t.Fatalf("%s: hard state %v, acknowledged %v", what, hs, ack.hs)
		}
	}
	last, _ := st.LastIndex()
	if last < ack.last {
		t.Fatalf("%s: log ends at %d, %d were acknowledged", what, last, ack.last)
	}
	snap, _ := st.Snapshot()
	first, _ := st.FirstIndex()
	if ack.last > 0 && first > ack.last+1 {
		t.Fatalf("%s: first index %d past the acknowledged %d", what, first, ack.last)
	}
	if first <= last {
		ents, err := st.Entries(first, last+1, 1<<30)
		if err != nil {
			t.Fatalf("%s: entries: %v", what, err)
		}
		for _, e := range ents {
			if want := fmt.Sprintf("entry-%d", e.GetIndex()); string(e.GetData()) != want || e.GetTerm() != 1+e.GetIndex()/10 {
				t.Fatalf("%s: entry %d is %q term %d", what, e.GetIndex(), e.GetData(), e.GetTerm())
			}
		}
	}
	if idx := snap.GetMetadata().GetIndex(); idx > 0 && string(snap.GetData()) != fmt.Sprintf("state-%d", idx) {
		t.Fatalf("%s: snapshot %d holds %q", what, idx, snap.GetData())
	}
	// The recovered storage accepts new writes and reopens again.
	next := last + 1
	if err := st.save(nil, &pb.HardState{Term: new(1 + next/10), Vote: new(uint64(1)), Commit: new(last)}, []*pb.Entry{testEntry(next, 1+next/10)}, true); err != nil {
		t.Fatalf("%s: write after recovery: %v", what, err)
	}
	st.close()
	st2, err := openTestStorage(fsys)
	if err != nil {
		t.Fatalf("%s: second reopen: %v", what, err)
	}
	if l, _ := st2.LastIndex(); l != next {
		t.Fatalf("%s: after recovery and one write the log ends at %d, want %d", what, l, next)
	}
	st2.close()
}

// A crash at every filesystem operation of the workload, with torn writes
// and partially durable directory operations, loses nothing acknowledged.
func TestStorageCrashAtEveryOperation(t *testing.T) {
	t.Parallel()
	// Count the operations of a clean run.
	count := 0
	{
		f := vfs.NewFaulty(vfs.NewMem())
		f.SetHook(func(vfs.Op, string) error { count++; return nil })
		var ack acked
		if err := workload(f, &ack); err != nil {
			t.Fatal(err)
		}
		if ack.last != 40 {
			t.Fatalf("clean run acknowledged %d entries", ack.last)
		}
	}
	t.Logf("crashing at each of %d operations, 3 seeds each", count)
	for point := 0; point < count; point++ {
		for seed := int64(0); seed < 3; seed++ {
			mem := vfs.NewMem()
			f := vfs.NewFaulty(mem)
			var crashed *vfs.MemFS
			n := 0
			rng := rand.New(rand.NewSource(seed*1000 + int64(point)))
			f.SetHook(func(vfs.Op, string) error {
				if crashed != nil {
					return errCrashed
				}
				if n == point {
					crashed = mem.Crash(rng)
					return errCrashed
				}
				n++
				return nil
			})
			var ack acked
			err := workload(f, &ack)
			if crashed == nil {
				t.Fatalf("point %d: no crash (err %v)", point, err)
			}
			checkRecovered(t, crashed, ack, fmt.Sprintf("crash at op %d seed %d", point, seed))
		}
	}
}

func lastSegment(t *testing.T, fsys vfs.FS) string {
	t.Helper()
	names, err := fsys.ReadDir(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for _, n := range names {
		if _, ok := parseSegmentName(n); ok {
			last = n
		}
	}
	return filepath.Join(storeDir, last)
}

func writeEntries(t *testing.T, fsys vfs.FS, from, to uint64) {
	t.Helper()
	st, err := openStorage(fsys, storeDir, "c", 1, storageOptions{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	for i := from; i <= to; i++ {
		if err := st.save(nil, &pb.HardState{Term: new(uint64(1)), Commit: new(i - 1)}, []*pb.Entry{testEntry(i, 1)}, true); err != nil {
			t.Fatal(err)
		}
	}
}

func fileBytes(t *testing.T, fsys vfs.FS, path string) []byte {
	t.Helper()
	b, err := vfs.ReadFile(fsys, path, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func overwrite(t *testing.T, fsys vfs.FS, path string, b []byte) {
	t.Helper()
	f, err := fsys.OpenFile(path, os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// The remains of an interrupted write at the end of the last segment (a
// partial record, or a zero-filled one) are truncated; the entries before
// them survive and the log goes on.
func TestStorageTruncatesTornTail(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		tail func(rec []byte) []byte
	}{
		{"partial header", func(rec []byte) []byte { return rec[:5] }},
		{"partial payload", func(rec []byte) []byte { return rec[:len(rec)-3] }},
		{"zero-filled end", func(rec []byte) []byte {
			r := bytes.Clone(rec)
			clear(r[len(r)/2:])
			return r
		}},
		{"zero-filled record", func(rec []byte) []byte { return make([]byte, len(rec)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			writeEntries(t, mem, 1, 5)
			seg := lastSegment(t, mem)
			good := fileBytes(t, mem, seg)
			rec := appendRecord(nil, recEntry, []byte("a torn entry that never was acknowledged"))
			overwrite(t, mem, seg, append(bytes.Clone(good), tc.tail(rec)...))
			st, err := openTestStorage(mem)
			if err != nil {
				t.Fatalf("torn tail refused: %v", err)
			}
			if last, _ := st.LastIndex(); last != 5 {
				t.Fatalf("log ends at %d, want 5", last)
			}
			st.close()
			if got := fileBytes(t, mem, seg); !bytes.Equal(got, good) {
				t.Fatalf("segment is %d bytes after recovery, want the %d before the torn tail", len(got), len(good))
			}
			writeEntries(t, mem, 6, 7)
			st, err = openTestStorage(mem)
			if err != nil {
				t.Fatal(err)
			}
			if last, _ := st.LastIndex(); last != 7 {
				t.Fatalf("log ends at %d after more writes, want 7", last)
			}
			st.close()
		})
	}
}

// Damage that is not a torn tail — inside a segment, in a complete last
// record, or anywhere in an older segment — is an error naming the file
// and offset, and the file is left as it was.
func TestStorageReportsCorruption(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// damage returns the path damaged.
		damage func(t *testing.T, fsys vfs.FS) string
	}{
		{"middle of the last segment", func(t *testing.T, fsys vfs.FS) string {
			seg := lastSegment(t, fsys)
			b := fileBytes(t, fsys, seg)
			b[len(b)/2] ^= 0x40
			overwrite(t, fsys, seg, b)
			return seg
		}},
		{"complete last record", func(t *testing.T, fsys vfs.FS) string {
			seg := lastSegment(t, fsys)
			b := fileBytes(t, fsys, seg)
			b[len(b)-4] ^= 0x01 // inside the payload; the trailer is intact
			overwrite(t, fsys, seg, b)
			return seg
		}},
		{"zeroed middle", func(t *testing.T, fsys vfs.FS) string {
			seg := lastSegment(t, fsys)
			b := fileBytes(t, fsys, seg)
			clear(b[20:60])
			overwrite(t, fsys, seg, b)
			return seg
		}},
		{"older segment tail", func(t *testing.T, fsys vfs.FS) string {
			seg := filepath.Join(storeDir, segmentName(1))
			b := fileBytes(t, fsys, seg)
			overwrite(t, fsys, seg, b[:len(b)-3])
			return seg
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := vfs.NewMem()
			writeEntries(t, mem, 1, 20)
			if tc.name == "older segment tail" {
				st, err := openStorage(mem, storeDir, "c", 1, storageOptions{}, slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatal(err)
				}
				if err := st.wal.releaseTo(0); err != nil { // start a second segment
					t.Fatal(err)
				}
				st.close()
				writeEntries(t, mem, 21, 22)
			}
			path := tc.damage(t, mem)
			before := fileBytes(t, mem, path)
			_, err := openTestStorage(mem)
			if err == nil {
				t.Fatal("damaged log opened")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset") {
				t.Fatalf("error %q does not name %s and an offset", err, path)
			}
			if after := fileBytes(t, mem, path); !bytes.Equal(before, after) {
				t.Fatal("damaged file was modified")
			}
		})
	}
}

// A damaged snapshot file is an error, never skipped in favour of an older
// one or of the log.
func TestStorageReportsDamagedSnapshot(t *testing.T) {
	t.Parallel()
	mem := vfs.NewMem()
	st, err := openTestStorage(mem)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 5; i++ {
		if err := st.save(nil, &pb.HardState{Term: new(uint64(1)), Commit: new(i)}, []*pb.Entry{testEntry(i, 1)}, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.snapshot(4, &pb.ConfState{Voters: []uint64{1}}, []byte("state"), 0); err != nil {
		t.Fatal(err)
	}
	st.close()
	path := filepath.Join(storeDir, snapshotName(1, 4))
	b := fileBytes(t, mem, path)
	b[len(b)-1] ^= 0xff
	overwrite(t, mem, path, b)
	if _, err := openTestStorage(mem); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("damaged snapshot: err %v, want one naming %s", err, path)
	}
}

// A log replaced by a received snapshot (its entries void) comes back as
// the snapshot alone, even though the void entries are still in the WAL.
func TestStorageSnapshotReplacesLog(t *testing.T) {
	t.Parallel()
	mem := vfs.NewMem()
	writeEntries(t, mem, 1, 8)
	st, err := openTestStorage(mem)
	if err != nil {
		t.Fatal(err)
	}
	snap := &pb.Snapshot{Data: []byte("leader-state"), Metadata: &pb.SnapshotMetadata{
		Index: new(uint64(5)), Term: new(uint64(3)), ConfState: &pb.ConfState{Voters: []uint64{1, 2, 3}},
	}}
	if err := st.save(snap, &pb.HardState{Term: new(uint64(3)), Commit: new(uint64(5))}, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := st.save(nil, nil, []*pb.Entry{testEntry(6, 3)}, true); err != nil {
		t.Fatal(err)
	}
	st.close()
	st, err = openTestStorage(mem)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	first, _ := st.FirstIndex()
	last, _ := st.LastIndex()
	if first != 6 || last != 6 {
		t.Fatalf("log is [%d, %d], want [6, 6]", first, last)
	}
	if term, _ := st.Term(6); term != 3 {
		t.Fatalf("entry 6 has term %d, want 3 (the void entry 6 came back)", term)
	}
	if s, _ := st.Snapshot(); raft.IsEmptySnap(s) || string(s.GetData()) != "leader-state" {
		t.Fatalf("snapshot %v", s)
	}
}

// Another node's or cluster's directory is refused.
func TestStorageRefusesForeignDirectory(t *testing.T) {
	t.Parallel()
	mem := vfs.NewMem()
	writeEntries(t, mem, 1, 2)
	if _, err := openStorage(mem, storeDir, "other", 1, storageOptions{}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("directory of cluster c opened for cluster other")
	}
	if _, err := openStorage(mem, storeDir, "c", 2, storageOptions{}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("directory of node 1 opened for node 2")
	}
}
