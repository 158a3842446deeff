// Package storetest is the conformance suite every dedup.Store must pass:
// one test body run against each implementation, so a new store cannot
// quietly weaken the guarantee (the nats-server habit).
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly/exactly/eos/dedup"
)

// Factory returns a fresh, empty store with the given retention, isolated
// from every other test (own table, schema or key prefix), cleaned up with
// t.Cleanup.
type Factory func(t *testing.T, retention time.Duration) dedup.Store

// Features says which optional behaviours a store has, so the suite checks
// them where they exist and skips them where they cannot apply.
type Features struct {
	// Leases: a claim is visible as InFlight to concurrent claimers and
	// expires after its lease. False for transaction-scoped claims, where a
	// concurrent claimer blocks until the holder commits or rolls back.
	Leases bool
	// Cleanup: Cleanup deletes expired entries (false when the backend
	// expires them itself).
	Cleanup bool
}

// Run runs the suite.
func Run(t *testing.T, newStore Factory, f Features) {
	ctx := context.Background()

	t.Run("ClaimConfirmThenDuplicate", func(t *testing.T) {
		s := newStore(t, time.Hour)
		st, c, err := s.Claim(ctx, "m1", time.Minute)
		if err != nil || st != dedup.Claimed {
			t.Fatalf("first claim = %v, %v", st, err)
		}
		if err := s.Confirm(ctx, c); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if st, _, err := s.Claim(ctx, "m1", time.Minute); err != nil || st != dedup.Duplicate {
				t.Fatalf("claim after confirm = %v, %v; want duplicate", st, err)
			}
		}
		if st, c, err := s.Claim(ctx, "m2", time.Minute); err != nil || st != dedup.Claimed {
			t.Fatalf("another id = %v, %v; want claimed", st, err)
		} else if err := s.Release(ctx, c); err != nil {
			t.Fatal(err)
		}
	})

	// The race the naive check-then-set loses: many deliveries of one
	// message at once. The effect must happen exactly once, and every
	// delivery must end as applied or duplicate.
	t.Run("ConcurrentDuplicateDeliveries", func(t *testing.T) {
		s := newStore(t, time.Hour)
		for _, id := range []string{"c1", "c2", "c3"} {
			var effects, applied, dups atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, 20)
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						ok, err := dedup.Process(ctx, s, id, time.Minute, func(context.Context) error {
							effects.Add(1)
							time.Sleep(20 * time.Millisecond) // widen the race window
							return nil
						})
						if errors.Is(err, dedup.ErrInFlight) {
							time.Sleep(5 * time.Millisecond) // a redelivery later
							continue
						}
						if err != nil {
							errs <- err
						} else if ok {
							applied.Add(1)
						} else {
							dups.Add(1)
						}
						return
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if effects.Load() != 1 || applied.Load() != 1 || dups.Load() != 19 {
				t.Fatalf("%s: effects=%d applied=%d duplicates=%d; want 1, 1, 19",
					id, effects.Load(), applied.Load(), dups.Load())
			}
		}
	})

	t.Run("HandlerFailureReleasesClaim", func(t *testing.T) {
		s := newStore(t, time.Hour)
		boom := errors.New("boom")
		var effects int
		ok, err := dedup.Process(ctx, s, "f1", time.Minute, func(context.Context) error { return boom })
		if ok || !errors.Is(err, boom) {
			t.Fatalf("failed handler: applied=%v err=%v", ok, err)
		}
		ok, err = dedup.Process(ctx, s, "f1", time.Minute, func(context.Context) error { effects++; return nil })
		if !ok || err != nil || effects != 1 {
			t.Fatalf("redelivery after failure: applied=%v err=%v effects=%d", ok, err, effects)
		}
		ok, err = dedup.Process(ctx, s, "f1", time.Minute, func(context.Context) error { effects++; return nil })
		if ok || err != nil || effects != 1 {
			t.Fatalf("redelivery after success: applied=%v err=%v effects=%d", ok, err, effects)
		}
	})

	// A released claim's token is dead: releasing or confirming it again
	// must not touch a later claim.
	t.Run("StaleClaimCannotConfirm", func(t *testing.T) {
		if !f.Leases {
			t.Skip("claims are transaction-scoped")
		}
		s := newStore(t, time.Hour)
		_, c1, _ := s.Claim(ctx, "s1", time.Minute)
		if err := s.Release(ctx, c1); err != nil {
			t.Fatal(err)
		}
		st, c2, err := s.Claim(ctx, "s1", time.Minute)
		if err != nil || st != dedup.Claimed {
			t.Fatalf("reclaim = %v, %v", st, err)
		}
		if err := s.Confirm(ctx, c1); !errors.Is(err, dedup.ErrClaimLost) {
			t.Fatalf("stale confirm = %v, want ErrClaimLost", err)
		}
		if err := s.Release(ctx, c1); !errors.Is(err, dedup.ErrClaimLost) {
			t.Fatalf("stale release = %v, want ErrClaimLost", err)
		}
		if err := s.Confirm(ctx, c2); err != nil {
			t.Fatal(err)
		}
	})

	// A holder that died between claim and confirm blocks redeliveries only
	// for its lease.
	t.Run("LeaseExpires", func(t *testing.T) {
		if !f.Leases {
			t.Skip("claims are transaction-scoped")
		}
		s := newStore(t, time.Hour)
		_, c1, err := s.Claim(ctx, "l1", 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if st, _, _ := s.Claim(ctx, "l1", time.Minute); st != dedup.InFlight {
			t.Fatalf("claim during lease = %v, want in-flight", st)
		}
		time.Sleep(450 * time.Millisecond)
		st, c2, err := s.Claim(ctx, "l1", time.Minute)
		if err != nil || st != dedup.Claimed {
			t.Fatalf("claim after lease = %v, %v; want claimed", st, err)
		}
		if err := s.Confirm(ctx, c1); !errors.Is(err, dedup.ErrClaimLost) {
			t.Fatalf("expired holder's confirm = %v, want ErrClaimLost", err)
		}
		if err := s.Confirm(ctx, c2); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("RetentionForgets", func(t *testing.T) {
		s := newStore(t, 300*time.Millisecond)
		ok, err := dedup.Process(ctx, s, "r1", time.Minute, func(context.Context) error { return nil })
		if !ok || err != nil {
			t.Fatal(ok, err)
		}
		if st, _, _ := s.Claim(ctx, "r1", time.Minute); st != dedup.Duplicate {
			t.Fatalf("within retention = %v, want duplicate", st)
		}
		time.Sleep(450 * time.Millisecond)
		if st, _, err := s.Claim(ctx, "r1", time.Minute); err != nil || st != dedup.Claimed {
			t.Fatalf("after retention = %v, %v; want claimed", st, err)
		}
	})

	t.Run("CleanupIsBounded", func(t *testing.T) {
		if !f.Cleanup {
			t.Skip("the backend expires entries itself")
		}
		s := newStore(t, 200*time.Millisecond)
		for i := range 7 {
			if _, err := dedup.Process(ctx, s, fmt.Sprint("e", i), time.Minute, func(context.Context) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
		// A live claim that cleanup must leave alone (transaction-scoped
		// claims are invisible to cleanup until commit, so only leases).
		if f.Leases {
			if st, _, err := s.Claim(ctx, "live", time.Hour); err != nil || st != dedup.Claimed {
				t.Fatal(st, err)
			}
		}
		time.Sleep(300 * time.Millisecond)
		total := 0
		for {
			n, err := s.Cleanup(ctx, 3)
			if err != nil {
				t.Fatal(err)
			}
			if n > 3 {
				t.Fatalf("cleanup deleted %d entries with limit 3", n)
			}
			total += n
			if n < 3 {
				break
			}
		}
		if total != 7 {
			t.Fatalf("cleanup deleted %d entries, want 7", total)
		}
		if f.Leases {
			if st, _, _ := s.Claim(ctx, "live", time.Hour); st != dedup.InFlight {
				t.Fatalf("live claim after cleanup = %v, want in-flight", st)
			}
		}
	})
}
