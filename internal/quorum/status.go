package quorum

// Role is a node's part in the current term.
type Role string

// Roles, as raft names its states.
const (
	RoleFollower     Role = "follower"
	RoleCandidate    Role = "candidate"
	RolePreCandidate Role = "pre-candidate"
	RoleLeader       Role = "leader"
	// RoleLearner is a node that is a learner in the membership: it
	// follows the log without voting. A learner not yet admitted is a
	// follower.
	RoleLearner Role = "learner"
)

// Status is a point-in-time view of a node, for metrics and operators.
type Status struct {
	NodeID uint64
	// DirectoryID is this node's storage directory id.
	DirectoryID string
	Role        Role
	Term        uint64
	// Leader is the leader's node id, 0 if unknown.
	Leader uint64
	// Commit is the highest index known committed; Applied the highest
	// applied to the StateMachine here (Commit-Applied is the apply lag).
	Commit  uint64
	Applied uint64
	// SnapshotIndex is the index of the newest durable snapshot.
	SnapshotIndex uint64
	// LeaderChanges counts the leaders this node has seen since it started.
	LeaderChanges uint64
	// Voters are the current voters, by node id.
	Voters []VoterStatus
	// Learners are the current learners (non-voting members), by node id.
	Learners []VoterStatus
}

// VoterStatus is one member (voter or learner) as this node sees it.
type VoterStatus struct {
	ID      uint64
	Address string
	// DirectoryID is the remembered directory id, empty if not yet seen.
	DirectoryID string
	// Match is the highest index known replicated on the member; only the
	// leader knows it (0 elsewhere). Lag is the leader's last index minus
	// Match.
	Match uint64
	Lag   uint64
}
