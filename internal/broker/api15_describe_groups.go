package broker

// DescribeGroups (key 15), versions 0-6.
//
// State, protocol type, protocol and members (id, instance id, client id,
// host). Member metadata and assignments are included once the group is
// Stable, as Kafka does. KIP-848 groups are described the way Kafka
// presents them to classic tools: protocol type "consumer", the server
// assignor as protocol, each member's subscription and assignment encoded as
// consumer-protocol metadata and assignment. Unknown groups are "Dead"
// (v6+: GROUP_ID_NOT_FOUND, KIP-1043). Gaps: authorized operations are not
// computed.

func init() { register(15, 0, 6, (*Broker).handleGroupRequest) }
