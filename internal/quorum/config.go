package quorum

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/exactly/exactly/internal/vfs"
)

// StateMachine is what the quorum replicates. Apply is called on every
// node, in log order, from one goroutine, and must be deterministic: every
// node applies the same entries and must reach the same state.
type StateMachine interface {
	// Apply applies the entry at index. Its result is handed to the
	// Propose call that proposed the entry, if that call is on this node.
	Apply(index uint64, data []byte) any
	// Snapshot returns the state as of the last applied index.
	Snapshot() ([]byte, error)
	// Restore replaces the state with a snapshot's (received from the
	// leader, or loaded at start).
	Restore(data []byte) error
}

// Config configures a Node.
type Config struct {
	// NodeID is this node's id in the quorum (Kafka's node.id); not 0.
	NodeID uint64
	// Voters are the initial voters: node id → controller address
	// host:port (controller.quorum.voters). A node whose storage is empty
	// bootstraps with them as the first configuration, as every
	// first-start node does; later they only give peer addresses.
	Voters map[uint64]string
	// Join, for a node with empty storage, skips the bootstrap: the node
	// waits to be added with AddVoter and learns the log from the leader.
	// Voters then only give the existing voters' addresses.
	Join bool
	// Learner makes this node a non-voting member (Kafka's broker-only
	// node, process.roles=broker): it receives and applies the log like a
	// voter but never votes, never campaigns and never counts in a quorum.
	// With empty storage it does not bootstrap; it asks the voters in
	// Voters to admit it (the leader adds it as a learner) until it is a
	// member. It must not be among the Voters. It is never promoted by
	// this package.
	Learner bool
	// Address is where peers dial this node, sent by a learner asking to
	// be admitted; empty means the Listener's address, which must then not
	// be a wildcard address.
	Address string
	// FS and Dir hold the raft storage (e.g. the data dir's
	// __cluster_metadata directory).
	FS  vfs.FS
	Dir string
	// Listener accepts peers' raft connections (the CONTROLLER
	// listener). The Node closes it on Close.
	Listener net.Listener
	// ClusterID is compared in the handshake: peers of another cluster
	// are refused, and a storage directory of another cluster too.
	ClusterID string
	// ElectionTimeout is controller.quorum.election.timeout.ms (Kafka's
	// default 1000 ms). Raft ticks ten times per timeout, heartbeats every
	// second tick, and randomizes each election in [1, 2) timeouts.
	ElectionTimeout time.Duration
	// SnapshotEntries is how many applied entries trigger a snapshot and
	// the compaction of the log before it (default 10000).
	SnapshotEntries uint64
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// SM is the replicated state machine.
	SM StateMachine

	// segmentBytes overrides the WAL segment size (tests).
	segmentBytes int64
}

const (
	defaultElectionTimeout = time.Second
	defaultSnapshotEntries = 10000
	electionTicks          = 10
	heartbeatTicks         = 2
)

func (c *Config) validate() error {
	switch {
	case c.NodeID == 0:
		return errors.New("quorum: NodeID must not be 0")
	case c.FS == nil || c.Dir == "":
		return errors.New("quorum: FS and Dir are required")
	case c.Listener == nil:
		return errors.New("quorum: Listener is required")
	case c.SM == nil:
		return errors.New("quorum: SM is required")
	case len(c.ClusterID) == 0 || len(c.ClusterID) > maxClusterIDBytes:
		return fmt.Errorf("quorum: ClusterID must be 1 to %d bytes", maxClusterIDBytes)
	}
	if c.Learner {
		if _, ok := c.Voters[c.NodeID]; ok {
			return fmt.Errorf("quorum: learner %d is among the voters", c.NodeID)
		}
		if c.Address == "" {
			c.Address = c.Listener.Addr().String()
		}
		if err := checkPeerAddr(c.Address); err != nil {
			return fmt.Errorf("quorum: learner Address: %w (set Address to where peers reach this node)", err)
		}
	} else if !c.Join {
		if _, ok := c.Voters[c.NodeID]; !ok {
			return fmt.Errorf("quorum: node %d is not among the voters and Join is not set", c.NodeID)
		}
	}
	for id, addr := range c.Voters {
		if id == 0 || addr == "" {
			return fmt.Errorf("quorum: bad voter %d=%q", id, addr)
		}
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = defaultElectionTimeout
	}
	if c.ElectionTimeout < 10*time.Millisecond {
		return fmt.Errorf("quorum: ElectionTimeout %v is below 10ms", c.ElectionTimeout)
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = defaultSnapshotEntries
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
