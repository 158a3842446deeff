package broker

// Heartbeat (key 12), versions 0-4.
//
// Keeps a classic member's session alive. REBALANCE_IN_PROGRESS tells it to
// rejoin; UNKNOWN_MEMBER_ID (evicted or never joined), ILLEGAL_GENERATION
// (an old generation) and FENCED_INSTANCE_ID (its static instance id was
// taken over) tell it it is out.

func init() { register(12, 0, 4, (*Broker).handleGroupRequest) }
