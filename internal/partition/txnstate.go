package partition

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// Producer state snapshots: producers-<20-digit offset>.snapshot holds the
// state with every batch below that offset applied.
const (
	snapshotPrefix = "producers-"
	snapshotSuffix = ".snapshot"
	// snapshotEvery bounds replay after a crash: a snapshot is taken once
	// this many bytes were appended since the last one.
	snapshotEvery = 64 << 20
	keepSnapshots = 2
)

func snapshotName(offset int64) string {
	return fmt.Sprintf("%s%020d%s", snapshotPrefix, offset, snapshotSuffix)
}

func parseSnapshotName(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, snapshotPrefix)
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, snapshotSuffix)
	if !ok || len(s) != 20 {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// snapshots lists snapshot offsets, newest first.
func (p *Partition) snapshots() ([]int64, error) {
	names, err := p.fs.ReadDir(p.dir)
	if err != nil {
		return nil, err
	}
	var offs []int64
	for _, n := range names {
		if off, ok := parseSnapshotName(n); ok {
			offs = append(offs, off)
		}
	}
	sort.Slice(offs, func(i, j int) bool { return offs[i] > offs[j] })
	return offs, nil
}

// loadState rebuilds producer state: the newest readable snapshot that the
// log still covers, then a replay of every batch header after it.
// Snapshots above the log end are deleted first.
func (p *Partition) loadState() error {
	p.state = producerstate.New()
	p.state.SetLimits(p.limits.Limits)
	from := p.log.StartOffset()
	offs, err := p.snapshots()
	if err != nil {
		return err
	}
	removed := false
	for _, off := range offs {
		if off > p.log.NextOffset() {
			// Written before a tail that is gone (lost in a crash, or
			// truncated): it describes batches the log no longer has,
			// and would pass for valid once the log grows past it.
			if err := p.fs.Remove(filepath.Join(p.dir, snapshotName(off))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			removed = true
			continue
		}
		data, err := p.readFile(snapshotName(off))
		if err != nil {
			return err
		}
		st, at, err := producerstate.Decode(data)
		if errors.Is(err, producerstate.ErrNewerFormat) {
			return fmt.Errorf("%s: %w", filepath.Join(p.dir, snapshotName(off)), err)
		}
		if err != nil || at != off {
			p.logr.Warn("ignoring unreadable producer state snapshot", "topic", p.Topic, "partition", p.Index, "offset", off, "err", err)
			continue
		}
		p.state = st
		p.state.SetLimits(p.limits.Limits)
		if off > from {
			from = off
		}
		break
	}
	if removed {
		if err := p.fs.SyncDir(p.dir); err != nil {
			return err
		}
	}
	end := p.log.NextOffset()
	for off := from; off < end; {
		chunk, err := p.log.Read(off, 4<<20, end)
		if err != nil {
			if errors.Is(err, log.ErrOffsetOutOfRange) {
				break
			}
			return fmt.Errorf("replaying producer state: %w", err)
		}
		if len(chunk) == 0 {
			break
		}
		next := off
		_, err = record.Split(chunk, func(h record.Header, batch []byte) error {
			if h.LastOffset() < off { // the read starts at the batch holding off
				return nil
			}
			ctype, cepoch := controlInfo(h, batch)
			p.limits.forgotten(p.state.Apply(&h, ctype, cepoch))
			next = h.LastOffset() + 1
			return nil
		})
		if err != nil {
			return fmt.Errorf("replaying producer state: %w", err)
		}
		if next == off {
			break
		}
		off = next
	}
	if !p.replicated.Load() {
		p.state.TrimBefore(p.log.StartOffset())
	}
	p.publishLocked()
	return nil
}

// controlInfo decodes a marker's type (0 abort, 1 commit) and coordinator
// epoch; -1, 0 for ordinary batches or unreadable markers.
func controlInfo(h record.Header, batch []byte) (int16, int32) {
	if !h.IsControl() {
		return -1, 0
	}
	ctype, cepoch := int16(-1), int32(0)
	record.ForEach(h, batch, func(r record.Record) bool {
		if len(r.Key) >= 4 {
			ctype = int16(binary.BigEndian.Uint16(r.Key[2:]))
		}
		if len(r.Value) >= 6 {
			cepoch = int32(binary.BigEndian.Uint32(r.Value[2:]))
		}
		return false
	})
	return ctype, cepoch
}

func (p *Partition) readFile(name string) ([]byte, error) {
	f, err := p.fs.OpenFile(filepath.Join(p.dir, name), os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, 0); err != nil && size > 0 {
		return nil, err
	}
	return buf, nil
}

// publishLocked makes the state that readers need (LSO bound, aborted
// index) visible without the append lock. p.mu must be held (or the
// partition not yet shared).
func (p *Partition) publishLocked() {
	p.firstUnstable.Store(p.state.FirstUnstableOffset())
	ab := p.state.Aborted()
	p.aborted.Store(&ab)
}

// takeSnapshot writes the producer state as of the current log end,
// expired producers left out. The log is fsynced up to that offset first,
// so a snapshot never describes data a crash could take back.
func (p *Partition) takeSnapshot() error {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	p.mu.Lock()
	off := p.log.NextOffset()
	if !p.replicated.Load() {
		// A replicated partition expires only through its expiry
		// entries, and keeps producers past its log start as the other
		// replicas do.
		p.expireLocked(time.Now().UnixMilli())
		p.state.TrimBefore(p.log.StartOffset())
	}
	data := p.state.Encode(off)
	p.sinceSnapshot = 0
	p.mu.Unlock()
	if err := p.WaitDurable(off); err != nil {
		return err
	}
	if err := vfs.WriteFileAtomic(p.fs, filepath.Join(p.dir, snapshotName(off)), data); err != nil {
		return err
	}
	offs, err := p.snapshots()
	if err != nil {
		return err
	}
	for i, o := range offs {
		if i >= keepSnapshots {
			if err := p.fs.Remove(filepath.Join(p.dir, snapshotName(o))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// controlBatch encodes a COMMIT or ABORT marker batch for a producer.
func controlBatch(producerID int64, producerEpoch int16, commit bool, coordinatorEpoch int32, now int64) []byte {
	be := binary.BigEndian
	key := []byte{0, 0, 0, 0}
	if commit {
		key[3] = 1
	}
	value := be.AppendUint32([]byte{0, 0}, uint32(coordinatorEpoch))
	// One record: attributes, timestamp delta, offset delta, key, value, no headers.
	var rec []byte
	rec = append(rec, 0)
	rec = binary.AppendVarint(rec, 0)
	rec = binary.AppendVarint(rec, 0)
	rec = binary.AppendVarint(rec, int64(len(key)))
	rec = append(rec, key...)
	rec = binary.AppendVarint(rec, int64(len(value)))
	rec = append(rec, value...)
	rec = binary.AppendVarint(rec, 0)
	b := make([]byte, record.HeaderSize, record.HeaderSize+len(rec)+2)
	be.PutUint64(b[0:], 0)
	be.PutUint32(b[12:], 0) // leader epoch
	b[16] = 2
	be.PutUint16(b[21:], record.AttrTransactional|record.AttrControl)
	be.PutUint32(b[23:], 0)
	be.PutUint64(b[27:], uint64(now))
	be.PutUint64(b[35:], uint64(now))
	be.PutUint64(b[43:], uint64(producerID))
	be.PutUint16(b[51:], uint16(producerEpoch))
	be.PutUint32(b[53:], 0xffffffff) // base sequence -1
	be.PutUint32(b[57:], 1)
	b = binary.AppendVarint(b, int64(len(rec)))
	b = append(b, rec...)
	be.PutUint32(b[8:], uint32(len(b)-12))
	be.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}

// WriteTxnMarker appends a COMMIT or ABORT marker for the producer's
// transaction and returns once it is durable. The marker ends the open
// transaction (moving the LSO) and, for ABORT, adds an entry to the
// aborted-transaction index. A marker from an epoch older than the
// producer's current one is a zombie's and is rejected.
func (p *Partition) WriteTxnMarker(producerID int64, producerEpoch int16, commit bool, coordinatorEpoch int32) error {
	return p.writeMarker(producerID, producerEpoch, commit, coordinatorEpoch, anyTxn)
}

// WriteTxnMarkerIfOpen is WriteTxnMarker only while the producer's open
// transaction is the one starting at firstOffset (ErrInvalidTxnState
// otherwise). A marker requested over the wire must end exactly the
// transaction that was checked — not one that started since, nor a
// producer with nothing open (whose epoch the marker would bump, fencing
// it).
func (p *Partition) WriteTxnMarkerIfOpen(producerID int64, producerEpoch int16, commit bool, coordinatorEpoch int32, firstOffset int64) error {
	return p.writeMarker(producerID, producerEpoch, commit, coordinatorEpoch, firstOffset)
}

// anyTxn lets writeMarker end whatever is open (the coordinator's markers).
const anyTxn = -2

func (p *Partition) writeMarker(producerID int64, producerEpoch int16, commit bool, coordinatorEpoch int32, firstOffset int64) error {
	p.mu.Lock()
	base, err := p.markerLocked(producerID, producerEpoch, commit, coordinatorEpoch, firstOffset, time.Now().UnixMilli(), 0)
	p.mu.Unlock()
	if err != nil {
		return err
	}
	return p.WaitDurable(base + 1)
}

// markerLocked checks and appends a marker stamped nowMs and leaderEpoch
// and returns its offset; p.mu is held.
func (p *Partition) markerLocked(producerID int64, producerEpoch int16, commit bool, coordinatorEpoch int32, firstOffset int64, nowMs int64, leaderEpoch int32) (int64, error) {
	batch := controlBatch(producerID, producerEpoch, commit, coordinatorEpoch, nowMs)
	record.SetLeaderEpoch(batch, leaderEpoch)
	h, err := record.Parse(batch)
	if err != nil {
		return 0, err
	}
	if p.stateErr != nil {
		return 0, p.stateErr
	}
	if firstOffset != anyTxn {
		if open := p.state.OpenTxn(producerID); open < 0 || open != firstOffset {
			return 0, fmt.Errorf("%w: producer %d has no open transaction starting at %d on %s-%d", producerstate.ErrInvalidTxnState, producerID, firstOffset, p.Topic, p.Index)
		}
	}
	if epoch, ok := p.state.Epoch(producerID); ok && producerEpoch < epoch {
		return 0, fmt.Errorf("%w: marker epoch %d is older than producer %d's epoch %d", producerstate.ErrInvalidEpoch, producerEpoch, producerID, epoch)
	}
	base, err := p.log.Append(batch)
	if err != nil {
		return 0, p.storageErr(err)
	}
	h.BaseOffset = base
	ctype := int16(0)
	if commit {
		ctype = 1
	}
	p.limits.forgotten(p.state.Apply(&h, ctype, coordinatorEpoch))
	p.markers[producerID]++
	p.publishLocked()
	return base, nil
}

// OpenTxn is the first offset of the producer's open transaction, or -1.
func (p *Partition) OpenTxn(producerID int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.OpenTxn(producerID)
}

// Producers returns a copy of the producer state (DescribeProducers).
func (p *Partition) Producers() []producerstate.Producer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Producers()
}

// AbortedTxns returns the aborted transactions a read_committed fetch of
// [from, to) must report, sorted by first offset.
func (p *Partition) AbortedTxns(from, to int64) []producerstate.AbortedTxn {
	ab := p.aborted.Load()
	if ab == nil {
		return nil
	}
	return producerstate.AbortedInRange(*ab, from, to)
}

// ExpireProducers forgets producers idle longer than the expiration (none
// with an open transaction) and, if it forgot any, snapshots the state at
// once: a restart then replays from a snapshot without them, instead of
// bringing them back from the batches after an older one.
func (p *Partition) ExpireProducers(nowMs int64) (int, error) {
	p.mu.Lock()
	n := p.expireLocked(nowMs)
	p.mu.Unlock()
	if n == 0 {
		return 0, nil
	}
	return n, p.takeSnapshot()
}

// expireLocked applies the expiration; p.mu held.
func (p *Partition) expireLocked(nowMs int64) int {
	if p.limits.ExpirationMs <= 0 {
		return 0
	}
	n := p.state.Expire(nowMs - p.limits.ExpirationMs)
	for id := range p.markers {
		if !p.state.Known(id) {
			delete(p.markers, id)
		}
	}
	p.limits.forgotten(n)
	return n
}

// ProducerCount is how many producers the partition's state holds.
func (p *Partition) ProducerCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state.Len()
}

// TruncateTo removes every batch at or above offset from the partition's
// log (see log.Log.TruncateTo: offset must be a batch boundary, else
// nothing changes) and rebuilds the producer state to match, as Open
// builds it: producer snapshots above the new end are deleted, then the
// newest one left is loaded and the log replayed after it. The LSO and
// aborted index are republished and the HW comes down to the new end if it
// was above. A producer's batches above offset may then be appended again
// (their sequence numbers are expected again), while a retry of a batch
// below offset is still a duplicate.
//
// It is for a replicated partition cutting its log back to what its
// quorum committed. The caller must not append concurrently; the
// partition's append lock is held throughout anyway, so appends wait. If
// the producer state cannot be rebuilt, the error wraps ErrOffline and the
// partition refuses appends until reopened.
func (p *Partition) TruncateTo(offset int64) error {
	return p.cut(func() error { return p.log.TruncateTo(offset) })
}

// ResetTo empties the partition's log and starts it at start (see
// log.Log.ResetTo), for a follower whose log lies entirely behind its
// leader's, then rebuilds the producer state as TruncateTo does: what
// snapshots at or below start recorded is kept, which is right when the
// discarded log was a prefix of the one being followed. The HW becomes
// start. As for TruncateTo, the caller must not append concurrently.
func (p *Partition) ResetTo(start int64) error {
	return p.cut(func() error { return p.log.ResetTo(start) })
}

// cut runs a truncation of the log and brings the partition's state in
// line with what is left.
func (p *Partition) cut(truncate func() error) error {
	// snapMu: a snapshot of the old log must not be written once those
	// above the cut are gone.
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stateErr != nil {
		return p.stateErr
	}
	if err := truncate(); err != nil {
		return p.storageErr(err)
	}
	// A batch verified before may belong to a transaction the cut
	// removed, or ended by a marker that is gone.
	p.cuts++
	p.sinceSnapshot = 0
	p.lowerHW(p.log.NextOffset())
	// Never below the start either (a reset beyond the old end).
	p.advanceHW(p.log.StartOffset())
	if err := p.loadState(); err != nil {
		p.stateErr = fmt.Errorf("%w: rebuilding the producer state of %s-%d after a truncation: %v", ErrOffline, p.Topic, p.Index, err)
		return p.stateErr
	}
	return nil
}
