package log

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/record"
)

// Log compaction (cleanup.policy=compact), as Kafka's log cleaner does it.
//
// A cleaning pass builds an OffsetMap (key → last offset) over the dirty
// part of the log, [firstDirty, end), stopping where the map fills; then it
// rewrites every closed segment below end, oldest first, in groups whose
// total size fits one segment, keeping a record only if no later record of
// its key lies below end. Offsets never change: a cleaned segment keeps its
// base offset in its name and its batches keep theirs, so offsets jump
// where records were removed (gaps). A batch that keeps all its records is
// copied byte for byte; one that loses some is re-encoded in its own codec with
// the same header (base offset, last offset delta, timestamps, producer
// id, epoch, base sequence, transactional and control flags); one that
// loses all is dropped, unless it is its producer's last batch, which is
// kept with no records so that idempotent producers' sequence numbers
// survive a restart.
//
// A group is replaced by a multi-file swap that a crash cannot leave half
// done:
//  1. the kept batches are written to <base>.<end>.cleaned (base: the
//     group's first segment, end: the base of the segment after the group)
//     and fsynced;
//  2. it is renamed to <base>.<end>.swap and the directory fsynced: from
//     here the new set is complete and durable;
//  3. every segment file with a base in [base, end) is removed;
//  4. the swap file is renamed to <base>.log and the directory fsynced;
//  5. its index files are written.
//
// Open replays this first: a .cleaned file is deleted (the old segments
// are all still there), a .swap file completes steps 3 and 4. So after any
// crash the log holds either the old segments of a group or its new one.
//
// Before the first swap, cleaner-offset.checkpoint is written ("v1
// <firstDirty>\n", atomically): its presence tells Open and check-data that
// offsets may jump between batches in this log. Without it a jump is
// damage, as before compaction existed. It also keeps the cleaner's
// position across restarts, for the dirty ratio.

// Names of the cleaner's files.
const (
	cleanedSuffix           = ".cleaned"
	swapSuffix              = ".swap"
	cleanerCheckpointName   = "cleaner-offset.checkpoint"
	cleanerCheckpointPrefix = "v1 "
)

func groupFileName(base, end int64, suffix string) string {
	return fmt.Sprintf("%0*d.%0*d%s", baseDigits, base, baseDigits, end, suffix)
}

// parseGroupFileName parses <base>.<end><suffix>.
func parseGroupFileName(name, suffix string) (base, end int64, ok bool) {
	s, ok := strings.CutSuffix(name, suffix)
	if !ok || len(s) != 2*baseDigits+1 || s[baseDigits] != '.' {
		return 0, 0, false
	}
	b, err1 := strconv.ParseInt(s[:baseDigits], 10, 64)
	e, err2 := strconv.ParseInt(s[baseDigits+1:], 10, 64)
	if err1 != nil || err2 != nil || b < 0 || e < b {
		return 0, 0, false
	}
	return b, e, true
}

// CleanOptions say what a cleaning may remove.
type CleanOptions struct {
	// Ctx stops a cleaning between batches (it then returns Ctx.Err()).
	Ctx context.Context
	// NowMs is the time tombstone and marker horizons are measured from.
	NowMs int64
	// UpTo bounds the cleaning: only closed segments whose batches all lie
	// below it are cleaned (the caller passes the last stable offset).
	UpTo int64
	// DeleteRetentionMs is delete.retention.ms: a tombstone, or a
	// transaction marker with no data of its transaction left, is removed
	// once its batch's max timestamp is at least this old.
	DeleteRetentionMs int64
	// MinCompactionLagMs is min.compaction.lag.ms: segments with a batch
	// younger than this are not cleaned yet.
	MinCompactionLagMs int64
	// Map is the dedupe buffer; its size bounds the memory of a pass.
	Map *OffsetMap
	// Aborted reports whether the transactional batch of producerID at
	// offset belongs to an aborted transaction.
	Aborted func(producerID, offset int64) bool
	// LastBatch reports whether the batch at baseOffset is producerID's
	// last one in the producer state (kept, if only as an empty batch).
	LastBatch func(producerID, baseOffset int64) bool
	// AbortListed reports whether the aborted-transaction index still
	// lists the transaction of producerID whose ABORT marker is at
	// markerOffset. Such a marker is kept (and reported in
	// CleanStats.Unlisted, for the caller to drop the entry) even when it
	// could go: readers given the entry need the marker to stop skipping
	// the producer's records. A later pass removes it.
	AbortListed func(producerID, markerOffset int64) bool
	// MaxRecordsBytes bounds a compressed batch's decompressed records.
	MaxRecordsBytes int64
	// Throttle, if set, is called with the bytes read or written before
	// each batch and may sleep (log.cleaner.io.max.bytes.per.second).
	Throttle func(n int)
}

// CleanStats describe one cleaning pass.
type CleanStats struct {
	// FirstDirty and End delimit the records the key map covered.
	FirstDirty, End int64
	// Segments is how many segments were rewritten, Groups into how many.
	Segments, Groups int
	// BytesRead and BytesWritten count segment bytes.
	BytesRead, BytesWritten int64
	// RecordsRemoved and BatchesRemoved count what the pass dropped.
	RecordsRemoved, BatchesRemoved int64
	// MapKeys is how many distinct keys the map held.
	MapKeys int
	// Unlisted are the ABORT markers (producer id, offset) whose
	// transactions have no record left: drop their aborted-index entries
	// (durably) so that a later pass may remove the markers.
	Unlisted []AbortMarker
}

// AbortMarker names an ABORT marker: its producer and offset.
type AbortMarker struct{ ProducerID, Offset int64 }

// errAbandoned means a group changed under the cleaner (retention or
// DeleteRecords removed a segment of it); the pass stops, nothing lost.
var errAbandoned = errors.New("log: cleaning abandoned: segments changed")

// FirstDirtyOffset is the cleaner's position: records below it were
// cleaned against a key map that covered them.
func (l *Log) FirstDirtyOffset() int64 { return max(l.firstDirty.Load(), l.start.Load()) }

// CleanableBytes splits the closed segments that lie below upTo (and are
// at least minLagMs old at nowMs) into bytes already cleaned and dirty
// bytes, and returns the max timestamp of the first dirty segment (-1 if
// none): the inputs of the dirty ratio and max.compaction.lag.ms.
func (l *Log) CleanableBytes(upTo, nowMs, minLagMs int64) (clean, dirty, firstDirtyTs int64) {
	firstDirty := l.FirstDirtyOffset()
	firstDirtyTs = -1
	for _, s := range l.cleanableSegments(upTo, nowMs, minLagMs) {
		if s.next.Load() <= firstDirty {
			clean += s.size.Load()
			continue
		}
		if firstDirtyTs < 0 {
			firstDirtyTs = s.maxTs.Load()
		}
		dirty += s.size.Load()
	}
	return clean, dirty, firstDirtyTs
}

// cleanableSegments returns the oldest closed segments that lie wholly
// below upTo and are old enough, in order.
func (l *Log) cleanableSegments(upTo, nowMs, minLagMs int64) []*segment {
	segs := *l.view.Load()
	var out []*segment
	for i := 0; i < len(segs)-1; i++ {
		s := segs[i]
		if s.next.Load() > upTo || (minLagMs > 0 && s.maxTs.Load() > nowMs-minLagMs) {
			break
		}
		out = append(out, s)
	}
	return out
}

// Clean runs one cleaning pass (see the comment at the top of clean.go)
// and returns what it did; a log with nothing dirty below UpTo returns
// zero stats. I/O failures take the log offline as on the write path;
// damage in what it reads is corruption, as for a fetch.
func (l *Log) Clean(opt CleanOptions) (CleanStats, error) {
	l.cleanMu.Lock()
	defer l.cleanMu.Unlock()
	var st CleanStats
	if err := l.usable(); err != nil {
		return st, err
	}
	if opt.Ctx == nil {
		opt.Ctx = context.Background()
	}
	if opt.MaxRecordsBytes <= 0 {
		opt.MaxRecordsBytes = record.MaxDecompressedBytes
	}
	// A truncation under way or from here on may remove or cut what the
	// pass reads: then the pass swaps nothing in and does not advance its
	// position (an odd gen never matches again).
	gen := l.truncations.Load()
	cands := l.cleanableSegments(opt.UpTo, opt.NowMs, opt.MinCompactionLagMs)
	var held []*segment
	defer func() {
		for _, s := range held {
			s.unref()
		}
	}()
	for _, s := range cands {
		if !s.tryRef() {
			break // deleted meanwhile: clean what precedes it
		}
		held = append(held, s)
	}
	cands = held
	firstDirty := l.FirstDirtyOffset()
	if len(cands) == 0 || cands[len(cands)-1].next.Load() <= firstDirty {
		return st, nil
	}
	st.FirstDirty = firstDirty
	end, err := l.buildMap(cands, firstDirty, &opt, &st)
	if err != nil {
		return st, l.cleanErr(err)
	}
	st.End = end
	st.MapKeys = opt.Map.Len()

	var rewrite []*segment
	for _, s := range cands {
		if s.base < end {
			rewrite = append(rewrite, s)
		}
	}
	w := &cleanWalk{opt: &opt, end: end, txnKept: map[int64]bool{}, st: &st, gen: gen}
	segBytes := l.Config().SegmentBytes
	for i := 0; i < len(rewrite); {
		j, size := i+1, rewrite[i].size.Load()
		for j < len(rewrite) && size+rewrite[j].size.Load() <= segBytes &&
			rewrite[j].next.Load()-1-rewrite[i].base <= math.MaxInt32 {
			size += rewrite[j].size.Load()
			j++
		}
		w.unlisted = w.unlisted[:0]
		if err := l.cleanGroup(rewrite[i:j], w); err != nil {
			if errors.Is(err, errAbandoned) {
				l.logger.Info("cleaning abandoned: segments changed meanwhile")
				return st, nil
			}
			return st, l.cleanErr(err)
		}
		st.Unlisted = append(st.Unlisted, w.unlisted...)
		st.Groups++
		st.Segments += j - i
		i = j
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.truncations.Load() != gen {
		return st, nil
	}
	return st, l.setFirstDirty(end)
}

// cleanErr classifies a cleaning failure: corruption takes the log
// offline like a bad read, a cancelled context is returned as is, other
// failures went through fail already or are I/O errors of reads.
func (l *Log) cleanErr(err error) error {
	if ce, ok := asCorruption(err); ok {
		return l.corrupt(ce)
	}
	return err
}

// setFirstDirty records the cleaner's position, durably when it moved.
// Called with mu held, so that no truncation comes between.
func (l *Log) setFirstDirty(off int64) error {
	if off <= l.firstDirty.Load() {
		return nil
	}
	l.firstDirty.Store(off)
	if err := l.writeCleanerCheckpoint(off); err != nil {
		return l.fail(err)
	}
	return nil
}

func (l *Log) writeCleanerCheckpoint(off int64) error {
	return l.writeFileAtomic(cleanerCheckpointName, []byte(cleanerCheckpointPrefix+strconv.FormatInt(off, 10)+"\n"))
}

// readCleanerCheckpoint loads the cleaner's position at Open; the file's
// presence means the log may have offset gaps.
func (l *Log) readCleanerCheckpoint() error {
	b, err := l.readFile(cleanerCheckpointName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	l.gaps = true
	off, err := parseCleanerCheckpoint(b)
	if errors.Is(err, errNewerFormat) {
		return fmt.Errorf("%s: %w", cleanerCheckpointName, err)
	}
	if err != nil {
		// Only the position is lost: everything counts as dirty again.
		l.logger.Warn("ignoring malformed cleaner checkpoint", "contents", string(b))
		return nil
	}
	l.firstDirty.Store(off)
	return nil
}

func parseCleanerCheckpoint(b []byte) (int64, error) {
	var v int
	if n, _ := fmt.Sscanf(string(b), "v%d ", &v); n == 1 && v > 1 {
		return 0, fmt.Errorf("version %d %w (up to 1)", v, errNewerFormat)
	}
	s, ok := strings.CutPrefix(string(b), cleanerCheckpointPrefix)
	if ok {
		s, ok = strings.CutSuffix(s, "\n")
	}
	off, err := strconv.ParseInt(s, 10, 64)
	if !ok || err != nil || off < 0 {
		return 0, fmt.Errorf("malformed cleaner checkpoint %q", b)
	}
	return off, nil
}

// replaySwaps finishes or forgets a cleaning a crash interrupted (steps
// 3-4 of the swap protocol for each .swap file; .cleaned files go).
func (l *Log) replaySwaps() error {
	names, err := l.fs.ReadDir(l.dir)
	if err != nil {
		return err
	}
	changed := false
	for _, name := range names {
		if _, _, ok := parseGroupFileName(name, cleanedSuffix); ok {
			l.logger.Info("removing an unfinished cleaned segment", "file", name)
			if err := l.fs.Remove(filepath.Join(l.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			changed = true
		}
	}
	for _, name := range names {
		base, end, ok := parseGroupFileName(name, swapSuffix)
		if !ok {
			continue
		}
		l.logger.Info("completing an interrupted segment swap", "file", name)
		for _, other := range names {
			if b, _, ok := parseSegmentName(other); ok && b >= base && b < end {
				if err := l.fs.Remove(filepath.Join(l.dir, other)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
		}
		if err := l.fs.Rename(filepath.Join(l.dir, name), filepath.Join(l.dir, segmentName(base, logSuffix))); err != nil {
			return err
		}
		changed = true
	}
	if changed {
		return l.fs.SyncDir(l.dir)
	}
	return nil
}

// eachBatch calls fn with every batch of s that ends at or after from, in
// order, each verified (CRC-32C, offsets in order) so that damage is
// never copied into a cleaned segment under a fresh CRC.
func eachBatch(s *segment, from int64, throttle func(int), fn func(h *record.Header, b []byte) error) error {
	size := s.size.Load()
	r, bp := newScanReader(s, size)
	defer putScanReader(bp)
	pos, expect := s.floor(from)
	if pos == 0 {
		expect = s.base
	}
	for pos < size {
		h, err := r.header(pos)
		if err != nil {
			return readErr(s, pos, expect, err)
		}
		n := h.Size()
		b, err := r.window(pos, n)
		if err != nil {
			return readErr(s, pos, expect, err)
		}
		if _, err := record.Parse(b); err != nil {
			return &CorruptionError{File: s.path, Pos: pos, Offset: expect, Reason: err.Error()}
		}
		if !s.follows(h.BaseOffset, expect) || h.LastOffsetDelta < 0 {
			return &CorruptionError{File: s.path, Pos: pos, Offset: expect,
				Reason: fmt.Sprintf("batch offsets %d..%d, expected base %d", h.BaseOffset, h.LastOffset(), expect)}
		}
		if throttle != nil {
			throttle(n)
		}
		if h.LastOffset() >= from {
			if err := fn(&h, b); err != nil {
				return err
			}
		}
		pos += int64(n)
		expect = h.LastOffset() + 1
	}
	return nil
}

var errMapFull = errors.New("offset map full")

// buildMap fills opt.Map with the keys of [firstDirty, ...) until the map
// fills or the candidates end, and returns the end of what it covered.
func (l *Log) buildMap(cands []*segment, firstDirty int64, opt *CleanOptions, st *CleanStats) (int64, error) {
	opt.Map.Reset()
	end := firstDirty
	for _, s := range cands {
		if s.next.Load() <= firstDirty {
			continue
		}
		err := eachBatch(s, firstDirty, opt.Throttle, func(h *record.Header, b []byte) error {
			st.BytesRead += int64(len(b))
			if err := opt.Ctx.Err(); err != nil {
				return err
			}
			if h.IsControl() || (h.IsTransactional() && opt.Aborted != nil && opt.Aborted(h.ProducerID, h.BaseOffset)) {
				end = h.LastOffset() + 1
				return nil
			}
			full := false
			err := record.ForEachLimit(opt.Ctx, *h, b, opt.MaxRecordsBytes, func(r record.Record) bool {
				off := h.BaseOffset + int64(r.OffsetDelta)
				if off < firstDirty || r.Key == nil {
					return true
				}
				if !opt.Map.Put(r.Key, off) {
					full, end = true, off
					return false
				}
				return true
			})
			if err != nil {
				return recordsErr(s, h, err)
			}
			if full {
				return errMapFull
			}
			end = h.LastOffset() + 1
			return nil
		})
		if errors.Is(err, errMapFull) {
			return end, nil
		}
		if err != nil {
			return 0, err
		}
		end = max(end, s.next.Load())
	}
	return end, nil
}

// recordsErr turns a failure to decode a stored batch's records into
// corruption (it was validated when produced), keeping context errors.
func recordsErr(s *segment, h *record.Header, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &CorruptionError{File: s.path, Offset: h.BaseOffset, Reason: "records: " + err.Error()}
}

// cleanWalk is the state of one pass's rewrite, carried across groups in
// offset order.
type cleanWalk struct {
	opt *CleanOptions
	end int64
	// txnKept: producers whose current transaction still has a batch in
	// the cleaned log, so its marker must stay.
	txnKept map[int64]bool
	st      *CleanStats
	recs    []byte // scratch for re-encoded records
	body    []byte // scratch for one record
	// unlisted: the current group's reports for CleanStats.Unlisted, kept
	// only once the group is swapped in (the records of their
	// transactions are gone from what readers see only then).
	unlisted []AbortMarker
	// gen is Log.truncations when the pass began.
	gen int64
}

// filter returns what of batch b goes into the cleaned segment: b itself,
// a re-encoded batch, or nil.
func (w *cleanWalk) filter(s *segment, h *record.Header, b []byte) ([]byte, error) {
	opt := w.opt
	horizon := h.MaxTimestamp <= opt.NowMs-opt.DeleteRetentionMs
	if h.IsControl() {
		if !h.HasProducerID() {
			return b, nil
		}
		kept := w.txnKept[h.ProducerID]
		delete(w.txnKept, h.ProducerID)
		if kept || !horizon {
			return b, nil
		}
		if isAbortMarker(*h, b) && opt.AbortListed != nil && opt.AbortListed(h.ProducerID, h.BaseOffset) {
			w.unlisted = append(w.unlisted, AbortMarker{h.ProducerID, h.BaseOffset})
			return b, nil
		}
		w.st.BatchesRemoved++
		w.st.RecordsRemoved += int64(h.NumRecords)
		return nil, nil
	}
	aborted := h.IsTransactional() && opt.Aborted != nil && opt.Aborted(h.ProducerID, h.BaseOffset)
	kept := int32(0)
	w.recs = w.recs[:0]
	if !aborted {
		err := record.ForEachLimit(opt.Ctx, *h, b, opt.MaxRecordsBytes, func(r record.Record) bool {
			off := h.BaseOffset + int64(r.OffsetDelta)
			keep := r.Key != nil // keyless records have no place in a compacted log
			if keep && off < w.end {
				if latest, ok := opt.Map.Get(r.Key); ok && off < latest {
					keep = false
				} else if r.Value == nil && horizon {
					keep = false // a tombstone past delete.retention.ms
				}
			}
			if keep {
				kept++
				w.recs = appendRecord(w.recs, &w.body, &r)
			}
			return true
		})
		if err != nil {
			return nil, recordsErr(s, h, err)
		}
	}
	w.st.RecordsRemoved += int64(h.NumRecords - kept)
	var out []byte
	switch {
	case kept == h.NumRecords:
		out = b
	case kept > 0:
		var err error
		if out, err = rebuildBatch(b, kept, w.recs, h.Compression()); err != nil {
			return nil, fmt.Errorf("log: %s: re-encoding the batch at offset %d: %w", s.path, h.BaseOffset, err)
		}
	case h.HasProducerID() && opt.LastBatch != nil && opt.LastBatch(h.ProducerID, h.BaseOffset):
		out, _ = rebuildBatch(b, 0, nil, record.CompressionNone)
	default:
		w.st.BatchesRemoved++
	}
	if out != nil && h.IsTransactional() {
		w.txnKept[h.ProducerID] = true
	}
	return out, nil
}

// isAbortMarker reports whether control batch b is an ABORT marker (its
// record's key: version int16, type int16 = 0).
func isAbortMarker(h record.Header, b []byte) bool {
	abort := false
	record.ForEach(h, b, func(r record.Record) bool {
		abort = len(r.Key) >= 4 && binary.BigEndian.Uint16(r.Key[2:]) == 0
		return false
	})
	return abort
}

// appendRecord encodes r (v2 record format, attributes 0) after dst,
// using *scratch for the record's body.
func appendRecord(dst []byte, scratch *[]byte, r *record.Record) []byte {
	body := append((*scratch)[:0], 0)
	body = binary.AppendVarint(body, r.TimestampDelta)
	body = binary.AppendVarint(body, int64(r.OffsetDelta))
	body = appendNullable(body, r.Key)
	body = appendNullable(body, r.Value)
	body = binary.AppendVarint(body, int64(len(r.Headers)))
	for _, hd := range r.Headers {
		body = binary.AppendVarint(body, int64(len(hd.Key)))
		body = append(body, hd.Key...)
		body = appendNullable(body, hd.Value)
	}
	*scratch = body
	dst = binary.AppendVarint(dst, int64(len(body)))
	return append(dst, body...)
}

func appendNullable(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}

// rebuildBatch returns a batch with orig's header holding count already
// encoded records, compressed with codec (the codec orig was written
// with, so a topic's compression.type still holds for it; an empty batch
// is left uncompressed).
func rebuildBatch(orig []byte, count int32, recs []byte, codec int) ([]byte, error) {
	be := binary.BigEndian
	out := make([]byte, record.HeaderSize, record.HeaderSize+len(recs))
	copy(out, orig[:record.HeaderSize])
	out, err := record.AppendCompressed(out, codec, recs)
	if err != nil {
		return nil, err
	}
	attrs := be.Uint16(out[21:])&^record.AttrCompressionMask | uint16(codec)&record.AttrCompressionMask
	be.PutUint16(out[21:], attrs)
	be.PutUint32(out[57:], uint32(count))
	be.PutUint32(out[8:], uint32(len(out)-12))
	be.PutUint32(out[17:], crc32.Checksum(out[21:], castagnoli))
	return out, nil
}

// cleanGroup rewrites one group of adjacent closed segments into a single
// segment and swaps it in (steps 1-5 of the protocol).
func (l *Log) cleanGroup(group []*segment, w *cleanWalk) error {
	base := group[0].base
	// end: where the next segment starts (the group is never the active
	// segment, so one follows).
	segs := *l.view.Load()
	end := int64(-1)
	for i, s := range segs {
		if s == group[len(group)-1] && i+1 < len(segs) {
			end = segs[i+1].base
		}
	}
	if end < 0 {
		return errAbandoned
	}
	tmp := filepath.Join(l.dir, groupFileName(base, end, cleanedSuffix))
	f, err := l.fs.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return l.fail(fmt.Errorf("create %s: %w", tmp, err))
	}
	ns := newSegment(l.dir, base, f)
	ns.gaps = true
	abandon := func() {
		ns.unref()
		l.fs.Remove(tmp)
	}
	var buf []byte
	var pos int64
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if w.opt.Throttle != nil {
			w.opt.Throttle(len(buf))
		}
		_, err := f.Write(buf)
		buf = buf[:0]
		return err
	}
	interval := l.Config().IndexIntervalBytes
	for _, s := range group {
		err := eachBatch(s, s.base, w.opt.Throttle, func(h *record.Header, b []byte) error {
			w.st.BytesRead += int64(len(b))
			if err := w.opt.Ctx.Err(); err != nil {
				return err
			}
			out, err := w.filter(s, h, b)
			if err != nil || out == nil {
				return err
			}
			oh, err := record.ParseHeader(out)
			if err != nil {
				return err
			}
			buf = append(buf, out...)
			ns.track(&oh, pos, len(out), interval)
			pos += int64(len(out))
			w.st.BytesWritten += int64(len(out))
			if len(buf) >= 1<<20 {
				if err := flush(); err != nil {
					return l.fail(fmt.Errorf("write %s: %w", tmp, err))
				}
			}
			return nil
		})
		if err != nil {
			abandon()
			return err
		}
	}
	if err := flush(); err != nil {
		abandon()
		return l.fail(fmt.Errorf("write %s: %w", tmp, err))
	}
	if err := f.Sync(); err != nil {
		abandon()
		return l.fail(fmt.Errorf("sync %s: %w", tmp, err))
	}
	return l.swapGroup(group, ns, tmp, end, w.gen)
}

// swapGroup replaces group by ns on disk and in the segment list, under
// mu so that retention, DeleteRecords, truncations and Close see one or
// the other. A truncation since the pass began (gen) abandons it.
func (l *Log) swapGroup(group []*segment, ns *segment, tmp string, end, gen int64) error {
	l.mu.Lock()
	k := -1
	for i, s := range l.segs {
		if s == group[0] {
			k = i
			break
		}
	}
	ok := !l.closed && l.Err() == nil && k >= 0 && k+len(group) < len(l.segs) && l.truncations.Load() == gen
	for j := 0; ok && j < len(group); j++ {
		ok = l.segs[k+j] == group[j]
	}
	if !ok {
		l.mu.Unlock()
		ns.unref()
		l.fs.Remove(tmp)
		return errAbandoned
	}
	fail := func(err error) error {
		l.mu.Unlock()
		ns.unref()
		return l.fail(err)
	}
	if !l.gaps {
		// Durable before the first gap exists on disk.
		if err := l.writeCleanerCheckpoint(l.firstDirty.Load()); err != nil {
			return fail(err)
		}
		l.gaps = true
	}
	swap := filepath.Join(l.dir, groupFileName(ns.base, end, swapSuffix))
	if err := l.fs.Rename(tmp, swap); err != nil {
		return fail(fmt.Errorf("rename %s: %w", tmp, err))
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fail(fmt.Errorf("sync dir: %w", err))
	}
	for _, s := range group {
		if err := l.removeSegmentFiles(s.base); err != nil {
			return fail(fmt.Errorf("remove segment %d: %w", s.base, err))
		}
	}
	if err := l.fs.Rename(swap, ns.path); err != nil {
		return fail(fmt.Errorf("rename %s: %w", swap, err))
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fail(fmt.Errorf("sync dir: %w", err))
	}
	segs := make([]*segment, 0, len(l.segs)-len(group)+1)
	segs = append(segs, l.segs[:k]...)
	segs = append(segs, ns)
	segs = append(segs, l.segs[k+len(group):]...)
	l.segs = segs
	l.publish()
	for _, s := range group {
		s.unref()
	}
	// The index files only spare the next Open a scan: written after
	// appends may go on again (a crash before leaves a segment to scan).
	ns.tryRef() // cannot fail: the list holds a reference
	l.mu.Unlock()
	defer ns.unref()
	if err := l.writeIndexes(ns); err != nil {
		return l.fail(err)
	}
	return nil
}
