package log

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/vfs"
)

// Truncation: TruncateTo cuts the log back to an offset, ResetTo replaces
// it by an empty log starting anywhere. Both touch many files, so the
// truncation file makes each one atomic across a crash. TruncateTo(T):
//
//  0. the segment holding T is fsynced if it is the active one, so that
//     everything below T is durable;
//  1. truncation.checkpoint is written (atomically) as "v1 truncate-to T
//     <kept> <ceiling>", kept being the offset after the last batch below
//     T: from here on the cut is decided;
//  2. the cleaner's position comes down to T if it is above;
//  3. the segments after the one holding T are detached and their files
//     removed, newest first and each .log first (as retention does), then
//     that segment's index files; the directory is fsynced;
//  4. the segment holding T is cut before the first batch at or above T:
//     in place (truncate, fsync) when no reader or cleaner holds it;
//     otherwise its kept bytes go to <base>.log.tmp, which is fsynced and
//     renamed over it, so that whoever holds the old file goes on reading
//     it; the directory is fsynced;
//  5. in a compacted log whose batches below T end before T, an empty
//     segment at T holds the end offset (as recovery keeps one);
//  6. the file becomes "v1 truncated T <kept> <ceiling>".
//
// ResetTo(S) writes "v1 reset-to S S <ceiling>", lowers the cleaner's
// position, removes every segment, writes start-offset.checkpoint = S,
// creates an empty segment at S and ends with "v1 truncated S S
// <ceiling>".
//
// Open replays a pending operation: before the segments are read, every
// segment file above T (for a reset: every segment file) is removed, and
// for a reset start-offset.checkpoint is set to S; the normal recovery
// follows; then the operation runs again on the recovered log (every step
// is idempotent). So a crash leaves the log as it was before step 1
// became durable, or as the operation leaves it.
//
// The ceiling keeps a stale recovery point from making the removed
// batches look lost. The broker stores what RecoveryPoint returned,
// possibly read before a truncation and written after it; one above the
// new end would make the next Open report fsynced data as missing. The
// ceiling is the highest recovery point the log could have reported before
// the truncation (or before an earlier one whose file is still there).
// While the file exists, Open takes a recovery point at or below the
// ceiling as at most kept (everything below it was durable before the
// truncation began, and stays), since it may predate the truncation; one
// above the ceiling was stored after it and is believed in full. Open
// removes the file once the stored recovery point is at or below the
// recovered end offset: that value, and every later one, then describes
// the log as it is.

// truncationName is the truncation file (see above).
const truncationName = "truncation.checkpoint"

// The states of a truncation file.
const (
	truncPendingCut   = "truncate-to"
	truncPendingReset = "reset-to"
	truncDone         = "truncated"
)

// ErrNotBoundary is returned by TruncateTo for an offset inside a batch:
// a log is only cut between batches.
var ErrNotBoundary = errors.New("log: offset is inside a batch")

// truncation is the contents of the truncation file.
type truncation struct {
	state  string
	offset int64 // where the log is cut, or where a reset starts it
	// kept is the offset after the batches the truncation keeps: offset,
	// except in a compacted log cut between batches.
	kept    int64
	ceiling int64
}

func (t truncation) pending() bool { return t.state != truncDone }

func (t truncation) encode() []byte {
	return fmt.Appendf(nil, "v1 %s %d %d %d\n", t.state, t.offset, t.kept, t.ceiling)
}

// parseTruncation parses "v1 <state> <offset> <kept> <ceiling>\n".
func parseTruncation(b []byte) (truncation, error) {
	var v int
	if n, _ := fmt.Sscanf(string(b), "v%d ", &v); n == 1 && v > 1 {
		return truncation{}, fmt.Errorf("version %d %w (up to 1)", v, errNewerFormat)
	}
	bad := fmt.Errorf("malformed truncation file %q", b)
	s, ok := strings.CutPrefix(string(b), "v1 ")
	if ok {
		s, ok = strings.CutSuffix(s, "\n")
	}
	f := strings.Split(s, " ")
	if !ok || len(f) != 4 {
		return truncation{}, bad
	}
	t := truncation{state: f[0]}
	switch t.state {
	case truncPendingCut, truncPendingReset, truncDone:
	default:
		return truncation{}, bad
	}
	var err1, err2, err3 error
	t.offset, err1 = strconv.ParseInt(f[1], 10, 64)
	t.kept, err2 = strconv.ParseInt(f[2], 10, 64)
	t.ceiling, err3 = strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || t.kept < 0 || t.kept > t.offset || t.ceiling < 0 {
		return truncation{}, bad
	}
	return t, nil
}

// readTruncation returns the log's truncation file, if any. A malformed
// one is logged and ignored, like the other checkpoints: it is written
// atomically, so only damage makes one.
func (l *Log) readTruncation() (*truncation, error) {
	b, err := l.readFile(truncationName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t, err := parseTruncation(b)
	if errors.Is(err, errNewerFormat) {
		return nil, fmt.Errorf("%s: %w", truncationName, err)
	}
	if err != nil {
		l.logger.Warn("ignoring malformed truncation file", "contents", string(b))
		return nil, nil
	}
	return &t, nil
}

// trustedRecoveryPoint is the recovery point Open may hold the log to:
// rp, unless a truncation file says it may predate a truncation.
func (t *truncation) trustedRecoveryPoint(rp int64) int64 {
	if t != nil && rp <= t.ceiling && rp > t.kept {
		return t.kept
	}
	return rp
}

// writeTruncation replaces the truncation file, durably.
func (l *Log) writeTruncation(t truncation) error {
	return l.writeFileAtomic(truncationName, t.encode())
}

// TruncateTo removes every batch at or above offset, which must be a batch
// boundary: the base offset of a batch, or the log end offset (a no-op),
// or, in a compacted log, any offset between two batches. An offset inside
// a batch is ErrNotBoundary, one outside [StartOffset, NextOffset]
// ErrOffsetOutOfRange; either changes nothing. Afterwards NextOffset and
// DurableOffset are offset, everything below it is fsynced, and appends
// continue at offset. A crash at any point leaves the log as it was or as
// TruncateTo leaves it (see truncate.go), and a recovery point stored
// before the call does not make the next Open report the removed batches
// as lost.
//
// Readers are not disturbed: a segment that goes stays readable by whoever
// holds it until they finish, and a segment that is cut while someone
// holds it is rewritten into a new file instead. A cleaning in progress
// abandons its pass. TruncateTo waits for an fsync in progress and blocks
// appends while it runs; I/O failures take the log offline.
func (l *Log) TruncateTo(offset int64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.lockedUsable(); err != nil {
		return err
	}
	start, next := l.start.Load(), l.next.Load()
	if offset < start || offset > next {
		return fmt.Errorf("%w: truncate to %d, log has [%d, %d]", ErrOffsetOutOfRange, offset, start, next)
	}
	if offset == next {
		return nil
	}
	p, err := l.planCut(offset)
	if err != nil {
		if ce, ok := asCorruption(err); ok {
			return l.corrupt(ce)
		}
		return err
	}
	if err := l.applyCut(p); err != nil {
		return l.fail(err)
	}
	l.logger.Info("truncated log", "offset", offset, "previous_end", next)
	return nil
}

// ResetTo removes every segment and leaves an empty log whose start and
// end offsets are start, any offset >= 0 (below, inside or beyond the
// current log): for a follower whose log lies entirely behind its
// leader's. start-offset.checkpoint records start, so a crash after
// ResetTo reopens there; a crash during it leaves the log as it was or as
// ResetTo leaves it. Readers and cleanings are treated as by TruncateTo.
func (l *Log) ResetTo(start int64) error {
	if start < 0 {
		return fmt.Errorf("%w: reset to %d", ErrOffsetOutOfRange, start)
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.lockedUsable(); err != nil {
		return err
	}
	prevStart, prevEnd := l.start.Load(), l.next.Load()
	if err := l.resetLocked(start); err != nil {
		return l.fail(err)
	}
	l.logger.Info("reset log", "start", start, "previous_start", prevStart, "previous_end", prevEnd)
	return nil
}

// cutPlan is where TruncateTo cuts, found before anything changes.
type cutPlan struct {
	offset int64
	k      int      // index of the segment holding offset: the last with base <= offset
	seg    *segment // l.segs[k]
	pos    int64    // where seg is cut
	// kept is seg's state rebuilt over its batches below pos; nil when
	// seg keeps everything.
	kept *segment
	end  int64 // the offset after seg's kept batches
}

// planCut finds where to cut the log at offset and rebuilds the cut
// segment's state, reading and CRC-checking its kept batches as recovery
// does. Called with mu held; it changes nothing.
func (l *Log) planCut(offset int64) (*cutPlan, error) {
	k := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > offset }) - 1
	if k < 0 {
		return nil, fmt.Errorf("%w: offset %d below the first segment", ErrOffsetOutOfRange, offset)
	}
	s := l.segs[k]
	pos, err := cutPosition(s, offset)
	if err != nil {
		return nil, err
	}
	p := &cutPlan{offset: offset, k: k, seg: s, pos: pos, end: s.next.Load()}
	if pos < s.size.Load() {
		// The rebuilt state borrows s's file, read only; it is adopted,
		// never released.
		kept := newSegment(l.dir, s.base, s.f)
		kept.gaps = s.gaps
		d, err := walkPrefix(kept, pos, l.cfg.IndexIntervalBytes, nil)
		if err != nil {
			return nil, err
		}
		if d != nil {
			return nil, d
		}
		p.kept, p.end = kept, kept.next.Load()
	}
	return p, nil
}

// cutPosition returns the file position of the first batch of s based at
// or above offset (the size of s if there is none).
func cutPosition(s *segment, offset int64) (int64, error) {
	size := s.size.Load()
	r, bp := newScanReader(s, size)
	defer putScanReader(bp)
	pos, expect := s.floor(offset)
	for pos < size {
		h, err := r.header(pos)
		if err != nil {
			return 0, readErr(s, pos, expect, err)
		}
		if !s.follows(h.BaseOffset, expect) || h.LastOffsetDelta < 0 {
			return 0, &CorruptionError{File: s.path, Pos: pos, Offset: expect,
				Reason: fmt.Sprintf("batch offsets %d..%d, expected base %d", h.BaseOffset, h.LastOffset(), expect)}
		}
		if h.BaseOffset >= offset {
			return pos, nil
		}
		if h.LastOffset() >= offset {
			return 0, fmt.Errorf("%w: offset %d, batch %d..%d", ErrNotBoundary, offset, h.BaseOffset, h.LastOffset())
		}
		pos += int64(h.Size())
		expect = h.LastOffset() + 1
	}
	return size, nil
}

// applyCut carries out a planned cut (steps 0-6 at the top of this file).
// Called with mu held (and syncMu, unless from Open); errors are I/O
// failures, for the caller to take the log offline with.
func (l *Log) applyCut(p *cutPlan) error {
	s := p.seg
	victims := slices.Clone(l.segs[p.k+1:])
	needEmpty := p.end < p.offset
	if needEmpty && !l.gaps {
		// Only a replay can get here: a contiguous log that lost data
		// below the offset of an interrupted truncation. An empty
		// segment at offset would be a gap; the log ends where it ends.
		l.logger.Warn("the log ends below an interrupted truncation", "offset", p.offset, "end", p.end)
		needEmpty = false
	}
	if s == l.active() && l.durable.Load() < p.offset {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", s.path, err)
		}
		l.raiseDurable(l.next.Load())
	}
	l.truncations.Add(1)
	defer l.truncations.Add(1)
	ceiling := max(l.truncCeiling, l.RecoveryPoint())
	if err := l.writeTruncation(truncation{truncPendingCut, p.offset, p.end, ceiling}); err != nil {
		return err
	}
	l.truncCeiling = ceiling
	if err := l.lowerFirstDirty(p.offset); err != nil {
		return err
	}

	// Readers see the new end first, then a view without the victims;
	// whoever still holds one reads the unlinked file until done.
	newEnd := p.end
	if needEmpty {
		newEnd = p.offset
	}
	l.next.Store(newEnd)
	l.segs = slices.Clone(l.segs[:p.k+1])
	l.publish()
	var err error
	for i := len(victims) - 1; i >= 0; i-- {
		if rerr := l.removeSegmentFiles(victims[i].base); rerr != nil && err == nil {
			err = fmt.Errorf("remove segment %d: %w", victims[i].base, rerr)
		}
		victims[i].unref()
	}
	if err != nil {
		return err
	}
	if p.kept != nil {
		for _, suffix := range []string{indexSuffix, timeIndexSuffix} {
			if err := l.fs.Remove(filepath.Join(l.dir, segmentName(s.base, suffix))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}

	if p.kept != nil {
		// The size drops before the reference count is read: a reader
		// that takes a reference after that reads no further than the
		// cut, and one that took it before makes the cut a copy.
		s.adopt(p.kept)
		if s.refs.Load() == 1 {
			if err := s.f.Truncate(p.pos); err != nil {
				return fmt.Errorf("truncate %s: %w", s.path, err)
			}
			if err := s.f.Sync(); err != nil {
				return fmt.Errorf("sync %s: %w", s.path, err)
			}
		} else {
			ns, err := l.replaceWithPrefix(s, p.kept, p.pos)
			if err != nil {
				return err
			}
			segs := slices.Clone(l.segs)
			segs[p.k] = ns
			l.segs = segs
			l.publish()
			s.unref()
			if err := l.fs.SyncDir(l.dir); err != nil {
				return fmt.Errorf("sync dir: %w", err)
			}
		}
	}
	if needEmpty {
		// After the cut is durable: an empty segment at offset next to
		// an uncut predecessor would overlap it.
		e, err := l.createSegment(p.offset)
		if err != nil {
			return err
		}
		l.segs = append(slices.Clip(l.segs), e)
		l.publish()
		if err := l.fs.SyncDir(l.dir); err != nil {
			return fmt.Errorf("sync dir: %w", err)
		}
	}
	l.afterTruncation(newEnd)
	return l.writeTruncation(truncation{truncDone, p.offset, p.end, ceiling})
}

// resetLocked empties the log and starts it at start (see ResetTo).
// Called with mu held (and syncMu, unless from Open); errors are I/O
// failures.
func (l *Log) resetLocked(start int64) error {
	l.truncations.Add(1)
	defer l.truncations.Add(1)
	ceiling := max(l.truncCeiling, l.RecoveryPoint())
	if err := l.writeTruncation(truncation{truncPendingReset, start, start, ceiling}); err != nil {
		return err
	}
	l.truncCeiling = ceiling
	if err := l.lowerFirstDirty(start); err != nil {
		return err
	}
	// An empty range makes every read return nothing or out of range
	// while the old segments go.
	l.start.Store(start)
	l.next.Store(start)
	for i := len(l.segs) - 1; i >= 0; i-- {
		if err := l.removeSegmentFiles(l.segs[i].base); err != nil {
			return fmt.Errorf("remove segment %d: %w", l.segs[i].base, err)
		}
	}
	if err := l.writeFileAtomic(checkpointName, []byte("v1 "+strconv.FormatInt(start, 10)+"\n")); err != nil {
		return err
	}
	e, err := l.createSegment(start)
	if err != nil {
		return err
	}
	victims := l.segs
	l.segs = []*segment{e}
	l.publish()
	for _, s := range victims {
		s.unref()
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("sync dir: %w", err)
	}
	l.afterTruncation(start)
	return l.writeTruncation(truncation{truncDone, start, start, ceiling})
}

// afterTruncation sets what a truncation to end leaves: everything below
// end is durable and nothing above it is, and the new active segment's
// age counts as recovery counts it.
func (l *Log) afterTruncation(end int64) {
	l.durable.Store(end)
	if l.recoveryPoint.Load() > end {
		l.recoveryPoint.Store(end)
	}
	act := l.active()
	now := l.now().UnixMilli()
	if act.size.Load() > 0 && (act.rollStart < 0 || act.rollStart > now) {
		act.rollStart = now
	}
}

// lowerFirstDirty brings the cleaner's position down to off, durably: the
// records that will be appended from off on were never cleaned.
func (l *Log) lowerFirstDirty(off int64) error {
	if l.firstDirty.Load() <= off {
		return nil
	}
	l.firstDirty.Store(off)
	return l.writeCleanerCheckpoint(off)
}

// replaceWithPrefix writes the first size bytes of s to <base>.log.tmp,
// fsyncs it and renames it over s's file, and returns a segment over the
// new file with kept's state. Whoever holds s keeps reading the old file.
func (l *Log) replaceWithPrefix(s, kept *segment, size int64) (*segment, error) {
	tmp := s.path + tmpSuffix
	f, err := l.fs.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	err = copyPrefix(f, s.f, size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.fs.Rename(tmp, s.path)
	}
	if err != nil {
		l.fs.Remove(tmp)
		return nil, fmt.Errorf("rewrite %s: %w", s.path, err)
	}
	nf, err := l.fs.OpenFile(s.path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	ns := newSegment(l.dir, s.base, nf)
	ns.gaps = s.gaps
	ns.adopt(kept)
	return ns, nil
}

// copyPrefix appends the first n bytes of src to dst.
func copyPrefix(dst, src vfs.File, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	for off := int64(0); off < n; {
		b := buf[:min(int64(len(buf)), n-off)]
		if err := readFull(src, b, off); err != nil {
			return err
		}
		if _, err := dst.Write(b); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// prepareTruncationReplay undoes, before recovery reads the segments,
// what a pending truncation may have left half done: the segment files it
// removes (all of them for a reset, with the start offset it sets), so
// that what remains is a log recovery accepts.
func (l *Log) prepareTruncationReplay(t *truncation) error {
	l.logger.Warn("completing an interrupted truncation", "state", t.state, "offset", t.offset)
	names, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return err
	}
	var bases []int64
	for _, name := range names {
		if base, suffix, ok := parseSegmentName(name); ok && suffix == logSuffix && (t.state == truncPendingReset || base > t.offset) {
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)
	for i := len(bases) - 1; i >= 0; i-- {
		if err := l.removeSegmentFiles(bases[i]); err != nil {
			return err
		}
	}
	if t.state == truncPendingReset {
		if err := l.writeFileAtomic(checkpointName, []byte("v1 "+strconv.FormatInt(t.offset, 10)+"\n")); err != nil {
			return err
		}
	}
	return l.fs.SyncDir(l.dir)
}

// finishTruncation ends a healthy Open: a pending truncation runs again
// on the recovered log, and the truncation file goes once the stored
// recovery point (storedRP, what Open was given) agrees with the log.
func (l *Log) finishTruncation(t *truncation, storedRP int64) error {
	if t == nil {
		return nil
	}
	switch t.state {
	case truncPendingReset:
		if err := l.resetLocked(t.offset); err != nil {
			return err
		}
	case truncPendingCut:
		if t.offset < l.start.Load() {
			l.logger.Warn("an interrupted truncation lies below the start offset", "offset", t.offset, "start", l.start.Load())
			break
		}
		p, err := l.planCut(t.offset)
		if errors.Is(err, ErrNotBoundary) {
			err = &CorruptionError{File: filepath.Join(l.dir, truncationName), Offset: t.offset,
				Reason: "an interrupted truncation cuts inside a batch: " + err.Error()}
		}
		if err != nil {
			return l.openCorrupt(err)
		}
		if err := l.applyCut(p); err != nil {
			return err
		}
	}
	if storedRP > l.next.Load() {
		return nil
	}
	if err := l.fs.Remove(filepath.Join(l.dir, truncationName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	l.truncCeiling = -1
	return l.fs.SyncDir(l.dir)
}
