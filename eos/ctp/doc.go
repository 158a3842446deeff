// Package ctp runs a consume-transform-produce loop with exactly-once
// results: every input record's outputs, or its dead-letter record, are
// committed in the same Kafka transaction as the consumer group's offset
// past it.
//
// A Processor polls its group's partitions (read_committed), begins a
// transaction, calls Config.Transform once per record, produces what it
// returns, and ends the transaction with kgo's GroupTransactSession, which
// also commits the polled offsets inside it (KIP-447 TxnOffsetCommit). So
// either all of a batch's outputs and its offsets commit, or none do and the
// batch is consumed again from the last committed offset.
//
// # Guarantee
//
// For each input record, a read_committed reader of the output topics and
// of the dead-letter topic sees exactly one of:
//   - the records returned by one successful Transform call of it, each
//     exactly once; or
//   - one dead-letter record (the input's key, value and headers, plus
//     headers naming the error, the source topic, partition and offset, and
//     the number of attempts), when Transform failed on every attempt.
//
// This holds across aborted transactions, group rebalances in the middle of
// a transaction, a killed instance whose transaction never ended, broker
// and network errors and graceful shutdowns: all of them abort (or leave to
// be aborted) a transaction whose offsets never committed, and its records
// are invisible to read_committed readers.
//
// # Poison records
//
// A Transform error is the record's fault: the record is tried again, in
// the same transaction, up to MaxAttempts times with exponential backoff;
// outputs returned together with an error are discarded, so a failed
// attempt never leaves partial output. After the last attempt the record
// goes to DeadLetterTopic in the same transaction, so it is neither lost
// nor blocks its partition. Wrap an error with Permanent to skip the
// remaining attempts (a parse error will not parse next time). A panic in
// Transform counts as an error of the record, since a record that crashes
// the process would otherwise crash every instance that picks it up. An
// output the client or broker rejects for its own content (too large,
// invalid) aborts the transaction; the processor remembers which input
// produced it and dead-letters that input when the batch is consumed again.
// The broker refuses whole produce batches, so when a refused batch held
// several inputs' outputs, each of them is produced alone on the next
// attempt to find the culprit instead of blaming its neighbours.
//
// Errors that are not the record's fault (produce or broker errors, a
// rebalance, shutdown) abort the transaction and the batch is consumed
// again from the last committed offset; a failure that leaves the client
// unusable closes it and starts a new session under the same transactional
// id, which fences and aborts whatever the old one left open.
//
// # Conditions
//
// The guarantee needs:
//   - readers of the outputs and of the dead-letter topic to use
//     read_committed (preset.ExactlyOnceConsumer or preset.ReadCommitted):
//     read_uncommitted readers see aborted attempts;
//   - a TransactionalID that is unique among running instances and the same
//     when an instance restarts: a restart then fences its predecessor's
//     open transaction at once, while an instance that never comes back
//     holds the last stable offset of the partitions it wrote to until its
//     transaction timeout aborts it (outputs of others are delayed, never
//     duplicated);
//   - Transform's only effects to be the records it returns: anything else
//     it does (a database write, an HTTP call) happens once per attempt and
//     again whenever a batch is reprocessed; make such effects idempotent
//     (package dedup) or move them behind Kafka;
//   - a batch (MaxPollRecords records, each with up to MaxAttempts attempts
//     and their backoffs) to finish well within the transaction timeout,
//     after which the broker aborts the transaction;
//   - a broker with KIP-447 (this one, Kafka 2.5+), so a new group member
//     waits for a pending transactional offset commit instead of reading
//     the offset it replaces;
//   - the dead-letter topic to accept every record the input topics accept
//     (max.message.bytes at least as large), or a poison record blocks its
//     partition after all.
//
// Transform need not be deterministic: a reprocessed record may yield other
// outputs, and only one attempt's outputs are ever committed. Outputs of one
// input partition are produced in input order by one producer, so per-key
// order holds when keys pick output partitions deterministically (the
// default partitioner).
package ctp
