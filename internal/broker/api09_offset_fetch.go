package broker

// OffsetFetch (key 9), versions 0-10.
//
// Served by the group coordinator. Returns committed offsets (offset -1 and
// empty metadata where none is committed); null topics (v2+) means every
// committed topic. v8+ fetches several groups at once; v9+ KIP-848 members
// send their member id and epoch, checked like a heartbeat's
// (UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH); v10 names topics by ID. With
// RequireStable (v7+) a partition with offsets staged by an open transaction
// answers UNSTABLE_OFFSET_COMMIT (KIP-447), so a new owner does not start
// from an offset a transaction is about to move. Only durable commits are
// ever returned.

func init() { register(9, 0, 10, (*Broker).handleGroupRequest) }
