package partition

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/vfs"
)

// MarkerName is the file in every partition directory the broker creates
// that names the topic it was created for (Kafka's partition.metadata,
// same contents: "version: 0" and "topic_id: <id>"). It is how the broker
// recognises its own directories: it only ever deletes a directory whose
// marker names a topic it deleted.
const MarkerName = "partition.metadata"

// ErrForeignDir means a partition directory exists that the topic being
// opened or created did not create.
var ErrForeignDir = errors.New("partition directory not created for this topic")

// TopicID is a topic's 16-byte id as the marker records it.
type TopicID = [16]byte

// ReadMarker returns the topic id dir's marker records; ok is false when
// dir has no marker.
func ReadMarker(fsys vfs.FS, dir string) (id TopicID, ok bool, err error) {
	p := filepath.Join(dir, MarkerName)
	b, err := vfs.ReadFile(fsys, p, 4<<10)
	if errors.Is(err, fs.ErrNotExist) {
		return id, false, nil
	}
	if err != nil {
		return id, false, err
	}
	var version, topicID string
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch strings.TrimSpace(k) {
		case "version":
			version = strings.TrimSpace(v)
		case "topic_id":
			topicID = strings.TrimSpace(v)
		}
	}
	if v, err := strconv.Atoi(version); err == nil && v > 0 {
		return id, false, fmt.Errorf("%s has version %d, newer than this binary reads (0)", p, v)
	}
	raw, derr := base64.RawURLEncoding.DecodeString(topicID)
	if version != "0" || derr != nil || len(raw) != len(id) {
		return id, false, fmt.Errorf("%s: not a version 0 partition.metadata with a topic_id", p)
	}
	copy(id[:], raw)
	return id, true, nil
}

// claimDir makes dir the directory of topic id: created (durably) if
// missing, and marked. A directory marked for another topic is refused; an
// unmarked one is marked (directories written before markers existed).
func claimDir(fsys vfs.FS, dir string, id TopicID) error {
	if err := vfs.MkdirAllDurable(fsys, dir); err != nil {
		return err
	}
	got, ok, err := ReadMarker(fsys, dir)
	if err != nil {
		return err
	}
	if ok {
		if got != id {
			return fmt.Errorf("%w: %s belongs to topic id %s, not %s", ErrForeignDir, dir,
				base64.RawURLEncoding.EncodeToString(got[:]), base64.RawURLEncoding.EncodeToString(id[:]))
		}
		return nil
	}
	return vfs.WriteFileAtomic(fsys, filepath.Join(dir, MarkerName), []byte(markerFor(id)))
}

// markerFor is the marker's content for topic id.
func markerFor(id TopicID) string {
	return "version: 0\ntopic_id: " + base64.RawURLEncoding.EncodeToString(id[:]) + "\n"
}

// tornMarker reports whether dir's marker.tmp is (a prefix of) the marker
// of topic id: claimDir was writing it when the process died.
func tornMarker(fsys vfs.FS, dir string, id TopicID) bool {
	b, err := vfs.ReadFile(fsys, filepath.Join(dir, MarkerName+".tmp"), 4<<10)
	return err == nil && strings.HasPrefix(markerFor(id), string(b))
}

// RemoveDir deletes the partition directory dir if topic id created it
// (its marker says so, or it holds only that marker half-written) or it is
// empty, and reports whether it did; any
// other directory is left exactly as it is. The marker goes last, so a
// crash midway leaves a directory still recognisably ours.
func RemoveDir(fsys vfs.FS, dir string, id TopicID) (bool, error) {
	names, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if len(names) == 1 && names[0] == MarkerName+".tmp" && tornMarker(fsys, dir, id) {
		// Killed while claiming it: the marker was being written for
		// this topic and is not yet in place.
		if err := fsys.Remove(filepath.Join(dir, names[0])); err != nil {
			return false, err
		}
		names = nil
	}
	if len(names) > 0 {
		got, ok, err := ReadMarker(fsys, dir)
		if err != nil || !ok || got != id {
			return false, nil
		}
		for _, n := range names {
			if n == MarkerName {
				continue
			}
			if err := fsys.RemoveAll(filepath.Join(dir, n)); err != nil {
				return false, err
			}
		}
		if err := fsys.SyncDir(dir); err != nil {
			return false, err
		}
		if err := fsys.Remove(filepath.Join(dir, MarkerName)); err != nil {
			return false, err
		}
	}
	if err := fsys.Remove(dir); err != nil {
		return false, err
	}
	return true, fsys.SyncDir(filepath.Dir(filepath.Clean(dir)))
}
