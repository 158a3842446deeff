package dedup

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// OutboxIDHeader is the header in which the outbox relays (package
// eos/outbox) put the outbox row's id: the same id whichever relay, restart
// or snapshot published the event, so it is the key to dedup on.
const OutboxIDHeader = "id"

// ErrNoOutboxID is returned for a record without an OutboxIDHeader header
// (not published by an outbox relay); deduping it on anything else would
// be a guess.
var ErrNoOutboxID = errors.New("dedup: record has no outbox id header")

// OutboxID returns the outbox row id of r, from its OutboxIDHeader header.
func OutboxID(r *kgo.Record) (string, error) {
	for _, h := range r.Headers {
		if h.Key == OutboxIDHeader && len(h.Value) > 0 {
			return string(h.Value), nil
		}
	}
	return "", ErrNoOutboxID
}

// ProcessOutbox is Process keyed by r's outbox id: apply runs at most once
// per outbox event across redeliveries.
func ProcessOutbox(ctx context.Context, s Store, r *kgo.Record, lease time.Duration, apply func(context.Context) error) (applied bool, err error) {
	id, err := OutboxID(r)
	if err != nil {
		return false, err
	}
	return Process(ctx, s, id, lease, apply)
}

// ClaimOutboxTx is ClaimTx keyed by r's outbox id: the processed mark
// commits with the effect in tx.
func (s *SQLStore) ClaimOutboxTx(ctx context.Context, tx *sql.Tx, r *kgo.Record) (Status, error) {
	id, err := OutboxID(r)
	if err != nil {
		return 0, err
	}
	return s.ClaimTx(ctx, tx, id)
}

// ClaimOutboxPgxTx is ClaimOutboxTx for a pgx transaction.
func (s *SQLStore) ClaimOutboxPgxTx(ctx context.Context, tx pgx.Tx, r *kgo.Record) (Status, error) {
	id, err := OutboxID(r)
	if err != nil {
		return 0, err
	}
	return s.ClaimPgxTx(ctx, tx, id)
}
