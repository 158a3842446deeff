// Package dedup makes an at-least-once consumer's effects happen once: an
// idempotent-consumer store keyed by message id.
//
// The naive pattern "if seen(id) return; apply; mark(id)" is racy: two
// deliveries of one message (a redelivery after a rebalance racing the
// original) both pass seen() and both apply. Here the check and the mark are
// one atomic step, a Claim, that at most one caller wins:
//
//	claim → apply → Confirm   (effect done; later deliveries are Duplicate)
//	claim → apply fails → Release   (a redelivery may claim and apply again)
//
// A claim is a lease: if its holder dies between claim and confirm, the
// claim expires after the lease and a redelivery can take it. Confirmed ids
// are kept for a retention period (default 7 days, longer than any
// redelivery window you expect) and then forgotten; Cleanup deletes expired
// entries in bounded batches so it never holds a long lock.
//
// The store is a separate system from your effect, so a crash after the
// effect but before Confirm still lets the effect be applied twice once the
// lease runs out. When the effect is a PostgreSQL write, use ClaimSQLTx /
// ClaimPgxTx instead: the processed-id row is written in the caller's own
// transaction and commits (or rolls back) atomically with the effect, which
// closes that gap.
package dedup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Status is the outcome of a Claim.
type Status int

const (
	// Claimed: the caller holds the claim and must apply the effect, then
	// Confirm (or Release on failure).
	Claimed Status = iota + 1
	// Duplicate: the effect was already applied and confirmed; skip it
	// (and commit the message's offset).
	Duplicate
	// InFlight: another delivery holds an unexpired claim. Do not apply and
	// do not commit the offset: retry later, since the holder may still fail
	// and release.
	InFlight
)

// String names the status for logs and test failures.
func (s Status) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case Duplicate:
		return "duplicate"
	case InFlight:
		return "in-flight"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Claim is a held claim on one message id. Token distinguishes this claim
// from a later one on the same id, so a holder whose lease expired cannot
// confirm or release the claim of whoever took over.
type Claim struct {
	ID    string
	Token string
}

// ErrClaimLost is returned by Confirm and Release when the claim is no longer
// held by the caller (its lease expired and the id was claimed again or
// cleaned up). The effect may then have been applied twice; callers should
// log it and size the lease above their slowest handler.
var ErrClaimLost = errors.New("dedup: claim lost (lease expired)")

// ErrInFlight is returned by Process when another delivery holds the claim.
var ErrInFlight = errors.New("dedup: message is being processed by another delivery")

// Store is an idempotent-consumer store. All methods are safe for concurrent
// use by many goroutines and processes sharing the backing storage.
type Store interface {
	// Claim atomically claims id for the lease duration. Only one of any
	// number of concurrent callers gets Claimed; the Claim is valid only then.
	Claim(ctx context.Context, id string, lease time.Duration) (Status, Claim, error)
	// Confirm records that the claimed effect was applied; the id is then
	// Duplicate for the store's retention period.
	Confirm(ctx context.Context, c Claim) error
	// Release gives up a claim whose effect failed, so a redelivery applies it.
	Release(ctx context.Context, c Claim) error
	// Cleanup deletes at most limit expired entries and reports how many it
	// deleted; call it until it returns less than limit. Stores whose backend
	// expires entries itself return 0.
	Cleanup(ctx context.Context, limit int) (int, error)
	// Close releases the store's resources (not a caller-owned database).
	Close() error
}

// DefaultLease bounds how long a claim survives a crashed holder.
const DefaultLease = 5 * time.Minute

// DefaultRetention is how long confirmed ids are remembered (the "7 days"
// of the idempotent-consumer pattern).
const DefaultRetention = 7 * 24 * time.Hour

// Process runs apply at most once per id across deliveries: it claims id,
// runs apply, and confirms on success or releases on failure. It returns
// applied=false, err=nil for a Duplicate (commit the offset and move on),
// ErrInFlight if another delivery holds the claim (retry later), and
// apply's error after releasing the claim.
func Process(ctx context.Context, s Store, id string, lease time.Duration, apply func(context.Context) error) (applied bool, err error) {
	st, c, err := s.Claim(ctx, id, lease)
	if err != nil {
		return false, err
	}
	switch st {
	case Duplicate:
		return false, nil
	case InFlight:
		return false, ErrInFlight
	}
	if err := apply(ctx); err != nil {
		// Release with a fresh context: ctx may be the reason apply failed,
		// and an unreleased claim blocks redeliveries for a whole lease.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rerr := s.Release(rctx, c); rerr != nil {
			return false, errors.Join(err, fmt.Errorf("releasing claim: %w", rerr))
		}
		return false, err
	}
	if err := s.Confirm(ctx, c); err != nil {
		return true, fmt.Errorf("confirming claim: %w", err)
	}
	return true, nil
}

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
