// Package share is the share-group coordinator (KIP-932, "queues for
// Kafka"): share-group membership with a server-side assignor, share
// sessions, and per (group, topic, partition) share-partition state — the
// window of in-flight records between the share-partition start offset
// (SPSO) and end offset (SPEO), each Available, Acquired (by one member,
// until its lock deadline), Acknowledged or Archived, with a delivery
// count.
//
// Unlike a consumer group, a partition is read by many members at once
// and every record is acknowledged on its own (ACCEPT, RELEASE, REJECT). A
// record whose lock expires, or that is released, becomes Available again
// until it was delivered group.share.delivery.count.limit times; then it is
// Archived and never delivered again.
//
// Durability is stricter than Kafka's: every state change is restated in
// the __share_group_state log (records.go) and the answer that reveals it —
// the ShareFetch that hands a record out (its delivery count) and the
// acknowledgement — waits until that record is fsynced. A broker killed at
// any instant therefore restarts with every answered acknowledgement and
// every answered delivery count; records that were Acquired come back
// Available (or Archived at the limit).
package share
