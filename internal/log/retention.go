package log

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"
)

// checkpointName is the file that persists a start offset raised by
// DeleteRecordsBefore.
const checkpointName = "start-offset.checkpoint"

// readCheckpoint returns the persisted start offset, if any. A malformed
// checkpoint is logged and ignored: the start offset then falls back to the
// first segment's base, which can only make deleted records reappear.
func (l *Log) readCheckpoint() (int64, bool, error) {
	b, err := l.readFile(checkpointName)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	off, err := parseStartCheckpoint(b)
	if errors.Is(err, errNewerFormat) {
		return 0, false, fmt.Errorf("%s: %w", checkpointName, err)
	}
	if err != nil {
		l.logger.Warn("ignoring malformed start offset checkpoint", "contents", string(b))
		return 0, false, nil
	}
	return off, true, nil
}

// errNewerFormat marks a file written by a newer binary in a format this one
// does not know: refused rather than guessed at.
var errNewerFormat = errors.New("written in a format newer than this binary reads")

// parseStartCheckpoint parses "v1 <offset>\n".
func parseStartCheckpoint(b []byte) (int64, error) {
	var v int
	if n, _ := fmt.Sscanf(string(b), "v%d ", &v); n == 1 && v > 1 {
		return 0, fmt.Errorf("version %d %w (up to 1)", v, errNewerFormat)
	}
	s, ok := strings.CutPrefix(string(b), "v1 ")
	if ok {
		s, ok = strings.CutSuffix(s, "\n")
	}
	off, perr := strconv.ParseInt(s, 10, 64)
	if !ok || perr != nil || off < 0 {
		return 0, fmt.Errorf("malformed start offset checkpoint %q", b)
	}
	return off, nil
}

// DeleteRecordsBefore raises the log start offset to offset (Kafka's
// DeleteRecords), persisting it durably before returning, and deletes the
// segments that lie entirely below it. The active segment is never deleted;
// records below the start offset in a remaining segment become unreadable.
// offset must not exceed NextOffset; lowering the start offset is a no-op.
func (l *Log) DeleteRecordsBefore(offset int64) error {
	l.mu.Lock()
	if err := l.lockedUsable(); err != nil {
		l.mu.Unlock()
		return err
	}
	if offset < 0 || offset > l.next.Load() {
		l.mu.Unlock()
		return fmt.Errorf("%w: delete records before %d, log ends at %d", ErrOffsetOutOfRange, offset, l.next.Load())
	}
	if offset <= l.start.Load() {
		l.mu.Unlock()
		return nil
	}
	err := l.writeFileAtomic(checkpointName, []byte("v1 "+strconv.FormatInt(offset, 10)+"\n"))
	if err == nil {
		if derr := l.fs.SyncDir(l.dir); derr != nil {
			err = fmt.Errorf("sync dir: %w", derr)
		}
	}
	if err != nil {
		err = l.fail(err)
		l.mu.Unlock()
		return err
	}
	l.start.Store(offset)
	victims := l.detachLocked(func(i int, _ *segment) bool { return l.segs[i+1].base <= offset })
	l.mu.Unlock()
	return l.deleteSegments(victims)
}

// ApplyRetention deletes the oldest closed segments that retention no longer
// keeps: those entirely below the start offset, those whose largest
// timestamp is more than RetentionMs before now (the file's modification
// time stands in for segments without timestamps), and, while the log
// without them is still at least RetentionBytes big, the oldest ones. Only
// whole segments go, oldest first, stopping at the first segment to keep;
// the active segment always stays. The start offset rises to the first
// remaining segment.
func (l *Log) ApplyRetention(now time.Time) (int, error) {
	l.mu.Lock()
	if err := l.lockedUsable(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	expired := l.expiredLocked(now)
	victims := l.detachLocked(func(i int, s *segment) bool { return expired(i, s) })
	l.mu.Unlock()
	if len(victims) > 0 {
		l.logger.Info("retention deleted segments", "count", len(victims), "start_offset", l.start.Load())
	}
	return len(victims), l.deleteSegments(victims)
}

// RetentionDue reports whether ApplyRetention(now) would delete a segment,
// so callers can prepare (snapshot producer state) only when it will.
func (l *Log) RetentionDue(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lockedUsable() != nil || len(l.segs) < 2 {
		return false
	}
	return l.expiredLocked(now)(0, l.segs[0])
}

// expiredLocked returns the retention predicate for the oldest segments,
// applied in order: below the start offset, older than RetentionMs, or not
// needed to keep RetentionBytes. It tracks the running total, so call it
// oldest-first and stop at the first false.
func (l *Log) expiredLocked(now time.Time) func(i int, s *segment) bool {
	cfg := l.cfg
	nowMs := now.UnixMilli()
	start := l.start.Load()
	var total int64
	for _, s := range l.segs {
		total += s.size.Load()
	}
	return func(i int, s *segment) bool {
		size := s.size.Load()
		del := l.segs[i+1].base <= start ||
			(cfg.RetentionMs >= 0 && nowMs-l.largestTimestamp(s) > cfg.RetentionMs) ||
			(cfg.RetentionBytes >= 0 && total-size >= cfg.RetentionBytes)
		if del {
			total -= size
		}
		return del
	}
}

func (l *Log) largestTimestamp(s *segment) int64 {
	if ts := s.maxTs.Load(); ts >= 0 {
		return ts
	}
	fi, err := l.fs.Stat(s.path)
	if err != nil {
		return l.now().UnixMilli() // unknown: keep it
	}
	return fi.ModTime().UnixMilli()
}

// detachLocked removes from the segment list the longest prefix of closed
// segments for which del returns true, raises the start offset to the new
// first segment and returns the removed segments. Called with mu held.
func (l *Log) detachLocked(del func(i int, s *segment) bool) []*segment {
	k := 0
	for k < len(l.segs)-1 && del(k, l.segs[k]) {
		k++
	}
	if k == 0 {
		return nil
	}
	victims := l.segs[:k]
	l.segs = slices.Clone(l.segs[k:])
	if b := l.segs[0].base; b > l.start.Load() {
		l.start.Store(b)
	}
	l.publish()
	return victims
}

// deleteSegments removes detached segments' files, oldest first, and drops
// the log's references; readers still holding one keep reading the unlinked
// file until they finish.
func (l *Log) deleteSegments(victims []*segment) error {
	var first error
	for _, s := range victims {
		if err := l.removeSegmentFiles(s.base); err != nil && first == nil {
			first = err
		}
		s.unref()
	}
	if len(victims) > 0 && first == nil {
		first = l.fs.SyncDir(l.dir)
	}
	if first != nil {
		return fmt.Errorf("log: delete segments in %s: %w", l.dir, first)
	}
	return nil
}

func (l *Log) lockedUsable() error {
	if l.closed {
		return ErrClosed
	}
	return l.Err()
}
