package broker

import (
	"testing"
	"time"
)

// The bucket starts full, refuses once empty, and refills at the rate.
func TestAutoCreateBudget(t *testing.T) {
	var a autoCreateBudget
	now := time.Unix(1000, 0)
	for i := range 6 {
		if !a.take(now, 6) {
			t.Fatalf("creation %d of a full bucket of 6 refused", i)
		}
	}
	if a.take(now, 6) {
		t.Fatal("seventh creation in the same instant allowed")
	}
	if a.take(now.Add(9*time.Second), 6) {
		t.Fatal("allowed after 9s at 6/min (one token takes 10s)")
	}
	if !a.take(now.Add(20*time.Second), 6) {
		t.Fatal("refused after 20s at 6/min")
	}
	if a.take(now.Add(time.Hour), 0) {
		t.Fatal("a budget of 0 per minute allowed a creation")
	}
}
