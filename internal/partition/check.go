package partition

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/producerstate"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
)

// Check verifies a partition directory offline, without changing it: its
// marker (it must name topic id, when id is not zero), its log (log.Check
// with the stored recovery point; visit sees every good batch) and its
// producer state snapshots.
func Check(fsys vfs.FS, dir string, id TopicID, recoveryPoint int64, visit func(h *record.Header, batch []byte) error) (*log.CheckReport, error) {
	if _, err := fsys.Stat(dir); err != nil {
		return nil, err
	}
	rep, err := log.Check(fsys, dir, recoveryPoint, visit)
	if err != nil {
		return nil, err
	}
	damage := func(file, format string, args ...any) {
		rep.Damage = append(rep.Damage, &log.CorruptionError{File: file, Offset: -1, Reason: fmt.Sprintf(format, args...)})
	}
	if id != (TopicID{}) {
		got, ok, err := ReadMarker(fsys, dir)
		switch {
		case err != nil:
			damage(filepath.Join(dir, MarkerName), "%v", err)
		case !ok:
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s is missing; the next start writes it", filepath.Join(dir, MarkerName)))
		case got != id:
			damage(filepath.Join(dir, MarkerName), "names another topic id than the catalog")
		}
	}
	p := &Partition{fs: fsys, dir: dir}
	offs, err := p.snapshots()
	if err != nil {
		return nil, err
	}
	for _, off := range offs {
		name := filepath.Join(dir, snapshotName(off))
		b, err := vfs.ReadFile(fsys, name, 1<<30)
		if err == nil {
			var at int64
			if _, at, err = producerstate.Decode(b); err == nil && at != off {
				err = fmt.Errorf("covers offset %d, its name says %d", at, off)
			}
		}
		if err != nil {
			// Snapshots are rebuilt from the log when unreadable.
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %v; the next start replays the log instead", name, err))
		}
	}
	return rep, nil
}

// TruncateCorrupt cuts a corrupt partition at its first damage (see
// log.TruncateCorrupt) and removes producer state snapshots of offsets
// that no longer exist. It returns the new end offset: the partition's
// recovery point from now on.
func TruncateCorrupt(fsys vfs.FS, dir string, recoveryPoint int64) (int64, error) {
	end, err := log.TruncateCorrupt(fsys, dir, recoveryPoint)
	if err != nil {
		return 0, err
	}
	p := &Partition{fs: fsys, dir: dir}
	offs, err := p.snapshots()
	if err != nil {
		return 0, err
	}
	for _, off := range offs {
		if off > end {
			if err := fsys.Remove(filepath.Join(dir, snapshotName(off))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return 0, err
			}
		}
	}
	return end, fsys.SyncDir(dir)
}
