package log

import (
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// Span is a run of whole, CRC-checked batches in one segment file, pinned:
// the file stays open (even if retention or the cleaner drops the segment)
// until Release. It lets a fetch send stored bytes from the file to the
// socket without reading them into the process.
type Span struct {
	seg *segment
	// Pos and Len locate the batches in the file.
	Pos, Len int64
}

// File is the segment file the span lies in.
func (s Span) File() vfs.File { return s.seg.f }

// Spans are consecutive runs of batches, in offset order, as ReadSpans
// returns them.
type Spans struct {
	List []Span
	// Next is the offset after the last batch; -1 when List is empty.
	Next int64
}

// Len is the number of bytes the spans cover.
func (ss Spans) Len() int64 {
	n := int64(0)
	for _, s := range ss.List {
		n += s.Len
	}
	return n
}

// Release unpins every span's file. Call it exactly once, when the bytes
// have been sent or will not be.
func (ss Spans) Release() {
	for _, s := range ss.List {
		s.seg.unref()
	}
}

// Bytes reads the spans into one new slice (a TLS connection, or a
// caller that needs the bytes themselves). It does not release them.
func (ss Spans) Bytes() ([]byte, error) {
	out := make([]byte, ss.Len())
	at := 0
	for _, s := range ss.List {
		if err := readFull(s.seg.f, out[at:at+int(s.Len)], s.Pos); err != nil {
			return nil, fmt.Errorf("log: %s at %d: %w", s.seg.path, s.Pos, err)
		}
		at += int(s.Len)
	}
	return out, nil
}

// ReadSpans is Read without the copy: the same batches under the same
// limits, returned as pinned file ranges. Every batch is CRC-checked before
// it is served for the first time since the log was opened (appended in
// this run, scanned by recovery, or checked by an earlier read): a
// corrupted batch is reported as Read reports it, never sent. The caller
// must Release the result, also on error paths after a successful call.
func (l *Log) ReadSpans(offset int64, maxBytes int, maxOffset int64) (Spans, error) {
	for {
		if err := l.usable(); err != nil {
			return Spans{}, err
		}
		next := l.next.Load()
		segs := *l.view.Load()
		start := l.start.Load()
		if offset < start || offset > next {
			return Spans{}, fmt.Errorf("%w: offset %d, log has [%d, %d)", ErrOffsetOutOfRange, offset, start, next)
		}
		if offset == next {
			return Spans{Next: -1}, nil
		}
		i := sort.Search(len(segs), func(i int) bool { return segs[i].base > offset }) - 1
		if i < 0 {
			return Spans{}, fmt.Errorf("%w: offset %d below the first segment", ErrOffsetOutOfRange, offset)
		}
		ss, retry, err := collectSpans(segs[i:], offset, maxBytes, maxOffset)
		if err == nil {
			err = verifySpans(ss)
		}
		if err != nil {
			ss.Release()
			if ce, ok := asCorruption(err); ok {
				return Spans{}, l.corrupt(ce)
			}
			return Spans{}, err
		}
		if !retry {
			return ss, nil
		}
	}
}

// collectSpans walks batch headers from offset on, segment by segment, as
// far as the limits allow (see Read). Each span it returns holds a
// reference on its segment. retry reports that the first segment was
// deleted meanwhile.
func collectSpans(segs []*segment, offset int64, maxBytes int, maxOffset int64) (Spans, bool, error) {
	ss := Spans{Next: -1}
	total := int64(0)
	for j, s := range segs {
		if !s.tryRef() {
			if j == 0 {
				return ss, true, nil
			}
			break
		}
		pos, expect, found, err := int64(0), s.base, true, error(nil)
		if j == 0 {
			pos, expect, found, err = locate(s, offset)
		}
		var end, next int64
		done := false
		if err == nil && found {
			end, next, done, err = spanEnd(s, pos, expect, total, maxBytes, maxOffset)
		}
		if err != nil || end == pos {
			s.unref()
			if err != nil {
				ss.Release()
				return Spans{}, false, err
			}
		} else {
			ss.List = append(ss.List, Span{seg: s, Pos: pos, Len: end - pos})
			ss.Next = next
			total += end - pos
		}
		if done {
			break
		}
	}
	return ss, false, nil
}

// headerChunk is how much spanEnd reads at a time: a few small batches'
// headers per read, and little of a large batch's body.
const headerChunk = 4 << 10

// spanEnd walks the batch headers of s from pos (the batch based at
// expect) and returns where the batches that fit end, the offset after
// them, and whether a limit stopped the walk before the end of s. total
// is what earlier segments already contributed.
func spanEnd(s *segment, pos, expect, total int64, maxBytes int, maxOffset int64) (end, next int64, done bool, err error) {
	size := s.size.Load()
	r := reader{f: s.f, size: size, min: headerChunk}
	end, next = pos, -1
	for end < size {
		h, err := r.header(end)
		if err != nil {
			return 0, 0, false, readErr(s, end, expect, err)
		}
		if !s.follows(h.BaseOffset, expect) || h.LastOffsetDelta < 0 {
			return 0, 0, false, &CorruptionError{File: s.path, Pos: end, Offset: expect,
				Reason: fmt.Sprintf("batch offsets %d..%d, expected base %d", h.BaseOffset, h.LastOffset(), expect)}
		}
		if h.BaseOffset >= maxOffset {
			return end, next, true, nil
		}
		n := int64(h.Size())
		if end+n > size {
			return 0, 0, false, readErr(s, end, expect, io.ErrUnexpectedEOF)
		}
		// KIP-74: the first batch goes out whole even if it exceeds
		// maxBytes, so that consumers always make progress.
		if first := total == 0 && end == pos; !first && total+(end-pos)+n > int64(maxBytes) {
			return end, next, true, nil
		}
		end += n
		next = h.LastOffset() + 1
		expect = next
	}
	return end, next, false, nil
}

// catchUp is how far below a span the checked prefix of its segment may
// end for the read to check the gap too and extend the prefix; further
// below, only the span itself is checked, so one fetch never reads a large
// segment to serve a small tail.
const catchUp = 4 << 20

// verifySpans CRC-checks the parts of ss not yet known good, and records
// what it checked, when contiguous with the checked prefix, so the next
// reader need not.
func verifySpans(ss Spans) error {
	for _, sp := range ss.List {
		s := sp.seg
		end := sp.Pos + sp.Len
		good := s.verified.Load()
		if end <= good {
			continue
		}
		from, extend := sp.Pos, false
		if sp.Pos-good <= catchUp {
			from, extend = good, true // good is a batch boundary
		}
		if err := verifyRange(s, from, end); err != nil {
			return err
		}
		for extend {
			cur := s.verified.Load()
			if cur >= end || s.verified.CompareAndSwap(cur, end) {
				break
			}
		}
	}
	return nil
}

// verifyBufs hold a batch while its CRC is checked.
var verifyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}

// verifyRange checks the whole batches of s in [from, end), one at a time.
func verifyRange(s *segment, from, end int64) error {
	bp := verifyBufs.Get().(*[]byte)
	buf := *bp
	defer func() {
		if cap(buf) <= 1<<20 { // do not pool a huge batch's buffer
			*bp = buf[:0]
			verifyBufs.Put(bp)
		}
	}()
	r := reader{f: s.f, size: end, min: headerChunk}
	for pos := from; pos < end; {
		h, err := r.header(pos)
		if err != nil {
			return readErr(s, pos, -1, err)
		}
		n := h.Size()
		if pos+int64(n) > end {
			return readErr(s, pos, h.BaseOffset, io.ErrUnexpectedEOF)
		}
		if cap(buf) < n {
			buf = make([]byte, 0, n)
		}
		b := buf[:n]
		if err := readFull(s.f, b, pos); err != nil {
			return readErr(s, pos, h.BaseOffset, err)
		}
		if _, err := record.Parse(b); err != nil {
			return &CorruptionError{File: s.path, Pos: pos, Offset: h.BaseOffset, Reason: err.Error()}
		}
		pos += int64(n)
	}
	return nil
}
