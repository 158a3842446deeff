package log

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/vfs"
)

// TestGroupCommit runs many producers that each append and wait for their
// batch to be durable, on a filesystem whose fsync takes a millisecond, and
// checks that they shared fsyncs.
func TestGroupCommit(t *testing.T) {
	for name, inner := range map[string]func(t *testing.T) (vfs.FS, string){
		"mem": func(t *testing.T) (vfs.FS, string) { return vfs.NewMem(), "/p" },
		"os":  func(t *testing.T) (vfs.FS, string) { return vfs.OS(), filepath.Join(t.TempDir(), "p") },
	} {
		t.Run(name, func(t *testing.T) {
			fsys, dir := inner(t)
			ff := vfs.NewFaulty(fsys)
			ff.SetHook(func(op vfs.Op, _ string) error {
				if op == vfs.OpSync {
					time.Sleep(time.Millisecond)
				}
				return nil
			})
			cfg := DefaultConfig()
			cfg.SegmentBytes = 64 << 10 // a few rolls too
			l := mustOpen(t, ff, dir, cfg)
			defer l.Close()
			const producers, each = 16, 40
			before := ff.Count(vfs.OpSync)
			var wg sync.WaitGroup
			for p := 0; p < producers; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < each; i++ {
						b := testBatch(1, 200, int64(i), byte(p))
						base, err := l.Append(b)
						if err != nil {
							t.Error(err)
							return
						}
						if err := l.Sync(base + 1); err != nil {
							t.Error(err)
							return
						}
						if d := l.DurableOffset(); d < base+1 {
							t.Errorf("Sync(%d) returned at durable %d", base+1, d)
							return
						}
					}
				}()
			}
			wg.Wait()
			syncs := ff.Count(vfs.OpSync) - before
			t.Logf("%d appends+syncs, %d fsyncs, %d segments", producers*each, syncs, len(l.Segments()))
			if syncs > producers*each/3 {
				t.Fatalf("%d fsyncs for %d syncs: not shared", syncs, producers*each)
			}
			if l.NextOffset() != producers*each || l.DurableOffset() != producers*each {
				t.Fatal(l.NextOffset(), l.DurableOffset())
			}
			if n := len(readBatches(t, l, 0, 1<<20)); n != producers*each {
				t.Fatal(n)
			}
		})
	}
}

// TestConcurrentAppendRead has readers tail the log while writers append,
// sync and roll, for the race detector.
func TestConcurrentAppendRead(t *testing.T) {
	cfg := smallConfig()
	l := mustOpen(t, vfs.NewMem(), "/p", cfg)
	defer l.Close()
	const writers, each = 4, 100
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				base, err := l.Append(testBatch(1+i%3, 100, int64(i), byte(w)))
				if err != nil {
					t.Error(err)
					return
				}
				if i%10 == 0 {
					l.Sync(base)
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for r := 0; r < 3; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			off := int64(0)
			for {
				select {
				case <-done:
					return
				default:
				}
				hw := l.DurableOffset()
				b, err := l.Read(off, 2000, hw)
				if err != nil {
					t.Error(err)
					return
				}
				for i, batch := range splitBatches(t, b) {
					if (i == 0 && (batch.base > off || batch.last < off)) || (i > 0 && batch.base != off) {
						t.Errorf("read at %d got batch %d..%d", off, batch.base, batch.last)
						return
					}
					if batch.base >= hw {
						t.Errorf("read past the high watermark %d: %d", hw, batch.base)
						return
					}
					off = batch.last + 1
				}
				l.ReadBatchAtTime(50)
				l.Segments()
			}
		}()
	}
	wg.Wait()
	close(done)
	readers.Wait()
	want := int64(0)
	for i := 0; i < each; i++ {
		want += int64(writers * (1 + i%3))
	}
	if got := l.NextOffset(); got != want {
		t.Fatalf("next offset %d, want %d", got, want)
	}
}
