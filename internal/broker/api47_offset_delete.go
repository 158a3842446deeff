package broker

// OffsetDelete (key 47), version 0.
//
// Deletes a group's committed offsets for some partitions, answered after
// the tombstones are fsynced. GROUP_ID_NOT_FOUND for unknown groups,
// NON_EMPTY_GROUP for an active classic group that is not a consumer group,
// GROUP_SUBSCRIBED_TO_TOPIC per partition while members subscribe to the
// topic, UNKNOWN_TOPIC_OR_PARTITION for partitions that exist nowhere.

func init() { register(47, 0, 0, (*Broker).handleGroupRequest) }
