// Package log is the per-partition storage of exactly: a segmented,
// append-only log of Kafka RecordBatch v2 bytes, stored exactly as producers
// sent them.
//
// # On-disk format
//
// A partition's log is one directory holding:
//
//   - <base>.log: a segment, the concatenation of whole record batches in
//     offset order, byte-for-byte as received except for the base offset
//     field, which the log stamps (the CRC does not cover it). <base> is the
//     segment's first offset as 20 zero-padded decimal digits, Kafka style
//     (00000000000000000000.log). A batch never straddles two segments. A
//     segment is rolled (a new one started) before an append would make it
//     exceed Config.SegmentBytes, when its first batch was appended at least
//     Config.SegmentMs ago (after a restart: the first batch's timestamp, if
//     not in the future), or when relative offsets would overflow int32.
//   - <base>.index: the sparse offset index of a closed segment. A 32-byte
//     header (magic "EXOI", version 1, 3 zero bytes, the .log size it
//     describes as uint64, the segment's next offset as int64, the entry count
//     as uint32, a CRC-32C of the header's first 28 bytes followed by the
//     entries) and then entries of relative offset uint32 + file position
//     uint32, big endian: the batch whose base offset is base+relative starts
//     at that position. An entry is added for the first batch that starts at
//     least Config.IndexIntervalBytes after the previous entry (position 0 is
//     implicit).
//   - <base>.timeindex: the sparse time index of a closed segment. A 32-byte
//     header (magic "EXOT", version 1, 3 zero bytes, .log size uint64, the
//     segment's largest batch MaxTimestamp int64 or -1, entry count uint32,
//     CRC-32C as above) and entries of timestamp int64 + relative offset
//     uint32: every batch up to and including the one at base+relative has
//     MaxTimestamp <= timestamp, and that batch raised the running maximum to
//     it. An entry is added when a batch raises the segment's maximum
//     timestamp and at least IndexIntervalBytes were appended since the
//     previous time entry (the first raise always adds one).
//   - start-offset.checkpoint: the log start offset raised by
//     DeleteRecordsBefore, as the text "v1 <offset>\n", written to a fsynced
//     temporary file, renamed into place and made durable with a directory
//     fsync before DeleteRecordsBefore returns. The start offset is
//     max(checkpoint, first segment's base offset); retention deletes whole
//     segments only, so the offset it implies needs no checkpoint.
//   - truncation.checkpoint: written by TruncateTo and ResetTo, as
//     "v1 <state> <offset> <kept> <ceiling>\n" (atomically). While the state
//     is truncate-to or reset-to the operation is decided but maybe not
//     done, and Open completes it; once it is truncated, the file tells
//     Open that a recovery point up to ceiling may predate the truncation
//     (see truncate.go), until a recovery point at or below the log end
//     lets Open remove it.
//   - *.tmp: files being written (index files, the checkpoints, a segment
//     rewritten by TruncateTo) before an atomic rename; stray ones are
//     removed by Open.
//
// Index files are written for a segment when it is rolled, and for the
// active segment on Close (Open still scans the last segment). In memory, every segment keeps its sparse indexes
// (about 8 bytes per IndexIntervalBytes of log), so reads never touch index
// files; the files only spare Open from scanning closed segments.
//
// # Durability
//
// Append writes to the active segment without fsync and returns at once.
// Sync(upto) is the commit point: it returns once every batch below upto is
// fsynced, and DurableOffset reports how far that is (on a single node this
// is the high watermark). Sync is a group commit: fsyncs are serialized and
// each one covers everything appended before it started, so concurrent
// callers share them. Rolling a segment fsyncs it, writes and fsyncs its
// index files, creates the next segment and fsyncs the directory before the
// append that triggered the roll proceeds, so a segment's predecessors are
// always durable and a durable segment's directory entry is too.
//
// Any failed write, fsync, truncate, rename or file creation on the write
// path takes the log offline: the error is sticky and every later Append,
// Sync, Read, DeleteRecordsBefore, ApplyRetention, TruncateTo and ResetTo
// returns an error wrapping ErrLogOffline, because after a failed fsync the
// kernel may have dropped dirty pages and retrying could report data
// durable that is not.
// Reopening the log (after the operator fixed the disk) recovers from what is
// on disk.
//
// # Recovery
//
// Open first finishes an interrupted cleaning swap and removes what an
// interrupted truncation removes, lists the directory, removes *.tmp files
// and index files without a segment, and then for each segment, oldest
// first: closed segments whose two index files are present, CRC-valid,
// describe the segment's current size and agree with the batch headers
// after the last index entry are loaded from them; other segments, and
// always the last one, are scanned batch by batch (header, length and CRC-32C), stopping at the first short,
// corrupt or non-contiguous batch (its base offset must be the previous
// batch's last offset + 1, the first must equal the segment's base); the file
// is truncated there and fsynced, the indexes are rebuilt, and one warning is
// logged per truncation. A segment that overlaps its predecessor is deleted
// with everything after it; a gap between segments is kept (reads skip it)
// and logged. Empty trailing segments other than the first are deleted. The
// start offset is max(checkpoint, first segment base); if a crash lost data
// below a checkpointed start offset the log restarts empty at that offset.
// Finally the last segment and the directory are fsynced, so that everything
// Open recovered is durable and DurableOffset equals NextOffset, and an
// interrupted truncation runs again on the recovered log.
//
// # Compaction
//
// Clean (clean.go) removes records superseded by a later record of the
// same key from closed segments, keeping offsets: a compacted log skips
// offsets where records went, and says so with cleaner-offset.checkpoint,
// so that only such a log accepts jumps between batches. A cleaned group of
// segments replaces the old ones through <base>.<end>.cleaned and .swap
// files, which Open replays first; see clean.go for the protocol.
package log
