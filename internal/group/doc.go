// Package group is the group coordinator: consumer group membership
// (Kafka's classic JoinGroup/SyncGroup protocol with static membership, and
// the KIP-848 ConsumerGroupHeartbeat protocol with server-side assignors),
// committed offsets, and offsets staged by transactions.
//
// It is split the way etcd's raft is:
//
//   - Machine is a pure state machine. No goroutines, no I/O, no clock: each
//     call takes the current time and returns an Output — replies to send,
//     records to persist, and when to call Tick next. This is what the
//     transcript tests in testdata/ drive, deterministically.
//   - Coordinator is the driver. One goroutine owns the Machine and feeds it
//     requests, timer ticks and persistence results; it appends the records
//     the Machine asks for to the __consumer_offsets partition (through the
//     same partition/log packages as any topic, so crash recovery is the
//     log's), and a second goroutine waits for fsync (group commit) and
//     reports back.
//
// Durability: a record takes effect in the Machine only once it is durable
// (Persisted) — a commit is acknowledged and becomes visible to OffsetFetch
// at the same moment, after fsync. On start the Coordinator replays the
// partition into a fresh Machine. Membership is persisted too (classic:
// the last completed generation, membership.go; KIP-848: the whole group
// state, consumer_persist.go), so members carry on across a restart.
//
// Compaction: every record restates a key's full value, so a snapshot (all
// live offsets written again) makes everything before it redundant. When
// the log has grown well past the live state, the Coordinator writes a
// snapshot, waits for it to be durable and raises the log start offset to
// its first record (DeleteRecordsBefore), which deletes whole old segments.
// A crash anywhere in between replays the older records followed by a
// partial or whole snapshot, which yields the same state.
package group
