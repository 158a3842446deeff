package log

import (
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
		pos, found, err := int64(0), true, error(nil)
		if j == 0 {
			pos, found, err = locate(s, offset)
		}
		done := false
		if err == nil && found {
			out, done, err = appendBatches(s, pos, out, maxBytes, maxOffset)
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

// locate returns the position of the batch of s that holds offset, or
// found == false if no batch of s does (offset lies beyond it or in a gap).
func locate(s *segment, offset int64) (int64, bool, error) {
	end := s.size.Load()
	r, bp := newScanReader(s, end)
	defer putScanReader(bp)
	for pos := s.floorPos(offset); pos < end; {
		h, err := r.header(pos)
		if err != nil {
			return 0, false, corruptErr(s, pos, err)
		}
		if h.LastOffset() >= offset {
			return pos, true, nil
		}
		pos += int64(h.Size())
	}
	return 0, false, nil
}

func corruptErr(s *segment, pos int64, err error) error {
	return fmt.Errorf("log: %s at %d: %w", s.path, pos, err)
}

// appendBatches appends to out the whole batches of s from pos on that fit
// the limits (see Read); done reports that a limit stopped it before the end
// of the segment.
func appendBatches(s *segment, pos int64, out []byte, maxBytes int, maxOffset int64) ([]byte, bool, error) {
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
		return nil, false, corruptErr(s, pos, err)
	}
	p := 0
	for p+record.HeaderSize <= int(want) {
		h, err := record.ParseHeader(out[n0+p:])
		if err != nil {
			return nil, false, corruptErr(s, pos+int64(p), err)
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
				return nil, false, corruptErr(s, pos, io.ErrUnexpectedEOF)
			}
			out = slices.Grow(out, size-int(want))[:n0+size]
			if err := readFull(s.f, out[n0+int(want):], pos+want); err != nil {
				return nil, false, corruptErr(s, pos, err)
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
			return nil, corruptErr(s, pos, err)
		}
		if h.MaxTimestamp >= ts && h.LastOffset() >= start {
			b := make([]byte, h.Size())
			if err := readFull(s.f, b, pos); err != nil {
				return nil, corruptErr(s, pos, err)
			}
			return b, nil
		}
		pos += int64(h.Size())
	}
	return nil, nil
}
