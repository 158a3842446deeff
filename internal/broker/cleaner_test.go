package broker

import (
	"context"
	"testing"
	"time"
)

// TestCleanerThrottle: at log.cleaner.io.max.bytes.per.second = 1 MB/s,
// charging 3 MB takes at least 2 s (one second of burst at most); a
// cancelled context ends a wait; an unlimited rate is not metered. Only a lower bound is checked: a loaded
// machine can only make it slower.
func TestCleanerThrottle(t *testing.T) {
	var th ioThrottle
	start := time.Now()
	for i := 0; i < 48; i++ {
		th.wait(context.Background(), 64<<10, 1<<20)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("3 MiB at 1 MiB/s took %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	th.wait(ctx, 100<<20, 1<<20) // a cancelled context ends the wait (else: 100 s)
	var free ioThrottle
	for i := 0; i < 1000; i++ {
		free.wait(context.Background(), 1<<30, 1.7976931348623157e308) // Kafka's default: unlimited
	}
	if !free.last.IsZero() || free.avail != 0 {
		t.Fatal("an unlimited rate was metered")
	}
}
