package quorum

// Bounds on what is read from disk or the network, checked before anything
// of that size is allocated. They are constants rather than settings because
// every node of a quorum must agree on them.
const (
	// MaxProposalBytes bounds the data of one Propose call (1 MiB), so one
	// metadata record can never make an entry that a follower refuses.
	MaxProposalBytes = 1 << 20
	// maxEntryBytes bounds one encoded raft entry: a proposal plus its
	// header and protobuf framing.
	maxEntryBytes = MaxProposalBytes + 4<<10
	// maxWALRecordBytes bounds one WAL record's payload (an entry or a
	// hard state).
	maxWALRecordBytes = maxEntryBytes + 1<<10
	// MaxSnapshotBytes bounds a snapshot's data (64 MiB): the state
	// machine's snapshot plus the quorum's membership. A larger state
	// machine snapshot is not taken (the log is then not compacted).
	MaxSnapshotBytes = 64 << 20
	// maxSnapshotFileBytes bounds a snapshot file: the data plus metadata.
	maxSnapshotFileBytes = MaxSnapshotBytes + 1<<20
	// maxFrameBytes bounds one transport frame: a raft message carrying a
	// snapshot, or a batch of entries (raft's MaxSizePerMsg plus one entry).
	maxFrameBytes = maxSnapshotFileBytes + 1<<20
	// MaxGroupEntryBytes bounds the data of one partition group entry: a
	// record batch of a replicated partition (max.message.bytes above it
	// is refused for such topics) plus its envelope.
	MaxGroupEntryBytes = 8 << 20
	// maxGroupEntryBytes bounds one encoded partition group entry.
	maxGroupEntryBytes = MaxGroupEntryBytes + proposalHeader + 4<<10
	// maxGroupWALRecordBytes bounds one WAL record of a partition group.
	maxGroupWALRecordBytes = maxGroupEntryBytes + 1<<10
	// maxClusterIDBytes bounds the cluster id in the handshake.
	maxClusterIDBytes = 255
	// maxAddrBytes bounds the learner address in the handshake.
	maxAddrBytes = 255
	// maxLearners bounds the learners a leader admits on request, so that
	// peers inventing node ids cannot grow the membership without end
	// (AddLearner, called explicitly, is not bound).
	maxLearners = 64
	// maxRejectReasonBytes bounds the reason of a refused handshake.
	maxRejectReasonBytes = 512
	// maxMetaFileBytes bounds the small JSON files of a storage directory
	// (identity, remembered peers).
	maxMetaFileBytes = 1 << 20
)
