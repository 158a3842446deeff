package log

import (
	"path/filepath"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
)

// batch1K is a 1 KiB batch: 1 record of 954 bytes.
func batch1K() []byte {
	b := testBatch(1, 954, 1, 0)
	if len(b) != 1024 {
		panic(len(b))
	}
	return b
}

func benchFS(b *testing.B, f func(b *testing.B, fsys vfs.FS, dir string)) {
	b.Run("os", func(b *testing.B) { f(b, vfs.OS(), filepath.Join(b.TempDir(), "p")) })
	b.Run("mem", func(b *testing.B) { f(b, vfs.NewMem(), "/p") })
}

// BenchmarkAppend measures the hot path alone: no fsync.
func BenchmarkAppend(b *testing.B) {
	benchFS(b, func(b *testing.B, fsys vfs.FS, dir string) {
		l := mustOpen(b, fsys, dir, DefaultConfig())
		defer l.Close()
		batch := batch1K()
		b.SetBytes(int64(len(batch)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Append(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAppendSync appends 1 KiB batches and waits for each to be
// durable, from one goroutine (an fsync per batch) and from many (group
// commit shares fsyncs).
func BenchmarkAppendSync(b *testing.B) {
	benchFS(b, func(b *testing.B, fsys vfs.FS, dir string) {
		l := mustOpen(b, fsys, dir, DefaultConfig())
		defer l.Close()
		b.Run("serial", func(b *testing.B) {
			batch := batch1K()
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				base, err := l.Append(batch)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Sync(base + 1); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.SetBytes(1024)
			b.ReportAllocs()
			b.SetParallelism(16)
			b.RunParallel(func(pb *testing.PB) {
				batch := batch1K()
				for pb.Next() {
					base, err := l.Append(batch)
					if err != nil {
						b.Fatal(err)
					}
					if err := l.Sync(base + 1); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	})
}

// BenchmarkRead reads 64 KiB at random offsets of a 64 MiB log of 1 KiB
// batches in 8 MiB segments.
func BenchmarkRead(b *testing.B) {
	benchFS(b, func(b *testing.B, fsys vfs.FS, dir string) {
		cfg := DefaultConfig()
		cfg.SegmentBytes = 8 << 20
		l := mustOpen(b, fsys, dir, cfg)
		defer l.Close()
		batch := batch1K()
		for i := 0; i < 64<<10; i++ {
			if _, err := l.Append(batch); err != nil {
				b.Fatal(err)
			}
		}
		end := l.NextOffset()
		b.SetBytes(64 << 10)
		b.ReportAllocs()
		off := int64(0)
		for b.Loop() {
			got, err := l.Read(off, 64<<10, end)
			if err != nil || len(got) != 64<<10 && off+64 <= end {
				b.Fatal(len(got), err)
			}
			off = (off*7919 + 104729) % (end - 64)
		}
	})
}
