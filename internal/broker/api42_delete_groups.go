package broker

// DeleteGroups (key 42), versions 0-2.
//
// Deletes groups without members together with their committed (and
// staged transactional) offsets; the answer is sent once the tombstones are
// fsynced. NON_EMPTY_GROUP while members remain, GROUP_ID_NOT_FOUND for
// unknown groups. Gaps: v3 (share/streams group semantics) is not served.

func init() { register(42, 0, 2, (*Broker).handleGroupRequest) }
