package partition

import "github.com/exactly/exactly/internal/record"

// StateLog is what a coordinator keeps its state in and replays it from
// (the group, transaction and share coordinators' internal topics): a
// *Partition on a single node or an unreplicated partition, or, for a
// replicated one, its leader's writes going through the partition's raft
// group (the broker's replicatedStateLog).
//
// Offsets returned by Append and LogEndOffset are tickets for
// WaitDurable: on a Partition they are the log's offsets; through a group
// they may run behind the log's (a marker another writer adds takes
// offsets the coordinator does not count), never ahead, so
// DeleteRecordsBefore(LogEndOffset()) never drops what was appended after.
type StateLog interface {
	// Append adds a batch the coordinator encoded.
	Append(batch []byte, h record.Header) (AppendResult, error)
	// WaitDurable returns once everything up to upto survives a crash
	// (fsynced; committed by a majority of a replicated partition).
	WaitDurable(upto int64) error
	// LogEndOffset is the ticket after the last Append.
	LogEndOffset() int64
	// LogStartOffset, HighWatermark and Read serve the replay.
	LogStartOffset() int64
	HighWatermark() int64
	Read(offset int64, maxBytes int, readCommitted bool) ([]byte, error)
	// DeleteRecordsBefore raises the log start offset (after a snapshot).
	DeleteRecordsBefore(offset int64) (int64, error)
}

var _ StateLog = (*Partition)(nil)
