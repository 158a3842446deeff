package broker

// OffsetCommit (key 8), versions 0-10.
//
// Served by the group coordinator (package group). Classic groups check the
// member and generation as Kafka does: generation -1 with no member id is an
// admin / simple-consumer commit, accepted only while the group is Empty;
// otherwise UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID (static member replaced),
// ILLEGAL_GENERATION, or REBALANCE_IN_PROGRESS while CompletingRebalance.
// KIP-848 groups (v9+) check the member epoch per KIP-1251: the current
// epoch is accepted, a newer one is STALE_MEMBER_EPOCH, an older one only
// for partitions held since that epoch. v10 names topics by ID
// (UNKNOWN_TOPIC_ID). Unknown topics/partitions are UNKNOWN_TOPIC_OR_PARTITION,
// metadata over offset.metadata.max.bytes (4096) OFFSET_METADATA_TOO_LARGE.
//
// The response is sent only after the commit's records are fsynced in
// __consumer_offsets; the offsets become visible to OffsetFetch at the same
// moment. Gaps: v1's per-partition timestamp and v2-v4's retention time are
// ignored (offsets.retention.minutes applies, as in Kafka 2.1+).

func init() { register(8, 0, 10, (*Broker).handleGroupRequest) }
