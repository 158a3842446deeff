package log

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
)

// flipByte inverts one byte of a file in place.
func flipByte(t *testing.T, fsys vfs.FS, name string, pos int64) {
	t.Helper()
	b, err := vfs.ReadFile(fsys, name, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	b[pos] ^= 0xff
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0)
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

// expectCorrupt checks that l is offline for damage in file at offset, and
// refuses reads and appends.
func expectCorrupt(t *testing.T, l *Log, file string, offset int64) {
	t.Helper()
	ce := l.Corruption()
	if ce == nil || ce.File != file || ce.Offset != offset || !errors.Is(l.Err(), ErrCorrupt) || !errors.Is(l.Err(), ErrLogOffline) {
		t.Fatalf("corruption %+v (err %v), want damage in %s at offset %d", ce, l.Err(), file, offset)
	}
	if _, err := l.Read(l.StartOffset(), 1<<20, l.NextOffset()); !errors.Is(err, ErrLogOffline) {
		t.Fatalf("read of a corrupt log: %v", err)
	}
	if _, err := l.Append(testBatch(1, 10, 0, 0)); !errors.Is(err, ErrLogOffline) {
		t.Fatalf("append to a corrupt log: %v", err)
	}
}

// One flipped byte in the first batch of the last segment, below the
// recovery point: the log opens offline and not one byte is truncated
// (it used to cut the whole segment). At or above the recovery point the
// same damage is a torn tail, as before.
func TestCorruptionBelowRecoveryPointNotTruncated(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		fill(t, fsys, dir, smallConfig(), 50)
		l := mustOpen(t, fsys, dir, smallConfig())
		end, rp := l.NextOffset(), l.RecoveryPoint()
		l.Close()
		if rp != end {
			t.Fatalf("recovery point %d of a cleanly closed log, want %d", rp, end)
		}
		seg := lastSegmentPath(t, fsys, dir)
		base, _, _ := parseSegmentName(filepath.Base(seg))
		flipByte(t, fsys, seg, 40)
		before := dirState(t, fsys, dir)

		l, err := OpenAt(fsys, dir, smallConfig(), testLogger(t), rp)
		if err != nil {
			t.Fatal(err)
		}
		expectCorrupt(t, l, seg, base)
		if got := l.RecoveryPoint(); got != rp {
			t.Fatalf("a corrupt log reports recovery point %d, want the %d it opened with", got, rp)
		}
		l.Close()
		if after := dirState(t, fsys, dir); !maps.Equal(before, after) {
			t.Fatal("files of a corrupt log changed")
		}

		// Above the recovery point: a torn tail, cut.
		l, err = OpenAt(fsys, dir, smallConfig(), testLogger(t), base)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if l.Err() != nil || l.NextOffset() != base {
			t.Fatalf("damage at the recovery point: err %v, next %d, want a tail cut at %d", l.Err(), l.NextOffset(), base)
		}
	})
}

// A flipped byte in the middle of a closed segment is corruption whatever
// the recovery point: closed segments were fsynced when rolled. Found at
// open when the segment is scanned, or by the first read that covers it.
func TestCorruptionInClosedSegment(t *testing.T) {
	fsys := vfs.NewMem()
	want := fill(t, fsys, "/p", smallConfig(), 200)
	l := mustOpen(t, fsys, "/p", smallConfig())
	segs := l.Segments()
	l.Close()
	if len(segs) < 3 {
		t.Fatalf("test needs 3 segments, has %d", len(segs))
	}
	seg := segs[1]
	name := filepath.Join("/p", segmentName(seg.BaseOffset, logSuffix))
	flipByte(t, fsys, name, seg.Size/2)
	// The damaged batch is the one holding the middle byte.
	damaged := want.baseAt(seg.BaseOffset, seg.NextOffset, seg.Size/2)

	// Indexes intact: the segment is not scanned at open; a read finds it.
	l = mustOpen(t, fsys, "/p", smallConfig())
	if l.Err() != nil {
		t.Fatal(l.Err())
	}
	if _, err := l.Read(seg.BaseOffset, 1<<20, l.NextOffset()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read across the damage: %v, want corruption", err)
	}
	expectCorrupt(t, l, name, damaged)
	l.Close()

	// Without its index files the segment is scanned at open.
	for _, suffix := range []string{indexSuffix, timeIndexSuffix} {
		if err := fsys.Remove(filepath.Join("/p", segmentName(seg.BaseOffset, suffix))); err != nil {
			t.Fatal(err)
		}
	}
	before := dirState(t, fsys, "/p")
	l = mustOpen(t, fsys, "/p", smallConfig())
	expectCorrupt(t, l, name, damaged)
	l.Close()
	if after := dirState(t, fsys, "/p"); !maps.Equal(before, after) {
		t.Fatal("files of a corrupt log changed")
	}
}

// Check finds the damage Open would, without changing a file, and
// TruncateCorrupt cuts the log there so that it opens again at the new
// recovery point with every batch before the damage.
func TestCheckAndTruncateCorrupt(t *testing.T) {
	fsys := vfs.NewMem()
	want := fill(t, fsys, "/p", smallConfig(), 200)
	l := mustOpen(t, fsys, "/p", smallConfig())
	segs, end := l.Segments(), l.NextOffset()
	l.Close()
	rep, err := Check(fsys, "/p", end, nil)
	if err != nil || len(rep.Damage) != 0 || rep.End != end || rep.Segments != len(segs) {
		t.Fatalf("clean log: %+v, %v", rep, err)
	}
	name := filepath.Join("/p", segmentName(segs[1].BaseOffset, logSuffix))
	flipByte(t, fsys, name, 70) // inside the segment's first batch
	before := dirState(t, fsys, "/p")
	rep, err = Check(fsys, "/p", end, nil)
	if err != nil || len(rep.Damage) != 1 || rep.Damage[0].File != name || rep.Damage[0].Offset != segs[1].BaseOffset {
		t.Fatalf("damaged log: %+v, %v", rep, err)
	}
	if after := dirState(t, fsys, "/p"); !maps.Equal(before, after) {
		t.Fatal("Check changed files")
	}
	cut, err := TruncateCorrupt(fsys, "/p", end)
	if err != nil || cut != segs[1].BaseOffset {
		t.Fatalf("TruncateCorrupt: %d, %v; want %d", cut, err, segs[1].BaseOffset)
	}
	l, err = OpenAt(fsys, "/p", smallConfig(), testLogger(t), cut)
	if err != nil || l.Err() != nil || l.NextOffset() != cut {
		t.Fatalf("reopen after truncation: next %d, %v, %v", l.NextOffset(), err, l.Err())
	}
	defer l.Close()
	if got := readBatches(t, l, 0, 1<<20); len(got) == 0 || !bytes.Equal(bytes.Join(got, nil), want.between(0, cut)) {
		t.Fatal("records before the damage changed")
	}
}
