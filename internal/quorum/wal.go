package quorum

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/vfs"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"
)

// The write-ahead log is a sequence of segment files named
// wal-<seq as 16 hex digits>.log. Records are appended to the last one; a
// new segment starts when the last one exceeds segmentBytes and after every
// snapshot, and always begins with the current hard state, so that an older
// segment is needed only for its entries. Segments wholly at or below the
// latest snapshot's index are removed.

const (
	walPrefix = "wal-"
	walSuffix = ".log"
	// defaultSegmentBytes is the size after which a new segment starts.
	defaultSegmentBytes = 8 << 20
)

type segment struct {
	seq      uint64
	path     string
	maxIndex uint64 // highest entry index written to the segment; 0 if none
}

// wal appends entries and hard states to segment files. It is used from
// one goroutine (the node's Ready loop) and is not safe for concurrent use.
type wal struct {
	fs           vfs.FS
	dir          string
	log          *slog.Logger
	segmentBytes int64
	// maxRecord bounds one record's payload, on write and on replay.
	maxRecord int

	segs   []segment
	f      vfs.File // the last segment, open for append
	size   int64
	lastHS *pb.HardState
	buf    []byte
	// failed is sticky: after a failed write or sync the WAL's state on
	// disk is unknown, so it refuses everything after.
	failed error
}

func segmentName(seq uint64) string {
	return fmt.Sprintf("%s%016x%s", walPrefix, seq, walSuffix)
}

func parseSegmentName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, walPrefix) || !strings.HasSuffix(name, walSuffix) {
		return 0, false
	}
	hex := strings.TrimSuffix(strings.TrimPrefix(name, walPrefix), walSuffix)
	if len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// walReplay is what opening the WAL recovered.
type walReplay struct {
	hs   *pb.HardState // nil if none was ever written
	ents []*pb.Entry   // the log after snapIndex, in order, contiguous
}

// openWAL replays every segment of dir in order, keeping the entries above
// snapIndex, and opens the last segment for appending. A torn record at the
// end of the last segment is truncated; any other bad record is an error
// naming the file and offset.
func openWAL(fsys vfs.FS, dir string, snapIndex uint64, opts storageOptions, log *slog.Logger) (*wal, walReplay, error) {
	w := &wal{fs: fsys, dir: dir, log: log, segmentBytes: opts.segmentBytes, maxRecord: opts.maxRecord}
	if w.segmentBytes <= 0 {
		w.segmentBytes = defaultSegmentBytes
	}
	if w.maxRecord <= 0 {
		w.maxRecord = maxWALRecordBytes
	}
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, walReplay{}, err
	}
	for _, name := range names {
		if seq, ok := parseSegmentName(name); ok {
			w.segs = append(w.segs, segment{seq: seq, path: filepath.Join(dir, name)})
		}
	}
	var rep walReplay
	last := snapIndex // index of the last entry kept (or the snapshot's)
	for i := range w.segs {
		seg := &w.segs[i]
		isLast := i == len(w.segs)-1
		err := w.replaySegment(seg, isLast, func(typ byte, payload []byte, off int64) error {
			switch typ {
			case recHardState:
				hs := &pb.HardState{}
				if err := proto.Unmarshal(payload, hs); err != nil {
					return fmt.Errorf("%s at offset %d: hard state: %w", seg.path, off, err)
				}
				rep.hs = hs
			case recSnapshot:
				m := &pb.Entry{}
				if err := proto.Unmarshal(payload, m); err != nil {
					return fmt.Errorf("%s at offset %d: snapshot marker: %w", seg.path, off, err)
				}
				if m.GetIndex() > snapIndex {
					return fmt.Errorf("%s at offset %d: the log was replaced by snapshot %d, but the newest snapshot file is at %d", seg.path, off, m.GetIndex(), snapIndex)
				}
				seg.maxIndex = max(seg.maxIndex, m.GetIndex())
				rep.ents = rep.ents[:0]
				last = snapIndex
			case recEntry:
				e := &pb.Entry{}
				if err := proto.Unmarshal(payload, e); err != nil {
					return fmt.Errorf("%s at offset %d: entry: %w", seg.path, off, err)
				}
				idx := e.GetIndex()
				if idx == 0 {
					return fmt.Errorf("%s at offset %d: entry without an index", seg.path, off)
				}
				seg.maxIndex = max(seg.maxIndex, idx)
				// Writing entry idx truncated every entry from idx on.
				if idx <= last {
					keep := max(idx, snapIndex+1) - snapIndex - 1
					if keep < uint64(len(rep.ents)) {
						rep.ents = rep.ents[:keep]
					}
					last = max(snapIndex, idx-1)
				}
				if idx <= snapIndex {
					return nil
				}
				if idx != last+1 {
					return fmt.Errorf("%s at offset %d: entry %d does not follow entry %d", seg.path, off, idx, last)
				}
				rep.ents = append(rep.ents, e)
				last = idx
			}
			return nil
		})
		if err != nil {
			return nil, walReplay{}, err
		}
	}
	w.lastHS = rep.hs
	if len(w.segs) == 0 {
		if err := w.startSegment(1); err != nil {
			return nil, walReplay{}, err
		}
		return w, rep, nil
	}
	lastSeg := w.segs[len(w.segs)-1]
	f, err := fsys.OpenFile(lastSeg.path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, walReplay{}, err
	}
	size, err := f.Size()
	if err != nil {
		f.Close()
		return nil, walReplay{}, err
	}
	w.f, w.size = f, size
	return w, rep, nil
}

// replaySegment calls fn for every record of seg. A bad record is a torn
// tail only in the last segment and only when isTornTail says so; then the
// segment is truncated there and made durable.
func (w *wal) replaySegment(seg *segment, isLast bool, fn func(typ byte, payload []byte, off int64) error) error {
	f, err := w.fs.OpenFile(seg.path, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return err
	}
	var off int64
	for off < size {
		typ, payload, n, bad, err := readRecord(f, off, size, w.maxRecord)
		if err != nil {
			return fmt.Errorf("%s at offset %d: %w", seg.path, off, err)
		}
		if bad != nil {
			torn := false
			if isLast {
				if torn, err = isTornTail(f, size, bad); err != nil {
					return fmt.Errorf("%s at offset %d: %w", seg.path, off, err)
				}
			}
			if !torn {
				return fmt.Errorf("%s at offset %d: %s (not a torn tail: refusing to truncate durable data)", seg.path, off, bad.reason)
			}
			w.log.Warn("truncating torn tail of the raft log", "file", seg.path, "offset", off, "size", size, "reason", bad.reason)
			return w.truncate(seg.path, off)
		}
		if err := fn(typ, payload, off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

func (w *wal) truncate(path string, size int64) error {
	f, err := w.fs.OpenFile(path, os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// startSegment creates segment seq, writes the last hard state to it and
// makes both the file and its directory entry durable.
func (w *wal) startSegment(seq uint64) error {
	path := filepath.Join(w.dir, segmentName(seq))
	f, err := w.fs.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	var buf []byte
	if w.lastHS != nil {
		b, err := proto.Marshal(w.lastHS)
		if err != nil {
			f.Close()
			return err
		}
		buf = appendRecord(nil, recHardState, b)
	}
	if _, err = f.Write(buf); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = w.fs.SyncDir(w.dir)
	}
	if err != nil {
		f.Close()
		return err
	}
	if w.f != nil {
		w.f.Close()
	}
	w.f, w.size = f, int64(len(buf))
	w.segs = append(w.segs, segment{seq: seq, path: path})
	return nil
}

// save appends a snapshot marker (if snap is not nil: the log was replaced
// by that snapshot, whose file is already durable), ents and then hs (any
// may be empty) and, if sync, makes
// them durable before returning. Entries come before the hard state so a
// torn tail can lose a hard state whose commit index names entries, never
// keep it without them.
func (w *wal) save(snap *pb.SnapshotMetadata, hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	if w.failed != nil {
		return w.failed
	}
	if err := w.saveLocked(snap, hs, ents, sync); err != nil {
		w.failed = fmt.Errorf("raft log write failed, refusing further writes: %w", err)
		return w.failed
	}
	return nil
}

func (w *wal) saveLocked(snap *pb.SnapshotMetadata, hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	w.buf = w.buf[:0]
	seg := &w.segs[len(w.segs)-1]
	if snap != nil {
		b, err := proto.Marshal(&pb.Entry{Index: new(snap.GetIndex()), Term: new(snap.GetTerm())})
		if err != nil {
			return err
		}
		w.buf = appendRecord(w.buf, recSnapshot, b)
		seg.maxIndex = max(seg.maxIndex, snap.GetIndex())
	}
	for _, e := range ents {
		b, err := proto.Marshal(e)
		if err != nil {
			return err
		}
		if len(b) > w.maxRecord {
			return fmt.Errorf("entry %d is %d bytes, more than the %d limit", e.GetIndex(), len(b), w.maxRecord)
		}
		w.buf = appendRecord(w.buf, recEntry, b)
		seg.maxIndex = max(seg.maxIndex, e.GetIndex())
	}
	if hs != nil {
		b, err := proto.Marshal(hs)
		if err != nil {
			return err
		}
		w.buf = appendRecord(w.buf, recHardState, b)
	}
	if len(w.buf) == 0 {
		return nil
	}
	n, err := w.f.Write(w.buf)
	w.size += int64(n)
	if err != nil {
		return err
	}
	if sync {
		if err := w.f.Sync(); err != nil {
			return err
		}
	}
	if hs != nil {
		w.lastHS = proto.Clone(hs).(*pb.HardState)
	}
	if w.size >= w.segmentBytes {
		if !sync {
			if err := w.f.Sync(); err != nil {
				return err
			}
		}
		return w.startSegment(seg.seq + 1)
	}
	return nil
}

// releaseTo starts a new segment and removes every older segment whose
// entries are all at or below snapIndex (a durable snapshot covers them).
func (w *wal) releaseTo(snapIndex uint64) error {
	if w.failed != nil {
		return w.failed
	}
	if err := w.f.Sync(); err != nil {
		w.failed = err
		return err
	}
	if err := w.startSegment(w.segs[len(w.segs)-1].seq + 1); err != nil {
		w.failed = err
		return err
	}
	removed := 0
	for len(w.segs) > 1 && w.segs[0].maxIndex <= snapIndex {
		if err := w.fs.Remove(w.segs[0].path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		w.segs = w.segs[1:]
		removed++
	}
	if removed > 0 {
		return w.fs.SyncDir(w.dir)
	}
	return nil
}

func (w *wal) close() error {
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}
