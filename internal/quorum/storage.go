package quorum

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/exactly/exactly/internal/vfs"
	"go.etcd.io/raft/v3"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"
)

// diskStorage is the durable raft storage of one node: the WAL and snapshot
// files are the truth, and a raft.MemoryStorage mirror fed from them answers
// raft's reads (raft.Storage is implemented by the embedded mirror).
//
// Writes (save, snapshot) come from the Ready loop only; raft reads the
// mirror from the same goroutine. The mirror has its own lock, so Status
// readers elsewhere are safe too.
type diskStorage struct {
	*raft.MemoryStorage

	fs    vfs.FS
	dir   string
	log   *slog.Logger
	wal   *wal
	lock  io.Closer
	dirID DirectoryID
	peers *peerDirs

	// empty says the directory held no raft state when opened: the node
	// bootstraps.
	empty     bool
	snapIndex uint64
}

// storageOptions are the knobs tests turn; zero values are the defaults.
type storageOptions struct {
	segmentBytes int64
	// maxRecord bounds a WAL record (default maxWALRecordBytes).
	maxRecord int
	// group opens a partition group's storage: no directory identity and
	// no remembered peers (the metadata quorum's handshake covers the
	// connection).
	group bool
}

// openStorage opens (creating if needed) the raft storage in dir: it takes
// the directory lock, checks the directory's identity, loads the newest
// snapshot, replays the WAL and fills the mirror.
func openStorage(fsys vfs.FS, dir, clusterID string, nodeID uint64, opts storageOptions, log *slog.Logger) (_ *diskStorage, err error) {
	if err := vfs.MkdirAllDurable(fsys, dir); err != nil {
		return nil, err
	}
	lock, err := fsys.Lock(filepath.Join(dir, lockFile))
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	s := &diskStorage{MemoryStorage: raft.NewMemoryStorage(), fs: fsys, dir: dir, log: log, lock: lock}
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	hasState := false
	for _, n := range names {
		_, isSeg := parseSegmentName(n)
		_, _, isSnap := parseSnapshotName(n)
		hasState = hasState || isSeg || isSnap
	}
	if !opts.group {
		if s.dirID, err = loadOrCreateMeta(fsys, dir, clusterID, nodeID, hasState); err != nil {
			return nil, err
		}
		if s.peers, err = loadPeerDirs(fsys, dir); err != nil {
			return nil, err
		}
	}
	snap, err := loadNewestSnapshot(fsys, dir)
	if err != nil {
		return nil, err
	}
	if snap != nil {
		s.snapIndex = snap.GetMetadata().GetIndex()
		if err := s.MemoryStorage.ApplySnapshot(snap); err != nil {
			return nil, err
		}
	}
	w, rep, err := openWAL(fsys, dir, s.snapIndex, opts, log)
	if err != nil {
		return nil, err
	}
	s.wal = w
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if err := s.MemoryStorage.Append(rep.ents); err != nil {
		return nil, err
	}
	last, _ := s.MemoryStorage.LastIndex()
	if rep.hs != nil {
		hs := proto.Clone(rep.hs).(*pb.HardState)
		// A snapshot is committed by definition; its file may be newer
		// than the last hard state written (it is made durable first).
		if hs.GetCommit() < s.snapIndex {
			hs.Commit = new(s.snapIndex)
		}
		if hs.GetCommit() > last {
			return nil, fmt.Errorf("%s: hard state commits index %d, but the log ends at %d", dir, hs.GetCommit(), last)
		}
		if err := s.MemoryStorage.SetHardState(hs); err != nil {
			return nil, err
		}
	} else if snap != nil {
		if err := s.MemoryStorage.SetHardState(&pb.HardState{Term: new(snap.GetMetadata().GetTerm()), Commit: new(s.snapIndex)}); err != nil {
			return nil, err
		}
	}
	s.empty = snap == nil && rep.hs == nil && len(rep.ents) == 0
	return s, nil
}

// save makes what a Ready asks durable, in the order a crash can tolerate:
// the snapshot file first (atomic), then the WAL (snapshot marker, entries,
// hard state) with an fsync when sync, and only then updates the mirror.
func (s *diskStorage) save(snap *pb.Snapshot, hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	var marker *pb.SnapshotMetadata
	if snap != nil && !raft.IsEmptySnap(snap) {
		if err := writeSnapshot(s.fs, s.dir, snap); err != nil {
			s.wal.failed = fmt.Errorf("snapshot write failed, refusing further writes: %w", err)
			return s.wal.failed
		}
		marker = snap.GetMetadata()
	}
	if hs != nil && raft.IsEmptyHardState(hs) {
		hs = nil
	}
	if err := s.wal.save(marker, hs, ents, sync || marker != nil); err != nil {
		return err
	}
	if marker != nil {
		if err := s.MemoryStorage.ApplySnapshot(snap); err != nil {
			return err
		}
		s.snapIndex = marker.GetIndex()
		if err := s.wal.releaseTo(s.snapIndex); err != nil {
			return err
		}
	}
	if hs != nil {
		if err := s.MemoryStorage.SetHardState(hs); err != nil {
			return err
		}
	}
	return s.MemoryStorage.Append(ents)
}

// snapshot records a snapshot of the applied state at index, compacts the
// mirror to keep entries above index-keep (for followers slightly behind),
// and releases WAL segments at or below index.
func (s *diskStorage) snapshot(index uint64, cs *pb.ConfState, data []byte, keep uint64) error {
	snap, err := s.MemoryStorage.CreateSnapshot(index, cs, data)
	if err != nil {
		return err
	}
	if err := writeSnapshot(s.fs, s.dir, snap); err != nil {
		return err
	}
	s.snapIndex = index
	if index > keep {
		if first, _ := s.MemoryStorage.FirstIndex(); index-keep >= first {
			if err := s.MemoryStorage.Compact(index - keep); err != nil {
				return err
			}
		}
	}
	return s.wal.releaseTo(index)
}

func (s *diskStorage) close() error {
	err := s.wal.close()
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	return err
}
