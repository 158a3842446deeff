package quorum

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/vfs"
	"google.golang.org/protobuf/proto"

	pb "go.etcd.io/raft/v3/raftpb"
)

// A snapshot file, snap-<term 16 hex>-<index 16 hex>.snap, holds
//
//	magic  [4]byte  "EXQS"
//	crc    uint32 LE  CRC-32C of the body
//	body   protobuf raftpb.Snapshot (metadata with the ConfState, and data)
//
// It is written with vfs.WriteFileAtomic, so a crash leaves the whole file or
// none; a file that fails its check is damage and an error, never skipped.
const (
	snapPrefix = "snap-"
	snapSuffix = ".snap"
	snapMagic  = "EXQS"
	// keepSnapshots is how many snapshot files stay on disk; the older one
	// is a spare for inspection only.
	keepSnapshots = 2
)

func snapshotName(term, index uint64) string {
	return fmt.Sprintf("%s%016x-%016x%s", snapPrefix, term, index, snapSuffix)
}

func parseSnapshotName(name string) (term, index uint64, ok bool) {
	if !strings.HasPrefix(name, snapPrefix) || !strings.HasSuffix(name, snapSuffix) {
		return 0, 0, false
	}
	parts := strings.Split(strings.TrimSuffix(strings.TrimPrefix(name, snapPrefix), snapSuffix), "-")
	if len(parts) != 2 || len(parts[0]) != 16 || len(parts[1]) != 16 {
		return 0, 0, false
	}
	term, err1 := strconv.ParseUint(parts[0], 16, 64)
	index, err2 := strconv.ParseUint(parts[1], 16, 64)
	return term, index, err1 == nil && err2 == nil
}

func encodeSnapshotFile(snap *pb.Snapshot) ([]byte, error) {
	body, err := proto.Marshal(snap)
	if err != nil {
		return nil, err
	}
	if len(body) > maxSnapshotFileBytes-8 {
		return nil, fmt.Errorf("snapshot of %d bytes exceeds the %d limit", len(body), maxSnapshotFileBytes-8)
	}
	out := make([]byte, 8, 8+len(body))
	copy(out, snapMagic)
	binary.LittleEndian.PutUint32(out[4:8], crc32.Checksum(body, castagnoli))
	return append(out, body...), nil
}

// decodeSnapshotFile checks and decodes the contents of a snapshot file.
func decodeSnapshotFile(b []byte) (*pb.Snapshot, error) {
	if len(b) < 8 || string(b[:4]) != snapMagic {
		return nil, errors.New("not a snapshot file (bad magic)")
	}
	if crc32.Checksum(b[8:], castagnoli) != binary.LittleEndian.Uint32(b[4:8]) {
		return nil, errors.New("snapshot CRC mismatch")
	}
	snap := &pb.Snapshot{}
	if err := proto.Unmarshal(b[8:], snap); err != nil {
		return nil, err
	}
	return pb.EnsureSnapshot(snap), nil
}

type snapFile struct {
	term, index uint64
	name        string
}

// listSnapshots returns the snapshot files of dir, oldest first.
func listSnapshots(fsys vfs.FS, dir string) ([]snapFile, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []snapFile
	for _, n := range names {
		if term, index, ok := parseSnapshotName(n); ok {
			out = append(out, snapFile{term: term, index: index, name: n})
		}
	}
	// Names sort by term first; order by index, which is what matters.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].index < out[j-1].index; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, nil
}

// loadNewestSnapshot reads the snapshot with the highest index, or returns
// nil if there is none.
func loadNewestSnapshot(fsys vfs.FS, dir string) (*pb.Snapshot, error) {
	files, err := listSnapshots(fsys, dir)
	if err != nil || len(files) == 0 {
		return nil, err
	}
	f := files[len(files)-1]
	path := filepath.Join(dir, f.name)
	b, err := vfs.ReadFile(fsys, path, maxSnapshotFileBytes)
	if err != nil {
		return nil, err
	}
	snap, err := decodeSnapshotFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if snap.GetMetadata().GetIndex() != f.index || snap.GetMetadata().GetTerm() != f.term {
		return nil, fmt.Errorf("%s: holds snapshot %d at term %d, not the one its name says", path, snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm())
	}
	return snap, nil
}

// writeSnapshot makes snap durable and removes all but the newest
// keepSnapshots snapshot files.
func writeSnapshot(fsys vfs.FS, dir string, snap *pb.Snapshot) error {
	b, err := encodeSnapshotFile(snap)
	if err != nil {
		return err
	}
	md := snap.GetMetadata()
	if err := vfs.WriteFileAtomic(fsys, filepath.Join(dir, snapshotName(md.GetTerm(), md.GetIndex())), b); err != nil {
		return err
	}
	files, err := listSnapshots(fsys, dir)
	if err != nil {
		return err
	}
	for len(files) > keepSnapshots {
		if err := fsys.Remove(filepath.Join(dir, files[0].name)); err != nil {
			return err
		}
		files = files[1:]
	}
	return nil
}
