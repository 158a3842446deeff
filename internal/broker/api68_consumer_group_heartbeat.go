package broker

// ConsumerGroupHeartbeat (key 68), versions 0-1 (KIP-848).
//
// Served by the group coordinator's consumer protocol (package group,
// consumer.go): joining (epoch 0), leaving (-1), static leave (-2) and
// heartbeats that carry subscription changes and the partitions the member
// still owns. The broker computes the target assignment with the requested
// server assignor ("uniform", the default, sticky and balanced; or "range")
// and reconciles each member towards it: revocations first, new partitions
// only once their previous owner released them. Subscriptions by name or
// (v1) by regular expression (Go RE2 syntax, matched against the whole topic
// name). v1 requires client-generated member ids; v0 joins without one get
// a generated id. Session timeout and heartbeat interval come from
// group.consumer.session.timeout.ms / group.consumer.heartbeat.interval.ms.
// Errors: FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID, UNRELEASED_INSTANCE_ID,
// FENCED_INSTANCE_ID, UNSUPPORTED_ASSIGNOR, INVALID_REGULAR_EXPRESSION,
// GROUP_MAX_SIZE_REACHED, GROUP_ID_NOT_FOUND (a classic group with
// members), INVALID_REQUEST. Gaps: client-side assignors and rack-aware
// assignment are not implemented; classic members cannot join a consumer
// group (no online migration).

func init() { register(68, 0, 1, (*Broker).handleGroupRequest) }
