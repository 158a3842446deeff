// Package bench measures throughput and latency per delivery guarantee
// against any Kafka-compatible cluster, and side by side across clusters:
// the numbers behind "what does exactly-once cost?".
//
// Every measurement uses franz-go over the network (loopback for a managed
// broker), 1 KiB incompressible values by default, and a fresh topic per
// run. Produce modes differ only in what the guarantee needs:
//
//	at-most-once      acks=0, no idempotence
//	at-least-once     acks=all, no idempotence, 5 requests in flight
//	idempotent        acks=all with the idempotent producer
//	transactional     idempotent, inside transactions committed every
//	                  TxnInterval (only committed records count)
//
// and the consume modes read one prefilled, transactional topic (a tenth of
// its transactions aborted) to its end:
//
//	read-uncommitted  isolation_level=0
//	read-committed    isolation_level=1 (LSO bound, aborted ranges skipped)
//
// Runs are interleaved: each round measures every target and mode once, in
// an order that rotates from round to round, so a drift in the machine (page
// cache filling, a disk's burst credit running out) spreads over all modes
// instead of favouring whichever ran first. Summaries are medians over the
// rounds, and the two comparisons that matter (transactional against
// idempotent, read-committed against read-uncommitted) are medians of the
// per-round ratios.
package bench
