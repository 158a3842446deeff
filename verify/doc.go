// Package verify measures the delivery guarantees a Kafka-compatible broker
// and a client configuration actually give under faults.
//
// A run starts producers and a consume-process-produce pipeline as separate
// processes (so they can be SIGKILLed), drives them against the broker
// through a fault-injecting proxy, injects faults on a schedule derived from
// a seed, and records everything every process did in a history of JSON
// lines: sends, acknowledgements with their offsets, polls with offsets and
// values, offset commits, rebalances and transaction outcomes. When the run
// ends, a fresh reader rereads both topics from the start and Check looks for
// the anomalies that separate the three guarantees:
//
//   - lost: an acknowledged write (or a record in the input log) that never
//     reached the output;
//   - duplicates: one value delivered more than once;
//   - aborted reads: a value written by an aborted transaction that a
//     read_committed reader saw, or whose effect reached the output;
//   - order violations: a producer's values stored out of send order in a
//     partition, or the pipeline's output out of input order;
//   - inconsistent offsets: one offset holding two values;
//   - non-monotonic polls and poll skips: a consumer going backwards, or
//     skipping a visible record, without a rebalance or rewind in between.
//
// In share mode (Share) the pipeline slots are share-group consumers that
// ACCEPT, RELEASE or REJECT each delivery, and the checker settles every
// input record instead: accepted once or archived, never lost, never
// delivered past the delivery-count limit or after a confirmed ACCEPT or
// REJECT (see ShareOutcome).
//
// Every value written is unique, so these checks need no model of the
// application: they compare what was acknowledged, what was read and what
// the log finally holds. The broker is a black box reached over TCP; this
// package imports nothing from the broker's implementation, so it runs
// against any Kafka-compatible cluster.
package verify
