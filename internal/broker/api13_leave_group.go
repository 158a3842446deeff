package broker

// LeaveGroup (key 13), versions 0-5.
//
// Removes classic members and starts a rebalance. v3+ removes several
// members at once, each by member id or by group.instance.id (static
// members: a mismatching member id is FENCED_INSTANCE_ID), with a
// per-member error. Gaps: v5's Reason is accepted but not recorded.

func init() { register(13, 0, 5, (*Broker).handleGroupRequest) }
