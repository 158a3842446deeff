// Package preset holds kgo option sets for the three delivery guarantees,
// so an application picks a guarantee per message type instead of
// re-deriving a dozen client knobs (docs/GUARANTEES.md: cost rises from
// at-most-once to exactly-once, so the choice is per flow, not global).
//
// Each preset is only half of its guarantee: the other half is what the
// application does around the client, and every doc comment below says what
// that is. The sets hold no seed brokers or topics; append your own:
//
//	cl, err := kgo.NewClient(append(preset.ExactlyOnceProducer("payments-1"),
//		kgo.SeedBrokers(addr))...)
//
// Later options win in kgo, so an application can still override a knob,
// at the price of the guarantee the preset documents.
package preset

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// AtMostOnceProducer never duplicates and may lose records: the leader acks
// alone (acks=1: a leader crash before followers copy loses the record) and
// a failed record is never retried (a retry of a write that actually
// landed would be a duplicate). Idempotence is off because Kafka requires
// acks=all for it. Use it for telemetry, logs and metrics where throughput
// and latency matter more than completeness.
func AtMostOnceProducer() []kgo.Opt {
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.LeaderAck()),
		kgo.DisableIdempotentWrite(),
		kgo.RecordRetries(0),
	}
}

// AtMostOnceConsumer joins group with auto-commit off. The guarantee needs
// the application to commit a poll's offsets (CommitRecords or
// CommitUncommittedOffsets) BEFORE processing the records: a crash during
// processing then skips the rest (loss) but never redelivers (no
// duplicate). Auto-commit is off because its timer commits at arbitrary
// points relative to processing, which gives neither guarantee.
func AtMostOnceConsumer(group string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.DisableAutoCommit(),
	}
}

// AtLeastOnceProducer never loses an acknowledged record and may duplicate:
// acks=all (every in-sync replica has it before the ack) and unbounded
// retries until the delivery timeout. Idempotence stays on: it is free with
// acks=all and removes the duplicates that retries inside one producer
// session would cause, but an application that re-sends after a crash or
// timeout still duplicates, which is why this is at-least-once.
func AtLeastOnceProducer() []kgo.Opt {
	return []kgo.Opt{
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(2 * time.Minute),
	}
}

// AtLeastOnceConsumer joins group with auto-commit off. The guarantee needs
// the application to commit offsets only AFTER processing has finished
// (CommitRecords / CommitUncommittedOffsets after the work): a crash
// between processing and commit redelivers (duplicate), nothing is skipped.
// Pair it with an idempotent handler (package dedup) for "effectively
// once". Offsets are read with RequireStable so a group member never starts
// from an offset that a pending transactional commit is about to replace.
func AtLeastOnceConsumer(group string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.DisableAutoCommit(),
		kgo.RequireStableFetchOffsets(),
	}
}

// ExactlyOnceProducer is a transactional producer: idempotent writes
// (producer id + per-partition sequence numbers let the broker drop
// retried duplicates; that forces acks=all and at most 5 requests in
// flight), plus transactionalID, which fences any older instance with the
// same id (a zombie's writes are rejected) and makes writes to several
// partitions, and consumed offsets, commit or abort together.
//
// The guarantee needs: BeginTransaction / EndTransaction around each unit
// of work; a stable transactionalID per logical producer (the same id after
// a restart, different ids for parallel instances); readers using
// ExactlyOnceConsumer (read_committed), since read_uncommitted readers see
// aborted records. For consume-transform-produce use kgo's
// GroupTransactSession with these options plus ExactlyOnceConsumer's, so
// the consumed offsets commit inside the same transaction.
func ExactlyOnceProducer(transactionalID string) []kgo.Opt {
	return []kgo.Opt{
		kgo.TransactionalID(transactionalID),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.TransactionTimeout(time.Minute),
	}
}

// ExactlyOnceConsumer joins group reading only committed transactional
// records (isolation.level=read_committed: aborted records are never
// returned, open transactions hold the reader at the last stable offset),
// with auto-commit off and RequireStable offset fetches. The guarantee
// needs offsets to be committed together with the effect: inside the
// producer's transaction (GroupTransactSession), or in the same database
// transaction as the business write; committing after a separate effect is
// at-least-once, not exactly-once.
func ExactlyOnceConsumer(group string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.DisableAutoCommit(),
		kgo.RequireStableFetchOffsets(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}
}

// ReadCommitted is the non-group form of ExactlyOnceConsumer's isolation
// for readers that assign partitions themselves (verifiers, relays, tools):
// they still must never see aborted records.
func ReadCommitted() []kgo.Opt {
	return []kgo.Opt{kgo.FetchIsolationLevel(kgo.ReadCommitted())}
}
