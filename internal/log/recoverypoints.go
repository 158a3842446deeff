package log

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/vfs"
)

// PartitionKey names a partition in the recovery point file. The topic id
// is part of it, so a topic deleted and created again under the same name
// never inherits the old topic's recovery points.
type PartitionKey struct {
	Topic     string
	Partition int32
	TopicID   [16]byte
}

// RecoveryPoints maps partitions to their recovery points.
type RecoveryPoints map[PartitionKey]int64

// recoveryPointsVersion is the file format this binary writes and reads.
const recoveryPointsVersion = 1

// maxRecoveryPointsFile bounds what ReadRecoveryPoints reads: about 100
// bytes a partition, for the 100000 partitions a topic may have, with room.
const maxRecoveryPointsFile = 64 << 20

// ReadRecoveryPoints reads the recovery point file at path; a missing file
// is an empty map. The format (Kafka's checkpoint files, with the topic id
// added): a line with the version (1), a line with the entry count, then
// one "topic partition offset topic-id" line per partition.
func ReadRecoveryPoints(fsys vfs.FS, path string) (RecoveryPoints, error) {
	b, err := vfs.ReadFile(fsys, path, maxRecoveryPointsFile)
	if errors.Is(err, fs.ErrNotExist) {
		return RecoveryPoints{}, nil
	}
	if err != nil {
		return nil, err
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s (it holds each partition's recovery point: move it away to start without them, and damage in the newest data of each partition will pass for a torn write)",
			path, fmt.Sprintf(format, args...))
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 2 {
		return nil, bad("truncated")
	}
	version, err := strconv.Atoi(lines[0])
	if err != nil {
		return nil, bad("first line %q is not a version", lines[0])
	}
	if version > recoveryPointsVersion {
		return nil, fmt.Errorf("%s has format version %d, newer than this binary reads (up to %d): run the exactly version that wrote it, or a newer one",
			path, version, recoveryPointsVersion)
	}
	if version != recoveryPointsVersion {
		return nil, bad("unknown version %d", version)
	}
	n, err := strconv.Atoi(lines[1])
	if err != nil || n != len(lines)-2 {
		return nil, bad("says %q entries, holds %d", lines[1], len(lines)-2)
	}
	out := make(RecoveryPoints, n)
	for _, line := range lines[2:] {
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, bad("line %q is not \"topic partition offset topic-id\"", line)
		}
		part, perr := strconv.ParseInt(f[1], 10, 32)
		off, oerr := strconv.ParseInt(f[2], 10, 64)
		id, ierr := base64.RawURLEncoding.DecodeString(f[3])
		if perr != nil || oerr != nil || ierr != nil || len(id) != 16 || part < 0 || off < 0 {
			return nil, bad("line %q is not \"topic partition offset topic-id\"", line)
		}
		k := PartitionKey{Topic: f[0], Partition: int32(part)}
		copy(k.TopicID[:], id)
		out[k] = off
	}
	return out, nil
}

// WriteRecoveryPoints replaces the file at path atomically. Callers must
// only store offsets their logs reported after fsyncing (RecoveryPoint):
// "below the recovery point" must be true whenever the file is read.
func WriteRecoveryPoints(fsys vfs.FS, path string, rps RecoveryPoints) error {
	keys := make([]PartitionKey, 0, len(rps))
	for k := range rps {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].Topic != keys[j].Topic {
			return keys[i].Topic < keys[j].Topic
		}
		return keys[i].Partition < keys[j].Partition
	})
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d\n%d\n", recoveryPointsVersion, len(keys))
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s %d %d %s\n", k.Topic, k.Partition, rps[k], base64.RawURLEncoding.EncodeToString(k.TopicID[:]))
	}
	return vfs.WriteFileAtomic(fsys, path, []byte(sb.String()))
}
