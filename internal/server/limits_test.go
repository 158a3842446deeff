package server

import (
	"testing"
	"time"
)

// A LogLimiter lets LogBurst lines through per second, and the first
// line of the next second reports how many were suppressed meanwhile.
func TestLogLimiter(t *testing.T) {
	var l LogLimiter
	now := time.Unix(1000, 0)
	for i := range LogBurst {
		if n, ok := l.Allow(now); !ok || n != 0 {
			t.Fatalf("line %d of the first second: allowed %v, %d suppressed", i, ok, n)
		}
	}
	for range 25 {
		if _, ok := l.Allow(now.Add(999 * time.Millisecond)); ok {
			t.Fatal("a line past the burst within the same second was allowed")
		}
	}
	if n, ok := l.Allow(now.Add(time.Second)); !ok || n != 25 {
		t.Fatalf("first line of the next second: allowed %v, %d suppressed; want true, 25", ok, n)
	}
	if n, ok := l.Allow(now.Add(time.Second)); !ok || n != 0 {
		t.Fatalf("second line of the next second: allowed %v, %d suppressed; want true, 0", ok, n)
	}
}
