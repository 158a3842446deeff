package log

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/exactly/exactly/internal/record"
)

// scanChunk is how much recovery reads at a time.
const scanChunk = 1 << 20

// recover rebuilds the log's state from its directory; see the package
// documentation for the rules.
func (l *Log) recover() error {
	// A cleaning interrupted by a crash is finished or forgotten first, so
	// that what follows sees either the old segments or the new ones.
	if err := l.replaySwaps(); err != nil {
		return err
	}
	if err := l.readCleanerCheckpoint(); err != nil {
		return err
	}
	// Likewise a truncation: what it removes goes before anything is
	// read, and a recovery point that may predate it is not held
	// against the log (see truncate.go).
	trunc, err := l.readTruncation()
	if err != nil {
		return err
	}
	storedRP := l.recoveryPoint.Load()
	if trunc != nil {
		l.truncCeiling = trunc.ceiling
		if trusted := trunc.trustedRecoveryPoint(storedRP); trusted != storedRP {
			l.logger.Info("the recovery point may predate a truncation: holding the log only to what it kept",
				"recovery_point", storedRP, "truncated_to", trunc.offset, "kept", trunc.kept)
			l.recoveryPoint.Store(trusted)
		}
		if trunc.pending() {
			if err := l.prepareTruncationReplay(trunc); err != nil {
				return err
			}
		}
	}
	names, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return err
	}
	type files struct{ log, index, tindex bool }
	found := map[int64]*files{}
	for _, name := range names {
		if strings.HasSuffix(name, tmpSuffix) {
			l.logger.Info("removing stray temporary file", "file", name)
			if err := l.fs.Remove(filepath.Join(l.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			continue
		}
		base, suffix, ok := parseSegmentName(name)
		if !ok {
			continue
		}
		f := found[base]
		if f == nil {
			f = &files{}
			found[base] = f
		}
		switch suffix {
		case logSuffix:
			f.log = true
		case indexSuffix:
			f.index = true
		case timeIndexSuffix:
			f.tindex = true
		}
	}
	var bases []int64
	for base, f := range found {
		if f.log {
			bases = append(bases, base)
			continue
		}
		l.logger.Info("removing index files without a segment", "base", base)
		if err := l.removeSegmentFiles(base); err != nil {
			return err
		}
	}
	slices.Sort(bases)

	ckpt, haveCkpt, err := l.readCheckpoint()
	if err != nil {
		return err
	}

	// Load or scan every segment; the last is always scanned. Segments
	// follow each other without overlap or gap: ordered deletions cannot
	// make either, so one is damage (a lost or foreign file).
	for _, base := range bases {
		s, err := l.openSegment(base)
		if err != nil {
			return err
		}
		l.segs = append(l.segs, s)
	}
	// Empty segments at the end (a roll that crashed, or a torn tail
	// truncated to nothing) hold nothing; the one before was fsynced when
	// rolled.
	// In a compacted log the previous segment's end is known only once
	// it was read, and an empty last segment above that end holds the log
	// end offset (the cleaner removed the records before it): kept.
	dropEmptyTail := func(read bool) error {
		for len(l.segs) > 1 {
			last := l.active()
			if size, err := last.f.Size(); err != nil || size > 0 {
				return err
			}
			if l.gaps && (!read || last.base > l.segs[len(l.segs)-2].next.Load()) {
				return nil
			}
			l.logger.Info("deleting empty trailing segment", "base", last.base)
			if err := l.dropSegments([]*segment{last}); err != nil {
				return err
			}
			l.segs = l.segs[:len(l.segs)-1]
		}
		return nil
	}
	if err := dropEmptyTail(false); err != nil {
		return err
	}
	for i, s := range l.segs {
		if i > 0 {
			if prev := l.segs[i-1].next.Load(); s.base < prev || (s.base != prev && !l.gaps) {
				return l.openCorrupt(&CorruptionError{File: s.path, Offset: prev,
					Reason: fmt.Sprintf("segment starts at offset %d, its predecessor ends at %d", s.base, prev)})
			}
		}
		f := found[s.base]
		last := i == len(l.segs)-1
		loaded := false
		if !last && f.index && f.tindex {
			if loaded, err = l.loadIndexes(s); err != nil {
				return err
			}
		}
		if !loaded {
			if err := l.scan(s, last); err != nil {
				return l.openCorrupt(err)
			}
		}
	}
	if err := dropEmptyTail(true); err != nil {
		return err
	}
	if rp := l.recoveryPoint.Load(); len(l.segs) > 0 && l.active().next.Load() < rp {
		last := l.active()
		return l.openCorrupt(&CorruptionError{File: last.path, Pos: last.size.Load(), Offset: last.next.Load(),
			Reason: fmt.Sprintf("the log ends at offset %d, below its recovery point %d: fsynced data is missing", last.next.Load(), rp)})
	}

	start := int64(0)
	if len(l.segs) > 0 {
		start = l.segs[0].base
	}
	if haveCkpt && ckpt > start {
		start = ckpt
	}
	if len(l.segs) > 0 && start > l.active().next.Load() {
		l.logger.Warn("log ends below the checkpointed start offset, restarting empty",
			"start", start, "end", l.active().next.Load())
		if err := l.dropSegments(l.segs); err != nil {
			return err
		}
		l.segs = nil
	}
	if len(l.segs) == 0 {
		s, err := l.createSegment(start)
		if err != nil {
			return err
		}
		l.segs = []*segment{s}
	}

	act := l.active()
	if err := act.f.Sync(); err != nil {
		return err
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return err
	}
	now := l.now().UnixMilli()
	if act.size.Load() > 0 && (act.rollStart < 0 || act.rollStart > now) {
		act.rollStart = now
	}
	l.start.Store(start)
	l.next.Store(act.next.Load())
	l.durable.Store(act.next.Load())
	l.publish()
	return l.finishTruncation(trunc, storedRP)
}

func (l *Log) openSegment(base int64) (*segment, error) {
	p := filepath.Join(l.dir, segmentName(base, logSuffix))
	f, err := l.fs.OpenFile(p, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	s := newSegment(l.dir, base, f)
	s.gaps = l.gaps
	return s, nil
}

// dropSegments closes and removes segments during recovery.
func (l *Log) dropSegments(segs []*segment) error {
	for _, s := range segs {
		s.unref()
		if err := l.removeSegmentFiles(s.base); err != nil {
			return err
		}
	}
	return nil
}

// removeSegmentFiles removes a segment's .log and index files; the .log goes
// first so that a crash in between leaves only orphan index files, which
// Open removes.
func (l *Log) removeSegmentFiles(base int64) error {
	for _, suffix := range []string{logSuffix, indexSuffix, timeIndexSuffix} {
		err := l.fs.Remove(filepath.Join(l.dir, segmentName(base, suffix)))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// loadIndexes loads a closed segment's index files; false means they are
// missing or do not describe the segment and it must be scanned. An index
// of a newer format is an error: this binary must not run on data a newer
// one wrote.
func (l *Log) loadIndexes(s *segment) (bool, error) {
	ok, err := l.tryIndexes(s)
	if errors.Is(err, errNewerFormat) {
		return false, fmt.Errorf("%s: %w", s.path, err)
	}
	if err != nil {
		l.logger.Info("rebuilding index", "base", s.base, "err", err)
	}
	return ok, nil
}

func (l *Log) tryIndexes(s *segment) (bool, error) {
	size, err := s.f.Size()
	if err != nil {
		return false, err
	}
	ib, err := l.readFile(segmentName(s.base, indexSuffix))
	if err != nil {
		return false, err
	}
	idx, next, err := decodeOffsetIndex(ib, s.base, size)
	if err != nil {
		return false, err
	}
	if err := verifyTail(s, idx, next, size); err != nil {
		return false, err
	}
	tb, err := l.readFile(segmentName(s.base, timeIndexSuffix))
	if err != nil {
		return false, err
	}
	tidx, maxTs, err := decodeTimeIndex(tb, s.base, next, size)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	s.index, s.tindex = idx, tidx
	s.mu.Unlock()
	s.size.Store(size)
	s.next.Store(next)
	s.maxTs.Store(maxTs)
	return true, nil
}

// verifyTail cross-checks a loaded offset index against the segment: the
// batch headers from the last index entry on must chain to exactly the end
// of the file and to the index's next offset. It reads about one index
// interval, so a stale or forged index is caught without a full scan.
func verifyTail(s *segment, idx []offsetEntry, next, size int64) error {
	pos, expect := int64(0), s.base
	if len(idx) > 0 {
		pos, expect = int64(idx[len(idx)-1].pos), s.base+int64(idx[len(idx)-1].rel)
	}
	r, bp := newScanReader(s, size)
	defer putScanReader(bp)
	for pos < size {
		h, err := r.header(pos)
		if err != nil {
			return err
		}
		if !s.follows(h.BaseOffset, expect) || h.LastOffsetDelta < 0 {
			return fmt.Errorf("%w: batch at %d has offset %d, expected %d", errBadIndex, pos, h.BaseOffset, expect)
		}
		pos += int64(h.Size())
		expect = h.LastOffset() + 1
	}
	if pos != size || expect != next {
		return fmt.Errorf("%w: batches end at %d (offset %d), index says %d (offset %d)", errBadIndex, pos, expect, size, next)
	}
	return nil
}

// readFile reads a small file of the log directory.
func (l *Log) readFile(name string) ([]byte, error) {
	f, err := l.fs.OpenFile(filepath.Join(l.dir, name), os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if size > math.MaxInt32 {
		return nil, fmt.Errorf("%s: %d bytes", name, size)
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); n < len(b) {
		return nil, err
	}
	return b, nil
}

// openCorrupt finishes an Open that found damage: the log comes up
// offline, holding the segments opened so far (for metrics and Close), and
// nothing is truncated or deleted. err is a *CorruptionError; any other
// error fails the Open.
func (l *Log) openCorrupt(err error) error {
	ce, ok := asCorruption(err)
	if !ok {
		return err
	}
	if len(l.segs) > 0 {
		l.start.Store(l.segs[0].base)
		l.next.Store(l.active().next.Load())
	}
	l.publish()
	l.corrupt(ce)
	return nil
}

// scan rebuilds a segment's state by reading every batch. If a batch is
// short, corrupt or out of sequence, the segment is cut there when that is
// a torn tail: the segment is the last one and the batch starts at or
// above the recovery point. Any other damage is a *CorruptionError and the
// file is left alone.
func (l *Log) scan(s *segment, last bool) error {
	d, err := walk(s, l.cfg.IndexIntervalBytes)
	if err != nil || d == nil {
		return err
	}
	if !last || d.Offset < l.recoveryPoint.Load() {
		return d
	}
	size, err := s.f.Size()
	if err != nil {
		return err
	}
	l.logger.Warn("truncating torn tail", "segment", s.path, "from", size, "to", d.Pos, "next_offset", d.Offset,
		"recovery_point", l.recoveryPoint.Load(), "reason", d.Reason)
	if err := s.f.Truncate(d.Pos); err != nil {
		return err
	}
	return s.f.Sync()
}

// walk rebuilds a segment's state by reading every batch from the start,
// and returns where the batches stop being whole, CRC-valid and contiguous
// (nil if the whole file is good). Only I/O failures are errors.
func walk(s *segment, indexInterval int) (*CorruptionError, error) {
	return walkBatches(s, indexInterval, nil)
}

// walkBatches is walk calling visit with every good batch, in order.
func walkBatches(s *segment, indexInterval int, visit func(h *record.Header, batch []byte)) (*CorruptionError, error) {
	size, err := s.f.Size()
	if err != nil {
		return nil, err
	}
	return walkPrefix(s, size, indexInterval, visit)
}

// walkPrefix is walkBatches over the first size bytes of the file only.
func walkPrefix(s *segment, size int64, indexInterval int, visit func(h *record.Header, batch []byte)) (*CorruptionError, error) {
	s.reset()
	s.scanned = true
	r := reader{f: s.f, size: size, min: scanChunk}
	pos, expect := int64(0), s.base
	damage := func(reason string) (*CorruptionError, error) {
		return &CorruptionError{File: s.path, Pos: pos, Offset: expect, Reason: reason}, nil
	}
	for pos < size {
		h, err := r.header(pos)
		if err != nil {
			if !errors.Is(err, errShortRead) && !isBatchError(err) {
				return nil, err
			}
			return damage(err.Error())
		}
		n := h.Size()
		b, err := r.window(pos, n)
		if err != nil {
			if !errors.Is(err, errShortRead) {
				return nil, err
			}
			return damage(fmt.Sprintf("torn batch: %d bytes declared, %d left", n, size-pos))
		}
		if _, err := record.Parse(b); err != nil {
			return damage(err.Error())
		}
		if !s.follows(h.BaseOffset, expect) || h.LastOffsetDelta < 0 || h.LastOffset()-s.base > math.MaxInt32 {
			return damage(fmt.Sprintf("batch offsets %d..%d, expected base %d", h.BaseOffset, h.LastOffset(), expect))
		}
		if pos == 0 && h.MaxTimestamp >= 0 {
			s.rollStart = h.MaxTimestamp
		}
		if visit != nil {
			visit(&h, b)
		}
		s.track(&h, pos, n, indexInterval)
		pos += int64(n)
		expect = h.LastOffset() + 1
	}
	return nil, nil
}

func isBatchError(err error) bool {
	return errors.Is(err, record.ErrShort) || errors.Is(err, record.ErrCorrupt) ||
		errors.Is(err, record.ErrMagic) || errors.Is(err, record.ErrInvalid)
}
