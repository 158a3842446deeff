package quorum

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
	pb "go.etcd.io/raft/v3/raftpb"
)

// A synced WAL leaves the page cache once walDropStep bytes have been
// written since the last drop (it is read only when the node starts), and
// the dropped entries replay intact from disk.
func TestWALDropsSyncedPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	open := func() *diskStorage {
		st, err := openStorage(vfs.OS(), dir, "c", 1, storageOptions{segmentBytes: 64 << 20}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	data := bytes.Repeat([]byte("raft"), 256<<10) // 1 MiB
	const n = 12
	for i := uint64(1); i <= n; i++ {
		hs := &pb.HardState{Term: new(uint64(1)), Vote: new(uint64(1)), Commit: new(i - 1)}
		if err := st.save(nil, hs, []*pb.Entry{{Index: new(i), Term: new(uint64(1)), Data: data}}, true); err != nil {
			t.Fatal(err)
		}
	}
	st.close()
	segs, err := filepath.Glob(filepath.Join(dir, walPrefix+"*"+walSuffix))
	if err != nil || len(segs) != 1 {
		t.Fatalf("WAL segments %v, %v: want one", segs, err)
	}
	pages, err := vfs.CachedPages(segs[0], walDropStep)
	if err != nil {
		t.Fatal(err)
	}
	cached := 0
	for _, c := range pages {
		if c {
			cached++
		}
	}
	t.Logf("%d of the first %d pages cached", cached, len(pages))
	if cached > len(pages)/10 {
		t.Errorf("%d of the first %d pages of a synced WAL are still cached", cached, len(pages))
	}

	st = open()
	defer st.close()
	ents, err := st.Entries(1, n+1, 1<<30)
	if err != nil || len(ents) != n {
		t.Fatalf("replayed %d entries, %v; want %d", len(ents), err, n)
	}
	for _, e := range ents {
		if !bytes.Equal(e.GetData(), data) {
			t.Fatalf("entry %d replayed with %d bytes of other data", e.GetIndex(), len(e.GetData()))
		}
	}
}
