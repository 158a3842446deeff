// Package cli implements the client-side subcommands of the exactly binary:
// "topic" (administration), "produce" (stdin lines to records), "consume"
// (records to stdout through a format string), "group" (list, describe
// with offsets and lag, delete and reset-offsets of consumer groups, like
// kafka-consumer-groups.sh), "txn" (inspect transactions, find and
// abort hanging ones, like kafka-transactions.sh), "quota" (describe and
// alter client quotas, like kafka-configs.sh for users and clients) and
// "outbox relay"
// (publish a PostgreSQL transactional outbox table exactly once, polling or
// CDC; it runs until SIGINT/SIGTERM).
//
// Every command speaks the Kafka wire protocol through franz-go, so it works
// against an exactly broker or any other Kafka-compatible broker. Each
// command accepts --bootstrap-server (or -b), a comma-separated list of
// host:port seeds that defaults to 127.0.0.1:9092, and the same TLS, SASL
// and --command-config flags (conn.go; resolved by clientconf).
//
// The constructors return fresh cobra commands with no shared state, so a
// caller (the exactly main package, or a test) can build and execute them as
// often as it likes.
package cli
