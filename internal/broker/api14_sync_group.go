package broker

// SyncGroup (key 14), versions 0-5.
//
// The leader's SyncGroup carries every member's assignment and completes the
// rebalance (Stable); followers' SyncGroups wait in the connection's writer
// until it arrives. v5 checks the protocol type and name
// (INCONSISTENT_GROUP_PROTOCOL). Members that do not sync within the
// rebalance timeout are removed and the group rebalances again.

func init() { register(14, 0, 5, (*Broker).handleGroupRequest) }
