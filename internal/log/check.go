package log

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// CheckReport is what Check found in one log directory.
type CheckReport struct {
	// Segments and Bytes count the segment files and their bytes.
	Segments int
	Bytes    int64
	// Start and End are the first offset (the first segment's base) and
	// the offset after the last good batch.
	Start, End int64
	// Damage is corruption: data below the recovery point that is not
	// whole, valid and contiguous. The first one is where
	// TruncateCorrupt cuts.
	Damage []*CorruptionError
	// Notes are problems the next start repairs by itself (a torn tail
	// above the recovery point, an index file to rebuild).
	Notes []string
}

// Check verifies a log directory without changing it, as the next Open with
// recoveryPoint would judge it: every segment's batches (CRC-32C, framing,
// offsets contiguous within and across segments), the index files against
// the segments, the start offset checkpoint. visit, if not nil, gets every
// good batch in offset order (to decode the records of internal logs); an
// error it returns is reported as damage of that batch.
func Check(fsys vfs.FS, dir string, recoveryPoint int64, visit func(h *record.Header, batch []byte) error) (*CheckReport, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var bases []int64
	for _, name := range names {
		if base, suffix, ok := parseSegmentName(name); ok && suffix == logSuffix {
			bases = append(bases, base)
		}
	}
	slices.Sort(bases)
	rep := &CheckReport{}
	// A compacted log (cleaner checkpoint present) may skip offsets.
	_, err = fsys.Stat(filepath.Join(dir, cleanerCheckpointName))
	gaps := err == nil
	for _, name := range names {
		if _, _, ok := parseGroupFileName(name, swapSuffix); ok {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: an interrupted segment swap; the next start completes it", name))
		}
	}
	if _, err := readStartCheckpoint(fsys, dir); err != nil {
		rep.Damage = append(rep.Damage, &CorruptionError{File: filepath.Join(dir, checkpointName), Offset: -1, Reason: err.Error()})
	}
	// A truncation is judged as Open judges it (see truncate.go): a
	// recovery point that may predate it counts up to what it kept, and
	// an interrupted one removes segments first.
	trunc, err := readTruncationFile(fsys, dir)
	switch {
	case errors.Is(err, errNewerFormat):
		rep.Damage = append(rep.Damage, &CorruptionError{File: filepath.Join(dir, truncationName), Offset: -1, Reason: err.Error()})
	case err != nil:
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %v; the next start ignores it", filepath.Join(dir, truncationName), err))
	}
	recoveryPoint = trunc.trustedRecoveryPoint(recoveryPoint)
	if trunc != nil && trunc.pending() {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%s: an interrupted %s %d; the next start completes it",
			filepath.Join(dir, truncationName), trunc.state, trunc.offset))
		bases = slices.DeleteFunc(bases, func(b int64) bool { return trunc.state == truncPendingReset || b > trunc.offset })
		if len(bases) == 0 {
			rep.Start, rep.End = trunc.offset, trunc.offset
		}
	}
	if len(bases) > 0 {
		rep.Start, rep.End = bases[0], bases[0]
	}
	for i, base := range bases {
		name := filepath.Join(dir, segmentName(base, logSuffix))
		last := i == len(bases)-1
		if st, err := fsys.Stat(name); err == nil && st.Size() == 0 && i > 0 {
			if gaps && base > rep.End {
				rep.End = base // kept at the next start: it holds the log end offset
				continue
			}
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s is empty; the next start deletes it", name))
			continue
		}
		if i > 0 && (base < rep.End || (base != rep.End && !gaps)) {
			rep.Damage = append(rep.Damage, &CorruptionError{File: name, Offset: rep.End,
				Reason: fmt.Sprintf("segment starts at offset %d, its predecessor ends at %d", base, rep.End)})
			return rep, nil
		}
		torn, bad, err := checkSegment(fsys, dir, base, gaps, rep, visit)
		if err != nil {
			return nil, err
		}
		if torn != nil && last && torn.Offset >= recoveryPoint && bad == nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("torn tail in %s at byte %d (offset %d, recovery point %d): %s; the next start cuts it",
				torn.File, torn.Pos, torn.Offset, recoveryPoint, torn.Reason))
			continue
		}
		if bad == nil {
			bad = torn
		}
		if bad != nil {
			rep.Damage = append(rep.Damage, bad)
			return rep, nil // offsets after damage mean nothing
		}
	}
	if rep.End < recoveryPoint {
		file := dir
		if len(bases) > 0 {
			file = filepath.Join(dir, segmentName(bases[len(bases)-1], logSuffix))
		}
		rep.Damage = append(rep.Damage, &CorruptionError{File: file, Offset: rep.End,
			Reason: fmt.Sprintf("the log ends at offset %d, below its recovery point %d: fsynced data is missing", rep.End, recoveryPoint)})
	}
	return rep, nil
}

// checkSegment walks one segment read-only and checks its index files. It
// returns where its batches stop being good (torn: damage or a torn tail,
// as the recovery point decides) and the first good batch whose records
// visit refused (bad: always damage), and advances rep.End past the good
// batches.
func checkSegment(fsys vfs.FS, dir string, base int64, gaps bool, rep *CheckReport, visit func(h *record.Header, batch []byte) error) (torn, bad *CorruptionError, err error) {
	f, err := fsys.OpenFile(filepath.Join(dir, segmentName(base, logSuffix)), os.O_RDONLY, 0)
	if err != nil {
		return nil, nil, err
	}
	s := newSegment(dir, base, f)
	s.gaps = gaps
	defer s.unref()
	size, err := f.Size()
	if err != nil {
		return nil, nil, err
	}
	rep.Segments++
	rep.Bytes += size
	pos := int64(0)
	torn, err = walkBatches(s, DefaultConfig().IndexIntervalBytes, func(h *record.Header, b []byte) {
		if visit != nil && bad == nil {
			if verr := visit(h, b); verr != nil {
				bad = &CorruptionError{File: s.path, Pos: pos, Offset: h.BaseOffset, Reason: "records: " + verr.Error()}
			}
		}
		pos += int64(len(b))
	})
	if err != nil {
		return nil, nil, err
	}
	rep.End = s.next.Load()
	if torn == nil {
		rep.Notes = append(rep.Notes, checkIndexes(fsys, s, size)...)
	}
	return torn, bad, nil
}

// checkIndexes reports index files that the next start would not trust
// (and so rebuild): they are caches, never damage.
func checkIndexes(fsys vfs.FS, s *segment, size int64) []string {
	var notes []string
	note := func(name string, err error) {
		what := "the next start rebuilds it"
		if errors.Is(err, errNewerFormat) {
			what = "this binary's broker refuses to open the partition"
		}
		notes = append(notes, fmt.Sprintf("%s: %v; %s", s.path[:len(s.path)-len(logSuffix)]+name, err, what))
	}
	ib, err := vfs.ReadFile(fsys, filepath.Join(filepath.Dir(s.path), segmentName(s.base, indexSuffix)), 1<<30)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the active segment of a crashed broker: indexes come at roll or close
	}
	if err == nil {
		var idx []offsetEntry
		var next int64
		if idx, next, err = decodeOffsetIndex(ib, s.base, size); err == nil {
			if next != s.next.Load() {
				err = fmt.Errorf("%w: next offset %d, the segment ends at %d", errBadIndex, next, s.next.Load())
			} else if err = verifyTail(s, idx, next, size); err == nil && !entriesAtBatches(idx, s) {
				err = fmt.Errorf("%w: an entry does not point at a batch start", errBadIndex)
			}
		}
	}
	if err != nil {
		note(indexSuffix, err)
	}
	tb, err := vfs.ReadFile(fsys, filepath.Join(filepath.Dir(s.path), segmentName(s.base, timeIndexSuffix)), 1<<30)
	if err == nil {
		_, _, err = decodeTimeIndex(tb, s.base, s.next.Load(), size)
	}
	if err != nil {
		note(timeIndexSuffix, err)
	}
	return notes
}

// entriesAtBatches reports whether every stored index entry names a batch
// start: read each entry's header and compare its offset.
func entriesAtBatches(stored []offsetEntry, s *segment) bool {
	r, bp := newScanReader(s, s.size.Load())
	defer putScanReader(bp)
	for _, e := range stored {
		h, err := r.header(int64(e.pos))
		if err != nil || h.BaseOffset != s.base+int64(e.rel) {
			return false
		}
	}
	return true
}

// readTruncationFile parses the truncation file of dir, if present (nil
// if not).
func readTruncationFile(fsys vfs.FS, dir string) (*truncation, error) {
	b, err := vfs.ReadFile(fsys, filepath.Join(dir, truncationName), 4<<10)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t, err := parseTruncation(b)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// readStartCheckpoint parses start-offset.checkpoint, if present (-1 if
// not).
func readStartCheckpoint(fsys vfs.FS, dir string) (int64, error) {
	b, err := vfs.ReadFile(fsys, filepath.Join(dir, checkpointName), 4<<10)
	if errors.Is(err, fs.ErrNotExist) {
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	return parseStartCheckpoint(b)
}

// TruncateCorrupt cuts a corrupt log at its first damage, as Check with
// recoveryPoint finds it: the damaged segment is truncated there (and its
// index files removed, to be rebuilt), every later segment is removed. It
// returns the new end offset, which becomes the log's recovery point.
// Records from the damage on are gone: an operator's decision, after a
// copy of the directory.
func TruncateCorrupt(fsys vfs.FS, dir string, recoveryPoint int64) (int64, error) {
	rep, err := Check(fsys, dir, recoveryPoint, nil)
	if err != nil {
		return 0, err
	}
	if len(rep.Damage) == 0 {
		return 0, fmt.Errorf("%s: no damage below recovery point %d to truncate", dir, recoveryPoint)
	}
	d := rep.Damage[0]
	base, suffix, ok := parseSegmentName(filepath.Base(d.File))
	if !ok || suffix != logSuffix {
		// The log is whole but ends below its recovery point: nothing to
		// cut, the recovery point comes down to the end.
		return rep.End, nil
	}
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	l := &Log{fs: fsys, dir: dir}
	for _, name := range names {
		if b, sfx, ok := parseSegmentName(name); ok && sfx == logSuffix && b > base {
			if err := l.removeSegmentFiles(b); err != nil {
				return 0, err
			}
		}
	}
	for _, sfx := range []string{indexSuffix, timeIndexSuffix} {
		if err := fsys.Remove(filepath.Join(dir, segmentName(base, sfx))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
	}
	f, err := fsys.OpenFile(d.File, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	err = f.Truncate(d.Pos)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// The new end becomes the recovery point: a truncation's record
		// of older ones has nothing left to excuse.
		err = fsys.Remove(filepath.Join(dir, truncationName))
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	if err == nil {
		err = fsys.SyncDir(dir)
	}
	return d.Offset, err
}
