package log

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// Read returns whole batches, concatenated, starting with the batch that
// contains offset: at most maxBytes, but always at least one whole batch if
// one is readable, even if larger (KIP-74), and stopping before the first
// batch whose base offset is >= maxOffset (the high watermark or last stable
// offset). Reads continue into later segments. An offset below StartOffset or
// above NextOffset is ErrOffsetOutOfRange; offset == NextOffset reads
// nothing. The first batch may start below offset and may even start below
// StartOffset; the caller skips records it must not return.
//
// Read takes no lock held by appends: it works on a snapshot of the segment
// list and sparse index, and positional reads of bytes that are never
// rewritten. A segment deleted by retention meanwhile stays readable until
// the read ends. The result is freshly allocated and owned by the caller.
func (l *Log) Read(offset int64, maxBytes int, maxOffset int64) ([]byte, error) {
	for {
		if err := l.usable(); err != nil {
			return nil, err
		}
		// Load next before the view: the view is then at least as new, so
		// it holds every batch below next.
		next := l.next.Load()
		segs := *l.view.Load()
		start := l.start.Load()
		if offset < start || offset > next {
			return nil, fmt.Errorf("%w: offset %d, log has [%d, %d)", ErrOffsetOutOfRange, offset, start, next)
		}
		if offset == next {
			return nil, nil
		}
		i := sort.Search(len(segs), func(i int) bool { return segs[i].base > offset }) - 1
		if i < 0 {
			return nil, fmt.Errorf("%w: offset %d below the first segment", ErrOffsetOutOfRange, offset)
		}
		out, retry, err := l.readSegments(segs[i:], offset, maxBytes, maxOffset)
		if ce, ok := asCorruption(err); ok {
			return nil, l.corrupt(ce)
		}
		if !retry {
			return out, err
		}
		// The segment holding offset was deleted after the snapshot: look
		// again, the start offset has moved.
	}
}

func (l *Log) readSegments(segs []*segment, offset int64, maxBytes int, maxOffset int64) ([]byte, bool, error) {
	var out []byte
	for j, s := range segs {
		if !s.tryRef() {
			if j == 0 {
				return nil, true, nil
			}
			break
		}
		pos, expect, found, err := int64(0), s.base, true, error(nil)
		if j == 0 {
			pos, expect, found, err = locate(s, offset)
		}
		done := false
		if err == nil && found {
			out, done, err = appendBatches(s, pos, expect, out, maxBytes, maxOffset)
		}
		s.unref()
		if err != nil {
			return nil, false, err
		}
		if done {
			break
		}
	}
	return out, false, nil
}

// newScanReader returns a reader over the first size bytes of s with a
// pooled buffer; release it with putScanReader.
func newScanReader(s *segment, size int64) (*reader, *[]byte) {
	bp := scanBufs.Get().(*[]byte)
	return &reader{f: s.f, size: size, buf: (*bp)[:0], min: cap(*bp)}, bp
}

func putScanReader(bp *[]byte) { scanBufs.Put(bp) }

// locate returns the position and base offset of the batch of s that holds
// offset, or found == false if no batch of s does (offset lies beyond it).
// The headers it walks must chain from the index entry it starts at.
func locate(s *segment, offset int64) (pos, base int64, found bool, err error) {
	end := s.size.Load()
	r, bp := newScanReader(s, end)
	defer putScanReader(bp)
	pos, expect := s.floor(offset)
	for pos < end {
		h, err := r.header(pos)
		if err != nil {
			return 0, 0, false, readErr(s, pos, expect, err)
		}
		if !s.follows(h.BaseOffset, expect) || h.LastOffsetDelta < 0 {
			return 0, 0, false, &CorruptionError{File: s.path, Pos: pos, Offset: expect,
				Reason: fmt.Sprintf("batch offsets %d..%d, expected base %d", h.BaseOffset, h.LastOffset(), expect)}
		}
		if h.LastOffset() >= offset {
			return pos, h.BaseOffset, true, nil
		}
		pos += int64(h.Size())
		expect = h.LastOffset() + 1
	}
	return 0, 0, false, nil
}

// readErr classifies a failed read of durable bytes: malformed or missing
// data is corruption, anything else an I/O error.
func readErr(s *segment, pos, offset int64, err error) error {
	if errors.Is(err, errShortRead) || errors.Is(err, io.ErrUnexpectedEOF) || isBatchError(err) {
		return &CorruptionError{File: s.path, Pos: pos, Offset: offset, Reason: err.Error()}
	}
	return fmt.Errorf("log: %s at %d: %w", s.path, pos, err)
}

// verifyBatches checks whole batches read from s at pos: each CRC-valid
// and starting where the one before ended (expect, for the first). It
// returns the offset after the last.
func verifyBatches(s *segment, pos int64, b []byte, expect int64) (int64, error) {
	for off := 0; off < len(b); {
		h, err := record.Parse(b[off:])
		if err == nil && (!s.follows(h.BaseOffset, expect) || h.LastOffsetDelta < 0) {
			err = fmt.Errorf("batch offsets %d..%d, expected base %d", h.BaseOffset, h.LastOffset(), expect)
		}
		if err != nil {
			return 0, &CorruptionError{File: s.path, Pos: pos + int64(off), Offset: expect, Reason: err.Error()}
		}
		off += h.Size()
		expect = h.LastOffset() + 1
	}
	return expect, nil
}

// appendBatches appends to out the whole batches of s from pos on (the
// first starting at offset expect) that fit the limits (see Read), each
// verified; done reports that a limit stopped it before the end of the
// segment.
func appendBatches(s *segment, pos, expect int64, out []byte, maxBytes int, maxOffset int64) ([]byte, bool, error) {
	n0 := len(out)
	out, done, err := collectBatches(s, pos, expect, out, maxBytes, maxOffset)
	if err != nil {
		return nil, false, err
	}
	if _, err := verifyBatches(s, pos, out[n0:], expect); err != nil {
		return nil, false, err
	}
	return out, done, nil
}

// collectBatches reads for appendBatches, checking only headers.
func collectBatches(s *segment, pos, expect int64, out []byte, maxBytes int, maxOffset int64) ([]byte, bool, error) {
	avail := s.size.Load() - pos
	if avail <= 0 {
		return out, false, nil
	}
	first := len(out) == 0
	want := min(avail, max(int64(maxBytes)-int64(len(out)), 0))
	if first {
		want = max(want, min(avail, record.HeaderSize))
	}
	if want < record.HeaderSize {
		return out, true, nil
	}
	n0 := len(out)
	out = slices.Grow(out, int(want))[:n0+int(want)]
	if err := readFull(s.f, out[n0:], pos); err != nil {
		return nil, false, readErr(s, pos, expect, err)
	}
	p := 0
	for p+record.HeaderSize <= int(want) {
		h, err := record.ParseHeader(out[n0+p:])
		if err != nil {
			return nil, false, readErr(s, pos+int64(p), -1, err)
		}
		if h.BaseOffset >= maxOffset {
			return out[:n0+p], true, nil
		}
		size := h.Size()
		if p+size <= int(want) {
			p += size
			first = false
			continue
		}
		if first && p == 0 {
			// KIP-74: the first batch goes out whole even if it exceeds
			// maxBytes, so that consumers always make progress.
			if int64(size) > avail {
				return nil, false, readErr(s, pos, expect, io.ErrUnexpectedEOF)
			}
			out = slices.Grow(out, size-int(want))[:n0+size]
			if err := readFull(s.f, out[n0+int(want):], pos+want); err != nil {
				return nil, false, readErr(s, pos, expect, err)
			}
			p = size
		}
		break
	}
	return out[:n0+p], int64(p) < avail, nil
}

func readFull(f vfs.File, b []byte, off int64) error {
	n, err := f.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// ReadBatchAtTime returns a copy of the first batch, in offset order and
// not entirely below StartOffset, whose MaxTimestamp is >= ts, or nil if
// there is none. It uses the time index to skip most of the log; the caller
// finds the exact record (ListOffsets by timestamp) and must ignore a batch
// at or above its high watermark.
func (l *Log) ReadBatchAtTime(ts int64) ([]byte, error) {
	for {
		if err := l.usable(); err != nil {
			return nil, err
		}
		segs := *l.view.Load()
		start := l.start.Load()
		retry := false
		for _, s := range segs {
			if s.next.Load() <= start || s.maxTs.Load() < ts {
				continue
			}
			if !s.tryRef() {
				retry = true
				break
			}
			b, err := batchAtTime(s, ts, start)
			s.unref()
			if ce, ok := asCorruption(err); ok {
				return nil, l.corrupt(ce)
			}
			if err != nil || b != nil {
				return b, err
			}
		}
		if !retry {
			return nil, nil
		}
	}
}

func batchAtTime(s *segment, ts, start int64) ([]byte, error) {
	end := s.size.Load()
	pos := s.timeFloorPos(ts)
	if start > s.base {
		pos = max(pos, s.floorPos(start))
	}
	r, bp := newScanReader(s, end)
	defer putScanReader(bp)
	for pos < end {
		h, err := r.header(pos)
		if err != nil {
			return nil, readErr(s, pos, -1, err)
		}
		if h.MaxTimestamp >= ts && h.LastOffset() >= start {
			b := make([]byte, h.Size())
			if err := readFull(s.f, b, pos); err != nil {
				return nil, readErr(s, pos, h.BaseOffset, err)
			}
			if _, err := verifyBatches(s, pos, b, h.BaseOffset); err != nil {
				return nil, err
			}
			return b, nil
		}
		pos += int64(h.Size())
	}
	return nil, nil
}
