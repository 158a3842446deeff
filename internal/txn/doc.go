// Package txn is the transaction coordinator: it owns every transactional
// id's state (producer id and epoch, the partitions and consumer groups in
// the running transaction, its timeout) and decides how each transaction
// ends.
//
// The package has two halves.
//
// Machine is a pure state machine in the style of etcd's raft core: no
// goroutines, no I/O, no clock. Callers hand it a request and the current
// time; it answers with a result and Effects — the records that must be
// made durable in the transaction log before the answer may be revealed,
// and the transaction markers to write once they are. Because it is pure,
// the whole protocol (fencing, KIP-360 recovery, KIP-890 epoch bumps,
// timeouts, expiration) is tested by transcript files under testdata/.
//
// Driver wraps a Machine with what it needs to run in a broker: a mutex,
// the __transaction_state partition it appends records to (one batch per
// state change, so each change is atomic), replay of that log on start, a
// timer goroutine for timeouts and expiration, marker writers, and
// compaction (a snapshot of all live state followed by DeleteRecordsBefore)
// so the log does not grow without bound.
//
// # The transaction log
//
// Every record is the complete state of one transactional id (or a
// reservation of producer ids), so replay is "last record wins" and a
// snapshot is simply every live entry written again: replaying a log that
// contains a partial snapshot yields the same state as replaying one that
// contains none. Records are RecordBatch v2 records whose key names what
// they describe ("t" + transactional id, or "p" for the producer id
// reservation) and whose value is versioned JSON; JSON because the log is
// small, rarely read, and worth being able to read by eye when something
// goes wrong.
//
// # Invariants
//
//   - Nothing is revealed before it is durable: the driver answers a request
//     only after every record appended so far is fsynced, and writes the
//     markers of a transaction only after its Prepare record is fsynced. A
//     crash therefore never takes back a decision a client or a partition
//     has seen.
//   - A transaction in PrepareCommit or PrepareAbort always completes: the
//     driver retries its markers until they are written, including after a
//     restart (Machine.Pending lists them after replay).
//   - Producer ids are never reused: they are handed out from blocks whose
//     end is recorded durably before the first id of the block is revealed.
//   - Every transaction end bumps the producer epoch under KIP-890
//     transaction version 2 (EndTxn v5+), and every abort the coordinator
//     starts (timeout, a new producer taking over) bumps it too, so a
//     request from an earlier transaction can never be applied to a later
//     one.
package txn
