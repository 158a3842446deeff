package record

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
)

// Every codec stops at the limit: a batch whose records decompress past it
// is ErrTooLarge, decided while decoding (allocations stay far below the
// expanded size), and the same data under a larger limit is accepted.
func TestValidateLimitStopsBombs(t *testing.T) {
	const limit = 1 << 20
	for name, codec := range testenv.Codecs {
		size := 64 << 20
		if name == "snappy" { // snappy cannot compress better than ~1:21
			size = 16 << 20
		}
		bomb := testenv.Bomb(codec, size)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := ValidateLimit(context.Background(), bomb, limit)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s bomb of %d bytes: %v, want ErrTooLarge", name, size, err)
		}
		// The decoder's own buffers (lz4's 4 MiB blocks) and at most one
		// record up to the limit: nowhere near the expanded size (the
		// bound leaves room for the race detector's extra allocations).
		if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
			t.Errorf("%s bomb: validation allocated %d MiB, want under 16 MiB (it expands to %d MiB)", name, got>>20, size>>20)
		}
		// Records each under the limit stop the stream once their sum
		// passes it.
		many := testenv.CompressedBatch(codec, make([]byte, limit/2), make([]byte, limit/2), make([]byte, limit/2))
		if _, err := ValidateLimit(context.Background(), many, limit); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s: three records of half the limit: %v, want ErrTooLarge", name, err)
		}
		// The same construction under a limit it fits: a well-formed batch.
		if _, err := ValidateLimit(context.Background(), testenv.Bomb(codec, 3<<20), 4<<20); err != nil {
			t.Fatalf("%s: a 3 MiB record under a 4 MiB limit: %v", name, err)
		}
		ok := testenv.CompressedBatch(codec, make([]byte, 100<<10), []byte("second"))
		if _, err := ValidateLimit(context.Background(), ok, limit); err != nil {
			t.Fatalf("%s: a 100 KiB batch under a 1 MiB limit: %v", name, err)
		}
		var values []string
		h, _ := Parse(ok)
		if err := ForEach(h, ok, func(r Record) bool { values = append(values, string(r.Value)); return true }); err != nil || len(values) != 2 || values[1] != "second" {
			t.Fatalf("%s: ForEach: %v, %d records", name, err, len(values))
		}
	}
}

// A snappy block states its decoded size up front: one above the limit is
// refused before anything is decoded.
func TestSnappyBlockAboveLimitIsNotDecoded(t *testing.T) {
	bomb := testenv.CompressedBatch(testenv.Codecs["snappy"], make([]byte, 2<<20))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ValidateLimit(context.Background(), bomb, 1<<20)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%v, want ErrTooLarge", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("allocated %d KiB before refusing", got>>10)
	}
}

// Decompressions share a broker-wide set of slots: with every slot taken a
// compressed batch waits (here until its context ends) while an
// uncompressed one, which needs no decompressor, is validated at once.
func TestDecompressionSlotsBoundConcurrency(t *testing.T) {
	for range cap(decompressSlots) {
		decompressSlots <- struct{}{}
	}
	defer func() {
		for range cap(decompressSlots) {
			<-decompressSlots
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := ValidateLimit(ctx, testenv.CompressedBatch(testenv.Codecs["zstd"], []byte("v")), 1<<20); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("compressed batch with no free slot: %v, want to wait until the context ends", err)
	}
	if _, err := ValidateLimit(context.Background(), testenv.Batch("v"), 1<<20); err != nil {
		t.Fatalf("uncompressed batch: %v", err)
	}
}
