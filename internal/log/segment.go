package log

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// File name suffixes of a segment's files.
const (
	logSuffix       = ".log"
	indexSuffix     = ".index"
	timeIndexSuffix = ".timeindex"
	tmpSuffix       = ".tmp"
	baseDigits      = 20
)

func segmentName(base int64, suffix string) string {
	return fmt.Sprintf("%0*d%s", baseDigits, base, suffix)
}

// parseSegmentName returns the base offset and suffix of a segment file name.
func parseSegmentName(name string) (int64, string, bool) {
	if len(name) <= baseDigits {
		return 0, "", false
	}
	digits, suffix := name[:baseDigits], name[baseDigits:]
	switch suffix {
	case logSuffix, indexSuffix, timeIndexSuffix:
	default:
		return 0, "", false
	}
	for _, c := range []byte(digits) {
		if c < '0' || c > '9' {
			return 0, "", false
		}
	}
	base, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, "", false
	}
	return base, suffix, true
}

// segment is one <base>.log file with its in-memory sparse indexes.
//
// Readers and the appender share it: size, next and maxTs are atomics
// published after the bytes they describe are written; index and tindex only
// ever grow (entries below len are immutable), so readers copy the slice
// header under mu and search it unlocked. Fields below "appender state" are
// touched only under Log.mu (or during Open).
type segment struct {
	base int64
	path string
	f    vfs.File

	// refs counts the log's reference (dropped when the segment is deleted or
	// the log closed) and those of in-flight readers and syncers. The file is
	// closed when it reaches zero, so a reader never sees a closed file.
	refs atomic.Int32

	size  atomic.Int64 // bytes of whole batches
	next  atomic.Int64 // offset after the last batch; base when empty
	maxTs atomic.Int64 // largest batch MaxTimestamp; -1 when none
	// verified is how far from the start the batches are known CRC-valid
	// in this run: appended (Append takes validated batches), scanned by
	// recovery, or checked by ReadSpans. Always a batch boundary.
	verified atomic.Int64
	// uncachedTo is how far from the start the segment's clean pages were
	// dropped from the page cache (dropCache); guarded by Log.syncMu.
	uncachedTo int64

	mu     sync.RWMutex
	index  []offsetEntry
	tindex []timeEntry

	// Appender state.
	lastIndexPos int64 // position of the last offset index entry (0 implicit)
	lastTimePos  int64 // position of the last time index entry
	rollStart    int64 // ms; when the first batch was appended, -1 when empty
	scanned      bool  // recovery scanned (rather than loaded) the segment

	// gaps: the segment may skip offsets between batches (the log was
	// compacted, see clean.go); otherwise each batch starts where the
	// previous one ended, and a jump is damage.
	gaps bool
}

// follows reports whether a batch based at base may come after a batch
// ending at expect-1: exactly there, or (compacted) anywhere later.
func (s *segment) follows(base, expect int64) bool {
	if s.gaps {
		return base >= expect
	}
	return base == expect
}

func newSegment(dir string, base int64, f vfs.File) *segment {
	s := &segment{base: base, path: filepath.Join(dir, segmentName(base, logSuffix)), f: f, rollStart: -1}
	s.refs.Store(1)
	s.next.Store(base)
	s.maxTs.Store(-1)
	return s
}

// tryRef takes a reference unless the segment is already released.
func (s *segment) tryRef() bool {
	for {
		r := s.refs.Load()
		if r <= 0 {
			return false
		}
		if s.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// unref drops a reference and closes the file with the last one.
func (s *segment) unref() {
	if s.refs.Add(-1) == 0 {
		s.f.Close()
	}
}

// reset forgets the segment's contents before a recovery scan.
func (s *segment) reset() {
	s.mu.Lock()
	s.index, s.tindex = nil, nil
	s.mu.Unlock()
	s.size.Store(0)
	s.verified.Store(0)
	s.next.Store(s.base)
	s.maxTs.Store(-1)
	s.lastIndexPos, s.lastTimePos, s.rollStart = 0, 0, -1
}

// adopt takes over the state of t, rebuilt over a prefix of the same
// batches (a cut). The size drops first, so that no reader goes past the
// cut through the indexes it replaces. Appender state: under Log.mu.
func (s *segment) adopt(t *segment) {
	s.size.Store(t.size.Load())
	s.next.Store(t.next.Load())
	s.maxTs.Store(t.maxTs.Load())
	s.verified.Store(t.verified.Load())
	idx, tidx := t.indexes()
	s.mu.Lock()
	s.index, s.tindex = idx, tidx
	s.mu.Unlock()
	s.lastIndexPos, s.lastTimePos, s.rollStart, s.scanned = t.lastIndexPos, t.lastTimePos, t.rollStart, t.scanned
}

// track accounts for a batch of n bytes with header h just written at pos.
func (s *segment) track(h *record.Header, pos int64, n int, interval int) {
	rel := uint32(h.BaseOffset - s.base)
	if pos > 0 && pos-s.lastIndexPos >= int64(interval) {
		s.mu.Lock()
		s.index = append(s.index, offsetEntry{rel: rel, pos: uint32(pos)})
		s.mu.Unlock()
		s.lastIndexPos = pos
	}
	if h.MaxTimestamp > s.maxTs.Load() {
		s.mu.Lock()
		if len(s.tindex) == 0 || pos-s.lastTimePos >= int64(interval) {
			s.tindex = append(s.tindex, timeEntry{ts: h.MaxTimestamp, rel: rel})
			s.lastTimePos = pos
		}
		s.mu.Unlock()
		s.maxTs.Store(h.MaxTimestamp)
	}
	s.size.Store(pos + int64(n))
	s.verified.CompareAndSwap(pos, pos+int64(n))
	s.next.Store(h.LastOffset() + 1)
}

func (s *segment) indexes() ([]offsetEntry, []timeEntry) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.index, s.tindex
}

// floor returns the position and base offset of a batch at or before the
// one that holds offset, from the sparse offset index.
func (s *segment) floor(offset int64) (pos, base int64) {
	idx, _ := s.indexes()
	rel := offset - s.base
	i := sort.Search(len(idx), func(i int) bool { return int64(idx[i].rel) > rel })
	if i == 0 {
		return 0, s.base
	}
	return int64(idx[i-1].pos), s.base + int64(idx[i-1].rel)
}

// floorPos returns the position of floor.
func (s *segment) floorPos(offset int64) int64 {
	pos, _ := s.floor(offset)
	return pos
}

// timeFloorPos returns a position from which scanning finds the first batch
// whose MaxTimestamp >= ts: all batches before it have smaller timestamps.
func (s *segment) timeFloorPos(ts int64) int64 {
	_, tidx := s.indexes()
	i := sort.Search(len(tidx), func(i int) bool { return tidx[i].ts >= ts })
	if i == 0 {
		return 0
	}
	return s.floorPos(s.base + int64(tidx[i-1].rel))
}

var errShortRead = errors.New("short segment")

// reader reads a segment through a reusable window, for scans that walk
// batch headers.
type reader struct {
	f    vfs.File
	size int64 // readable bytes
	buf  []byte
	off  int64 // file position of buf[0]
	min  int   // minimum read size
}

// window returns n bytes at pos, or errShortRead if the readable size ends
// first. The result is valid until the next call.
func (r *reader) window(pos int64, n int) ([]byte, error) {
	if n < 0 || pos < 0 || pos+int64(n) > r.size {
		return nil, errShortRead
	}
	if pos >= r.off && pos+int64(n) <= r.off+int64(len(r.buf)) {
		return r.buf[pos-r.off : pos-r.off+int64(n)], nil
	}
	want := int64(max(n, r.min))
	want = min(want, r.size-pos)
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	r.buf = r.buf[:want]
	got, err := r.f.ReadAt(r.buf, pos)
	if int64(got) < want {
		r.buf = r.buf[:0]
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%s: %w at %d", r.f.Name(), io.ErrUnexpectedEOF, pos)
		}
		return nil, err
	}
	r.off = pos
	return r.buf[:n], nil
}

// header returns the header of the batch at pos.
func (r *reader) header(pos int64) (record.Header, error) {
	b, err := r.window(pos, record.HeaderSize)
	if err != nil {
		return record.Header{}, err
	}
	return record.ParseHeader(b)
}

var scanBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}
