// Package quorum replicates a metadata log among a small set of controller
// nodes with etcd's raft (go.etcd.io/raft/v3), the way Kafka's KRaft
// replicates __cluster_metadata.
//
// The package owns everything around the raft state machine: a durable raft
// storage on internal/vfs (a CRC-framed write-ahead log in segment files plus
// atomically written snapshot files), a TCP transport between controllers
// with an identity handshake, and the Ready loop that persists before it
// sends and applies committed entries to the caller's StateMachine. The
// protocol itself is etcd raft's; nothing here decides votes or commits.
//
// Nodes that only follow the log (Kafka's broker-only nodes) run as raft
// learners: Config.Learner, admitted by the leader when they ask in the
// handshake, or explicitly with Node.AddLearner.
//
// See docs/DESIGN.md, "Metadata quorum (internal/quorum)", for the on-disk
// format, the transport framing, the identity rules and the limits.
package quorum
