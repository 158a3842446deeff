package broker

// JoinGroup (key 11), versions 0-9.
//
// Served by the group coordinator's classic protocol (package group,
// classic.go): the rebalance state machine Empty → PreparingRebalance →
// CompletingRebalance → Stable, session and rebalance timeouts,
// group.initial.rebalance.delay.ms for an empty group's first rebalance,
// KIP-394 (v4+: a join without member id gets MEMBER_ID_REQUIRED and a new
// id), static membership (v5+, KIP-345: a known group.instance.id replaces
// the old member, which is fenced with FENCED_INSTANCE_ID), protocol
// selection by vote among protocols every member supports, KIP-814 (v9
// SkipAssignment for a static leader rejoining a stable group). The answer
// waits (in the connection's writer, never in Handle) until the join phase
// ends. Errors: INVALID_GROUP_ID, INVALID_SESSION_TIMEOUT (outside
// group.min/max.session.timeout.ms), INCONSISTENT_GROUP_PROTOCOL,
// GROUP_MAX_SIZE_REACHED, UNKNOWN_MEMBER_ID, COORDINATOR_NOT_AVAILABLE.
// Gaps: v8's Reason is accepted but not recorded; classic members cannot
// join a KIP-848 group that has members (INCONSISTENT_GROUP_PROTOCOL; no
// online migration).

func init() { register(11, 0, 9, (*Broker).handleGroupRequest) }
