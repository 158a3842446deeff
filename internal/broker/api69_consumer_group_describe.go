package broker

// ConsumerGroupDescribe (key 69), versions 0-1 (KIP-848).
//
// Group epoch, assignment epoch, assignor and state (Empty, Reconciling,
// Stable), and per member: epoch (-2 for a static member that left
// temporarily), client id and host, subscription, current and target
// assignment (topic ids and names), member type (v1: consumer).
// GROUP_ID_NOT_FOUND for unknown groups and classic groups. Gaps:
// authorized operations are not computed.

func init() { register(69, 0, 1, (*Broker).handleGroupRequest) }
