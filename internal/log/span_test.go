package log

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// ReadSpans serves exactly what Read does, for every start offset, byte
// limit and offset limit, across segment boundaries; the spans pin their
// files until released, even past retention.
func TestReadSpansMatchesRead(t *testing.T) {
	forEachFS(t, func(t *testing.T, fsys vfs.FS, dir string) {
		cfg := smallConfig()
		fill(t, fsys, dir, cfg, 300)
		l := mustOpen(t, fsys, dir, cfg) // reopened: segments loaded, unchecked
		defer l.Close()
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 2000; i++ {
			offset := l.StartOffset() + rng.Int64N(l.NextOffset()-l.StartOffset()+1)
			maxBytes := 1 + rng.IntN(3*int(cfg.SegmentBytes))
			maxOffset := offset + rng.Int64N(l.NextOffset()-offset+1)
			if rng.IntN(4) == 0 {
				maxOffset = l.NextOffset()
			}
			want, werr := l.Read(offset, maxBytes, maxOffset)
			ss, err := l.ReadSpans(offset, maxBytes, maxOffset)
			if (err == nil) != (werr == nil) {
				t.Fatalf("read(%d, %d, %d): spans err %v, read err %v", offset, maxBytes, maxOffset, err, werr)
			}
			if err != nil {
				continue
			}
			got, err := ss.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("read(%d, %d, %d): spans give %d bytes, Read %d", offset, maxBytes, maxOffset, len(got), len(want))
			}
			if len(want) > 0 && ss.Next != nextAfter(t, want) {
				t.Fatalf("read(%d, %d, %d): Next %d, want %d", offset, maxBytes, maxOffset, ss.Next, nextAfter(t, want))
			}
			if int64(len(got)) != ss.Len() {
				t.Fatalf("Len %d of %d bytes", ss.Len(), len(got))
			}
			ss.Release()
		}
	})
}

// nextAfter is the offset after the last batch of b.
func nextAfter(t *testing.T, b []byte) int64 {
	t.Helper()
	next := int64(-1)
	for len(b) > 0 {
		h, err := record.ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		next = h.LastOffset() + 1
		b = b[h.Size():]
	}
	return next
}

// A span holds its segment open through retention: the bytes it names stay
// readable until Release, and the file closes after.
func TestSpanPinsDeletedSegment(t *testing.T) {
	fsys := vfs.NewMem()
	cfg := smallConfig()
	fill(t, fsys, "/p", cfg, 200)
	l := mustOpen(t, fsys, "/p", cfg)
	defer l.Close()
	ss, err := l.ReadSpans(l.StartOffset(), 1<<20, l.NextOffset())
	if err != nil {
		t.Fatal(err)
	}
	want, err := ss.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.DeleteRecordsBefore(l.NextOffset() - 1); err != nil {
		t.Fatal(err)
	}
	got, err := ss.Bytes()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("pinned spans after their segments were deleted: %d bytes, %v", len(got), err)
	}
	ss.Release()
	if _, err := ss.List[0].File().ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("a deleted segment's file is still open after the last span released it")
	}
}

// A flipped byte in a segment loaded without a scan is found by the first
// ReadSpans that covers it: reported as corruption and the log taken
// offline, never served. Batches checked once are not read again.
func TestReadSpansFindsCorruption(t *testing.T) {
	fsys := vfs.NewMem()
	cfg := smallConfig()
	want := fill(t, fsys, "/p", cfg, 200)
	l := mustOpen(t, fsys, "/p", cfg)
	segs := l.Segments()
	l.Close()
	seg := segs[1]
	name := filepath.Join("/p", segmentName(seg.BaseOffset, logSuffix))
	flipByte(t, fsys, name, seg.Size/2)
	damaged := want.baseAt(seg.BaseOffset, seg.NextOffset, seg.Size/2)

	l = mustOpen(t, fsys, "/p", cfg)
	defer l.Close()
	// The first segment is intact: served, and remembered as checked.
	ss, err := l.ReadSpans(segs[0].BaseOffset, int(segs[0].Size), segs[0].NextOffset)
	if err != nil {
		t.Fatal(err)
	}
	if got := ss.List[0].seg.verified.Load(); got != segs[0].Size {
		t.Fatalf("checked prefix %d after reading the whole first segment of %d bytes", got, segs[0].Size)
	}
	ss.Release()
	_, err = l.ReadSpans(seg.BaseOffset, 1<<20, l.NextOffset())
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("spans across the damage: %v, want corruption", err)
	}
	expectCorrupt(t, l, name, damaged)
}
