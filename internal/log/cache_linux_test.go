package log

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
)

// Sync drops the pages of the active segment that are more than
// CacheTailBytes behind what it made durable, keeps the tail, and keeps
// everything when CacheTailBytes is negative. Residency is read from
// the kernel (vfs.CachedPages) for the real file.
func TestSyncDropsCacheBehindTail(t *testing.T) {
	const tail = 1 << 20
	batch := testBatch(1024, 1000, 1, 3) // about 1 MiB
	for _, tc := range []struct {
		name string
		tail int64
		drop bool
	}{{"tail", tail, true}, {"unbounded", -1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "p")
			cfg := DefaultConfig()
			cfg.CacheTailBytes = tc.tail
			l := mustOpen(t, vfs.OS(), dir, cfg)
			defer l.Close()
			for l.active().size.Load() < tail+dropCacheStep+4<<20 {
				mustAppend(t, l, batch)
			}
			if err := l.Sync(l.NextOffset()); err != nil {
				t.Fatal(err)
			}
			size := l.active().size.Load()
			resident, err := vfs.CachedPages(filepath.Join(dir, segmentName(0, logSuffix)), size)
			if err != nil {
				t.Fatal(err)
			}
			page := int64(os.Getpagesize())
			behind, inTail := 0, 0
			nBehind, nTail := 0, 0
			for i, r := range resident {
				switch off := int64(i) * page; {
				case off+page <= size-tail:
					nBehind++
					if r {
						behind++
					}
				case off >= size-tail+page:
					nTail++
					if r {
						inTail++
					}
				}
			}
			t.Logf("%d of %d pages behind the tail resident, %d of %d in it", behind, nBehind, inTail, nTail)
			if inTail < nTail*9/10 {
				t.Errorf("only %d of the tail's %d pages are cached: the tail was dropped too", inTail, nTail)
			}
			if tc.drop && behind > nBehind/10 {
				t.Errorf("%d of %d pages behind the tail are still cached after Sync", behind, nBehind)
			}
			if !tc.drop && behind < nBehind*9/10 {
				t.Errorf("with CacheTailBytes -1 only %d of %d older pages are cached: something dropped them", behind, nBehind)
			}
		})
	}
}
