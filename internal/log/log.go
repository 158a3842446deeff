package log

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// Config holds the per-topic settings that shape a log. Start from
// DefaultConfig: zero segment settings mean the default, but zero retention
// values are taken literally (as in Kafka).
type Config struct {
	// SegmentBytes is log.segment.bytes: a segment is rolled before an
	// append would make it exceed this size (a batch larger than it still
	// gets a segment of its own). At most math.MaxInt32; <= 0 means default.
	SegmentBytes int64
	// SegmentMs is log.roll.ms: the active segment is rolled when its first
	// batch was appended at least this long ago. <= 0 means default.
	SegmentMs int64
	// IndexIntervalBytes is log.index.interval.bytes: the spacing of sparse
	// index entries, trading memory and index size for read-time scanning.
	// 0 indexes every batch; negative means default.
	IndexIntervalBytes int
	// RetentionMs is log.retention.ms: ApplyRetention deletes closed
	// segments whose largest timestamp is older than this. -1 (any negative
	// value) is unlimited.
	RetentionMs int64
	// RetentionBytes is log.retention.bytes: ApplyRetention deletes the
	// oldest closed segments while the log stays at least this big without
	// them. -1 (any negative value) is unlimited.
	RetentionBytes int64
	// CacheTailBytes is log.cache.tail.bytes: how much of the active
	// segment's durable tail stays in the page cache. Once an fsync has
	// made data older than that clean, Sync asks the kernel to drop it
	// (posix_fadvise DONTNEED), so new appends reuse those pages instead
	// of taking fresh ones; readers of older data read it from disk.
	// Negative leaves the page cache to the kernel; 0 means default.
	CacheTailBytes int64
}

// DefaultConfig returns Kafka's defaults: 1 GiB segments rolled after 7
// days, an index entry every 4 KiB, 7 days of retention, no size limit.
func DefaultConfig() Config {
	return Config{
		SegmentBytes:       1 << 30,
		SegmentMs:          7 * 24 * time.Hour.Milliseconds(),
		IndexIntervalBytes: 4096,
		RetentionMs:        7 * 24 * time.Hour.Milliseconds(),
		RetentionBytes:     -1,
		CacheTailBytes:     DefaultCacheTailBytes,
	}
}

// DefaultCacheTailBytes is log.cache.tail.bytes' default: a consumer up to
// 128 MiB behind a partition's end reads from memory.
const DefaultCacheTailBytes = 128 << 20

func (c Config) normalized() Config {
	d := DefaultConfig()
	if c.SegmentBytes <= 0 {
		c.SegmentBytes = d.SegmentBytes
	}
	c.SegmentBytes = min(c.SegmentBytes, math.MaxInt32)
	if c.SegmentMs <= 0 {
		c.SegmentMs = d.SegmentMs
	}
	if c.IndexIntervalBytes < 0 {
		c.IndexIntervalBytes = d.IndexIntervalBytes
	}
	c.RetentionMs = max(c.RetentionMs, -1)
	c.RetentionBytes = max(c.RetentionBytes, -1)
	if c.CacheTailBytes == 0 {
		c.CacheTailBytes = d.CacheTailBytes
	}
	return c
}

// Errors returned by the log. Callers map ErrOffsetOutOfRange to
// OFFSET_OUT_OF_RANGE and ErrLogOffline to KAFKA_STORAGE_ERROR.
var (
	// ErrOffsetOutOfRange is returned for offsets below the log start offset
	// or above the log end offset.
	ErrOffsetOutOfRange = errors.New("log: offset out of range")
	// ErrLogOffline wraps the I/O error that took the log offline; once
	// returned, it is returned forever by this *Log.
	ErrLogOffline = errors.New("log: offline after I/O error")
	// ErrClosed is returned by operations on a closed log.
	ErrClosed = errors.New("log: closed")
)

// Log is one partition's log. All methods are safe for concurrent use:
// appends and structural changes are serialized by a mutex, fsyncs by
// another (so appends continue during an fsync), and reads work on a
// snapshot of the segment list without taking either.
type Log struct {
	fs     vfs.FS
	dir    string
	logger *slog.Logger
	now    func() time.Time // replaced in tests

	mu     sync.Mutex // serializes appends, rolls, retention, truncation, close
	cfg    Config
	segs   []*segment // never mutated in place once published
	closed bool

	// view is the published segment list for readers; replaced, never
	// mutated, under mu.
	view    atomic.Pointer[[]*segment]
	next    atomic.Int64 // log end offset
	start   atomic.Int64 // log start offset
	durable atomic.Int64 // everything below is fsynced
	failure atomic.Pointer[error]
	isShut  atomic.Bool
	// corruption is the damage that took the log offline, if that is why.
	corruption atomic.Pointer[CorruptionError]
	// recoveryPoint is what Open was told is durable (see OpenAt), as
	// far as Open trusts it (see truncate.go); a truncation lowers it.
	recoveryPoint atomic.Int64

	syncMu sync.Mutex // serializes fsyncs: the group commit lock

	// cleanMu serializes cleanings of this log (Clean); taken before mu.
	cleanMu sync.Mutex
	// gaps: the log was compacted, so offsets may jump between batches
	// (set under mu, or by Open; the cleaner checkpoint file records it).
	gaps bool
	// firstDirty is the cleaner's position: everything below was cleaned
	// with a key map that covered it (see clean.go).
	firstDirty atomic.Int64
	// truncations is raised (under mu) when a TruncateTo or ResetTo
	// begins and when it ends, so it is odd during one: a cleaning that
	// saw another value when it began must not swap in what it read.
	truncations atomic.Int64
	// truncCeiling is the ceiling of the truncation file, -1 without one
	// (see truncate.go). Under mu.
	truncCeiling int64
}

// Open opens the log in dir, creating the directory if missing and
// recovering from whatever a crash left there (see the package
// documentation), knowing nothing durable about the last segment: OpenAt
// with recovery point 0. A nil logger discards log lines.
func Open(fsys vfs.FS, dir string, cfg Config, logger *slog.Logger) (*Log, error) {
	return OpenAt(fsys, dir, cfg, logger, 0)
}

// OpenAt opens the log in dir like Open, given its recovery point: an
// offset below which everything was fsynced before (RecoveryPoint of an
// earlier run, stored durably after the fsync it covers). Damage in the
// last segment at or above it is a torn tail and is truncated; damage
// below it, or in any earlier segment (fsynced when rolled), is
// corruption: the log opens offline with a CorruptionError and every file
// is left as it was.
func OpenAt(fsys vfs.FS, dir string, cfg Config, logger *slog.Logger, recoveryPoint int64) (*Log, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		fs:           fsys,
		dir:          dir,
		logger:       logger.With("log", dir),
		now:          time.Now,
		cfg:          cfg.normalized(),
		truncCeiling: -1,
	}
	l.recoveryPoint.Store(recoveryPoint)
	if err := vfs.MkdirAllDurable(l.fs, l.dir); err != nil {
		return nil, err
	}
	if err := l.recover(); err != nil {
		for _, s := range l.segs {
			s.unref()
		}
		return nil, fmt.Errorf("log: open %s: %w", dir, err)
	}
	return l, nil
}

func (l *Log) publish() {
	segs := l.segs
	l.view.Store(&segs)
}

func (l *Log) active() *segment { return l.segs[len(l.segs)-1] }

// fail takes the log offline with err, unless it already is, and returns the
// sticky error.
func (l *Log) fail(err error) error {
	werr := fmt.Errorf("%w: %w", ErrLogOffline, err)
	if l.failure.CompareAndSwap(nil, &werr) {
		l.logger.Error("log offline", "err", err)
		return werr
	}
	return *l.failure.Load()
}

// Err returns the error that took the log offline, or nil while it is
// healthy; it wraps ErrLogOffline.
func (l *Log) Err() error {
	if p := l.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// usable returns the error every operation on a closed or offline log gets.
func (l *Log) usable() error {
	if err := l.Err(); err != nil {
		return err
	}
	if l.isShut.Load() {
		return ErrClosed
	}
	return nil
}

func (l *Log) raiseDurable(off int64) {
	for {
		d := l.durable.Load()
		if off <= d || l.durable.CompareAndSwap(d, off) {
			return
		}
	}
}

// writebackMin is the batch size from which Append starts the batch's
// writeback at once; small batches are left to the next fsync.
const writebackMin = 64 << 10

// Append writes one record batch to the log and returns its base offset.
//
// batch must be a whole, already validated v2 batch (the CRC is not
// rechecked); Append stamps the base offset into batch in place, writes it
// without fsync and advances NextOffset by lastOffsetDelta+1. The log does
// not keep batch. If the active segment is full or old, Append first rolls
// to a new segment, which fsyncs the old one. Errors other than a malformed
// batch take the log offline.
func (l *Log) Append(batch []byte) (int64, error) {
	h, err := record.ParseHeader(batch)
	if err != nil {
		return -1, err
	}
	if h.Size() != len(batch) || h.LastOffsetDelta < 0 {
		return -1, fmt.Errorf("%w: batch of %d bytes declares %d, last offset delta %d",
			record.ErrInvalid, len(batch), h.Size(), h.LastOffsetDelta)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return -1, ErrClosed
	}
	if err := l.Err(); err != nil {
		return -1, err
	}
	seg := l.active()
	nowMs := l.now().UnixMilli()
	base := l.next.Load()
	if l.shouldRoll(seg, base, &h, len(batch), nowMs) {
		if seg, err = l.roll(base); err != nil {
			return -1, err
		}
	}
	record.SetBaseOffset(batch, base)
	h.BaseOffset = base
	pos := seg.size.Load()
	n, err := seg.f.Write(batch)
	if err == nil && n != len(batch) {
		err = io.ErrShortWrite
	}
	if err != nil {
		// Do not leave a partial batch behind. The log is offline anyway;
		// if this fails too, recovery truncates the torn batch.
		seg.f.Truncate(pos)
		return -1, l.fail(fmt.Errorf("append to %s: %w", seg.path, err))
	}
	if n >= writebackMin {
		// Start flushing a large batch now, so the fsync that
		// acknowledges it (group commit, moments later) waits for less.
		// Measured +20% acks=all throughput (BenchmarkProduceAcksAll).
		vfs.StartWriteback(seg.f, pos, int64(n))
	}
	if seg.rollStart < 0 {
		seg.rollStart = nowMs
	}
	seg.track(&h, pos, len(batch), l.cfg.IndexIntervalBytes)
	l.next.Store(h.LastOffset() + 1)
	return base, nil
}

func (l *Log) shouldRoll(seg *segment, base int64, h *record.Header, n int, nowMs int64) bool {
	size := seg.size.Load()
	if size == 0 {
		return false
	}
	return size+int64(n) > l.cfg.SegmentBytes ||
		base+int64(h.LastOffsetDelta)-seg.base > math.MaxInt32 ||
		(seg.rollStart >= 0 && nowMs-seg.rollStart >= l.cfg.SegmentMs)
}

// roll closes the active segment and starts a new one at base: fsync the old
// segment, write its index files, create the new segment, fsync the
// directory. Called with mu held.
func (l *Log) roll(base int64) (*segment, error) {
	old := l.active()
	if err := old.f.Sync(); err != nil {
		return nil, l.fail(fmt.Errorf("sync %s: %w", old.path, err))
	}
	l.raiseDurable(old.next.Load())
	if err := l.writeIndexes(old); err != nil {
		return nil, l.fail(err)
	}
	seg, err := l.createSegment(base)
	if err != nil {
		return nil, l.fail(err)
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		seg.unref()
		return nil, l.fail(fmt.Errorf("sync dir: %w", err))
	}
	l.segs = append(slices.Clip(l.segs), seg)
	l.publish()
	l.logger.Debug("rolled segment", "base", base, "previous", old.base, "previous_size", old.size.Load())
	return seg, nil
}

// createSegment creates an empty segment file at base, removing stale index
// files of an earlier segment with that base. The caller syncs the
// directory.
func (l *Log) createSegment(base int64) (*segment, error) {
	for _, suffix := range []string{indexSuffix, timeIndexSuffix} {
		p := filepath.Join(l.dir, segmentName(base, suffix))
		if err := l.fs.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	p := filepath.Join(l.dir, segmentName(base, logSuffix))
	f, err := l.fs.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return newSegment(l.dir, base, f), nil
}

// writeIndexes persists a segment's in-memory indexes, each through a
// fsynced temporary file renamed into place. The caller syncs the directory.
func (l *Log) writeIndexes(s *segment) error {
	idx, tidx := s.indexes()
	size, next, maxTs := s.size.Load(), s.next.Load(), s.maxTs.Load()
	if err := l.writeFileAtomic(segmentName(s.base, indexSuffix), encodeOffsetIndex(size, next, idx)); err != nil {
		return err
	}
	return l.writeFileAtomic(segmentName(s.base, timeIndexSuffix), encodeTimeIndex(size, maxTs, tidx))
}

// writeFileAtomic writes name in the log directory through
// vfs.WriteFileAtomic (temporary file, fsync, rename, directory fsync).
func (l *Log) writeFileAtomic(name string, data []byte) error {
	p := filepath.Join(l.dir, name)
	if err := vfs.WriteFileAtomic(l.fs, p, data); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// Sync returns once every batch below offset upto is durable (upto is
// clamped to NextOffset). It is a group commit: fsyncs are serialized, and
// each covers everything appended before it started, so concurrent callers
// waiting for nearby offsets share one fsync; callers whose offsets another
// fsync already covered return without one. A failed fsync takes the log
// offline.
func (l *Log) Sync(upto int64) error {
	if err := l.usable(); err != nil {
		return err
	}
	if l.durable.Load() >= upto {
		return nil
	}
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if l.durable.Load() >= upto {
		return nil
	}
	// Everything below target lives in seg or in earlier segments, which
	// rolling fsynced.
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	seg := l.active()
	target := l.next.Load()
	size, tail := seg.size.Load(), l.cfg.CacheTailBytes
	seg.tryRef() // cannot fail: the log holds a reference to the active segment
	l.mu.Unlock()
	defer seg.unref()
	if target <= l.durable.Load() {
		return nil
	}
	if err := seg.f.Sync(); err != nil {
		return l.fail(fmt.Errorf("sync %s: %w", seg.path, err))
	}
	l.raiseDurable(target)
	dropCache(seg, size, tail)
	return nil
}

// dropCacheStep is the least Sync drops from the page cache at a time,
// so that the advice costs one system call per several MiB appended.
const dropCacheStep = 8 << 20

// dropCache asks the kernel to drop seg's cached pages that are more than
// tail bytes behind durableSize, all of them clean: durableSize bytes of
// seg were just fsynced. Called with Log.syncMu held.
//
// Why: measured on a 2-vCPU KVM guest with virtio_balloon, 71% of the
// broker's CPU during acks=all produce went to the kernel copying appends
// into newly allocated page-cache pages, and a kept cache only ever takes
// new ones; pages dropped here return to the allocator and the next
// appends reuse them (exactly bench: idempotent produce 1.41x the MB/s at
// 0.65x the broker CPU per GB). Dropping clean pages loses nothing.
func dropCache(seg *segment, durableSize, tail int64) {
	if tail < 0 {
		return
	}
	end := durableSize - tail
	if end-seg.uncachedTo < dropCacheStep {
		return
	}
	vfs.DropCache(seg.f, seg.uncachedTo, end-seg.uncachedTo)
	seg.uncachedTo = end
}

// RecoveryPoint returns the offset below which everything is known to be
// fsynced, for storing durably: the durable offset, or, for a log that
// opened corrupt, the recovery point it was opened with (which must not
// be lost, or the damage would pass for a torn tail next time).
func (l *Log) RecoveryPoint() int64 { return max(l.recoveryPoint.Load(), l.durable.Load()) }

// DurableOffset returns the offset below which everything is fsynced. On a
// single node this is the high watermark: consumers may read below it.
func (l *Log) DurableOffset() int64 { return l.durable.Load() }

// NextOffset returns the log end offset: the offset the next appended
// record gets.
func (l *Log) NextOffset() int64 { return l.next.Load() }

// StartOffset returns the log start offset, the first readable offset.
func (l *Log) StartOffset() int64 { return l.start.Load() }

// SetConfig changes the configuration of a live log: new segment settings
// apply from the next append, retention settings from the next
// ApplyRetention.
func (l *Log) SetConfig(cfg Config) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg = cfg.normalized()
}

// Config returns the log's current (normalized) configuration.
func (l *Log) Config() Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cfg
}

// SegmentInfo describes one segment, for metrics and DescribeLogDirs.
type SegmentInfo struct {
	BaseOffset   int64 // first offset of the segment
	NextOffset   int64 // offset after its last batch
	Size         int64 // bytes in the .log file
	MaxTimestamp int64 // largest batch MaxTimestamp, -1 if none
}

// Segments describes the log's segments, oldest first.
func (l *Log) Segments() []SegmentInfo {
	segs := *l.view.Load()
	out := make([]SegmentInfo, len(segs))
	for i, s := range segs {
		out[i] = SegmentInfo{BaseOffset: s.base, NextOffset: s.next.Load(), Size: s.size.Load(), MaxTimestamp: s.maxTs.Load()}
	}
	return out
}

// Size returns the total size of the log's segment files in bytes.
func (l *Log) Size() int64 {
	var n int64
	for _, s := range *l.view.Load() {
		n += s.size.Load()
	}
	return n
}

// Close fsyncs the active segment, writes its index files and releases the
// log's files (each once in-flight reads finish). Later calls return
// ErrClosed; closing an offline log only releases its files.
func (l *Log) Close() error {
	return l.close(true)
}

func (l *Log) close(flush bool) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.closed = true
	l.isShut.Store(true)
	var err error
	if flush && l.Err() == nil {
		act := l.active()
		if serr := act.f.Sync(); serr != nil {
			err = l.fail(fmt.Errorf("sync %s: %w", act.path, serr))
		} else {
			l.raiseDurable(act.next.Load())
			if werr := l.writeIndexes(act); werr != nil {
				err = l.fail(werr)
			} else if derr := l.fs.SyncDir(l.dir); derr != nil {
				err = l.fail(fmt.Errorf("sync dir: %w", derr))
			}
		}
	}
	for _, s := range l.segs {
		s.unref()
	}
	return err
}

// Discard closes the log without flushing anything (the caller is about to
// delete its directory) and releases its files once in-flight reads finish.
func (l *Log) Discard() {
	l.close(false)
}
