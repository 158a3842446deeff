// Package bench measures throughput and latency per delivery guarantee
// against any Kafka-compatible cluster, and side by side across clusters:
// the numbers behind "what does exactly-once cost?".
//
// Every measurement uses franz-go over the network (loopback for a managed
// broker), 1 KiB incompressible values by default, and a fresh topic per
// run. Produce modes differ only in what the guarantee needs:
//
//	at-most-once      acks=1, no retries, no idempotence (eos/preset)
//	at-least-once     acks=all, no idempotence, 5 requests in flight
//	idempotent        acks=all with the idempotent producer
//	idempotent-flush  idempotent, flushing every TxnInterval as a commit
//	                  must (no transaction): the client's share of a
//	                  transaction's cost
//	transactional     idempotent, inside transactions committed every
//	                  TxnInterval (only committed records count)
//
// and the consume modes read one prefilled, transactional topic (every
// Config.AbortEvery-th transaction aborted) to its end:
//
//	read-uncommitted  isolation_level=0
//	read-committed    isolation_level=1 (LSO bound, aborted ranges skipped)
//
// Runs are interleaved: each round measures every target and mode once, in
// an order that rotates from round to round, so a drift in the machine (page
// cache filling, a disk's burst credit running out) spreads over all modes
// instead of favouring whichever ran first. Summaries are medians over the
// rounds, and the comparisons that matter are medians of the per-round
// ratios: transactional against idempotent (the whole cost of exactly-once
// on the produce path), split into idempotent-flush against idempotent (the
// client draining its pipeline at every commit) and transactional against
// idempotent-flush (everything else: the transaction protocol and the
// broker's work), and read-committed against read-uncommitted.
//
// With Config.WhileCleaning each produce mode also runs beside a background
// writer of keyed overwrites into a compacted topic, paired with the run
// alone in the same round: what log compaction costs producers of other
// topics, with the log cleaner's bytes read and rewritten taken from the
// target's metrics (Target.MetricsURL) so the report shows it ran.
//
// Config.KFake and Config.KFakeDurable add franz-go's kfake (in memory, or
// with a data directory and an fsync per written batch) as targets, each
// a child process like the managed broker. For every target with a
// process on this machine (Target.PID: the managed broker and kfake), the
// broker's CPU time is read from /proc before and after each run and
// reported per GB moved, next to the benchmark client's own.
// Report.WriteChart draws the summaries as a PNG or SVG.
package bench
