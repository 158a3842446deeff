package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/exactly/exactly/internal/vfs"
)

// FormatVersion is the on-disk format this binary writes, and the newest it
// reads; meta.properties records it as exactly.format.version. Raise it
// when a file kind changes in a way an older binary would misread, so that
// binary refuses the directory instead.
//
// Version 1 is the first recorded one. Directories written before
// meta.properties existed (cluster.json, no meta.properties) are version 1
// too: nothing they hold changed.
const FormatVersion = 1

// Files of the data directory itself (everything else in it is a partition
// directory or not ours).
const (
	// LockName is the lock file: flock'ed by the broker for its lifetime.
	LockName = ".lock"
	// MetaName marks a directory as ours, as Kafka's meta.properties does.
	MetaName = "meta.properties"
	// RecoveryPointsName holds each partition's recovery point.
	RecoveryPointsName = "recovery-point-offset-checkpoint"
	// MetadataDirName holds a cluster node's metadata quorum log (Kafka
	// names its metadata log directory the same way).
	MetadataDirName = "__cluster_metadata-0"
)

// ErrDataDir is wrapped by every refusal of OpenDataDir.
var ErrDataDir = errors.New("unusable data directory")

// DataDir is a data directory this process holds: locked for as long as it
// is open, and marked as ours by meta.properties.
type DataDir struct {
	fs   vfs.FS
	path string
	lock io.Closer
	// meta is meta.properties as read, nil if it does not exist yet.
	meta map[string]string
	// Adopted is true for a directory written before meta.properties
	// existed (it has cluster.json): Claim writes the marker.
	Adopted bool
}

// OpenDataDir locks dir (creating it if missing) for the broker nodeID and
// checks it is ours: meta.properties of a format this binary reads and of
// the same node; or no meta.properties in an empty directory (a first
// start) or in one holding cluster.json (written before meta.properties
// existed). Anything else is refused: a non-empty directory without the
// marker was not created by exactly, and nothing in it may be touched.
// A directory another process holds is refused at once, naming the holder.
func OpenDataDir(fsys vfs.FS, dir string, nodeID int32) (*DataDir, error) {
	if err := vfs.MkdirAllDurable(fsys, dir); err != nil {
		return nil, err
	}
	// Look before locking: the lock file must not be created in a
	// directory that is not ours.
	if _, err := checkOwner(fsys, dir); err != nil {
		return nil, err
	}
	d, err := lockDataDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	if d.meta != nil {
		if v := d.meta["node.id"]; v != strconv.Itoa(int(nodeID)) {
			d.Close()
			return nil, fmt.Errorf("%w: %s says node.id=%s, but this broker is node.id=%d: a data directory belongs to one node",
				ErrDataDir, filepath.Join(dir, MetaName), v, nodeID)
		}
		return d, nil
	}
	if d.Adopted, err = checkOwner(fsys, dir); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// OpenDataDirAdopting is OpenDataDir for a single node's directory about
// to become node nodeID of a new cluster (`exactly serve --adopt`): its
// meta.properties may name another node id (a single node is usually
// node 0), which is rewritten — nothing else in a single node's
// directory records it.
func OpenDataDirAdopting(fsys vfs.FS, dir string, nodeID int32) (*DataDir, error) {
	d, err := LockDataDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	if _, err := fsys.Stat(filepath.Join(dir, catalogName)); err != nil {
		d.Close()
		return nil, fmt.Errorf("%w: %s holds no single-node catalog (%s) to adopt", ErrDataDir, dir, catalogName)
	}
	if d.meta == nil {
		d.Adopted = true
		return d, nil
	}
	if d.meta["node.id"] != strconv.Itoa(int(nodeID)) {
		// Claim writes meta.properties again with the new node id.
		delete(d.meta, "directory.id")
		cid := d.meta["cluster.id"]
		if err := d.rewrite(cid, nodeID); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// checkOwner refuses a directory without meta.properties unless it is empty
// (but for files of a first start that crashed) or holds cluster.json
// (written before meta.properties existed: adopted is true).
func checkOwner(fsys vfs.FS, dir string) (adopted bool, err error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return false, err
	}
	if slices.Contains(names, MetaName) {
		return false, nil
	}
	if slices.Contains(names, catalogName) {
		return true, nil
	}
	if strangers := slices.DeleteFunc(names, IsDataDirFile); len(strangers) > 0 {
		return false, fmt.Errorf("%w: %s is not empty and has no %s, so exactly did not create it (it holds %s); refusing to touch it: choose an empty or new directory",
			ErrDataDir, dir, MetaName, sample(strangers))
	}
	return false, nil
}

// LockDataDir locks an existing data directory for an offline tool, without
// creating or claiming anything: it must already be an exactly directory
// (meta.properties, or cluster.json from before it existed).
func LockDataDir(fsys vfs.FS, dir string) (*DataDir, error) {
	meta, merr := fsys.Stat(filepath.Join(dir, MetaName))
	cat, cerr := fsys.Stat(filepath.Join(dir, catalogName))
	if (merr != nil || meta.IsDir()) && (cerr != nil || cat.IsDir()) {
		return nil, fmt.Errorf("%w: %s holds neither %s nor %s: not an exactly data directory", ErrDataDir, dir, MetaName, catalogName)
	}
	return lockDataDir(fsys, dir)
}

func lockDataDir(fsys vfs.FS, dir string) (*DataDir, error) {
	lock, err := fsys.Lock(filepath.Join(dir, LockName))
	if errors.Is(err, vfs.ErrLocked) {
		return nil, fmt.Errorf("%w: %s is in use (%w): one data directory serves one broker at a time", ErrDataDir, dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("locking data directory %s: %w", dir, err)
	}
	d := &DataDir{fs: fsys, path: dir, lock: lock}
	if err := d.readMeta(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// readMeta loads and checks meta.properties, if present.
func (d *DataDir) readMeta() error {
	p := filepath.Join(d.path, MetaName)
	b, err := vfs.ReadFile(d.fs, p, 64<<10)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	m, err := ParseProperties(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrDataDir, p, err)
	}
	if v := m["version"]; v != "1" {
		return fmt.Errorf("%w: %s has version=%q; this binary reads version 1", ErrDataDir, p, v)
	}
	fv, err := strconv.Atoi(m["exactly.format.version"])
	if err != nil || fv < 1 {
		return fmt.Errorf("%w: %s has exactly.format.version=%q, not a format version", ErrDataDir, p, m["exactly.format.version"])
	}
	if fv > FormatVersion {
		return fmt.Errorf("%w: %s has exactly.format.version=%d, newer than this binary reads (up to %d): run the exactly version that wrote it, or a newer one",
			ErrDataDir, p, fv, FormatVersion)
	}
	d.meta = m
	return nil
}

// sample names a few entries for an error message.
func sample(names []string) string {
	const show = 5
	if len(names) <= show {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:show], ", "), len(names)-show)
}

// Claim records the directory as this cluster's and this node's: it writes
// meta.properties on a first start or for an adopted directory, and
// otherwise checks that the catalog belongs to the cluster the marker
// names. Call it once the catalog is open.
func (d *DataDir) Claim(clusterID string, nodeID int32) error {
	p := filepath.Join(d.path, MetaName)
	if d.meta != nil {
		if got := d.meta["cluster.id"]; got != clusterID {
			return fmt.Errorf("%w: %s says cluster.id=%s but the cluster's metadata says %s: this directory belongs to another cluster",
				ErrDataDir, p, got, clusterID)
		}
		if d.meta["directory.id"] != "" {
			return nil
		}
	}
	return d.rewrite(clusterID, nodeID)
}

// rewrite writes meta.properties for clusterID and nodeID with a fresh
// directory.id.
func (d *DataDir) rewrite(clusterID string, nodeID int32) error {
	p := filepath.Join(d.path, MetaName)
	// directory.id tells this directory's incarnation from one that
	// replaced it under the same node id (Kafka's meta.properties key).
	dirID := newClusterID()
	data := fmt.Sprintf("#Written by exactly: this directory's owner. Do not edit.\nversion=1\ncluster.id=%s\nnode.id=%d\ndirectory.id=%s\nexactly.format.version=%d\n",
		clusterID, nodeID, dirID, FormatVersion)
	if err := vfs.WriteFileAtomic(d.fs, p, []byte(data)); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	d.meta = map[string]string{"version": "1", "cluster.id": clusterID, "node.id": strconv.Itoa(int(nodeID)),
		"directory.id": dirID, "exactly.format.version": strconv.Itoa(FormatVersion)}
	return nil
}

// ClusterID is the cluster id meta.properties names ("" before the first
// start).
func (d *DataDir) ClusterID() string { return d.meta["cluster.id"] }

// DirectoryID is this directory's incarnation id (set by Claim).
func (d *DataDir) DirectoryID() string { return d.meta["directory.id"] }

// Path is the directory.
func (d *DataDir) Path() string { return d.path }

// Close releases the lock. The broker closes it last, after every file in
// the directory is closed.
func (d *DataDir) Close() error { return d.lock.Close() }

// IsDataDirFile reports whether name (an entry of the data directory) is one
// of the data directory's own files rather than a partition or a stranger.
func IsDataDirFile(name string) bool {
	name = strings.TrimSuffix(name, ".tmp")
	switch name {
	case LockName, MetaName, RecoveryPointsName, catalogName, MetadataDirName, AdoptedName:
		return true
	}
	return false
}

// Format prepares an empty (or missing) data directory for node nodeID of
// cluster clusterID, as Kafka's storage format does: meta.properties with
// both ids and a fresh directory.id. A directory formatted already for the
// same cluster and node is left as it is; anything else is refused.
func Format(fsys vfs.FS, dir, clusterID string, nodeID int32) error {
	if clusterID == "" || strings.ContainsAny(clusterID, "\n\r=") {
		return fmt.Errorf("cluster id %q: want a non-empty id without '=' or line breaks", clusterID)
	}
	d, err := OpenDataDir(fsys, dir, nodeID)
	if err != nil {
		return err
	}
	defer d.Close()
	if d.meta != nil || d.Adopted {
		if got := d.ClusterID(); got != clusterID {
			return fmt.Errorf("%w: %s is formatted already (cluster.id=%s); refusing to change its cluster", ErrDataDir, dir, got)
		}
	}
	return d.Claim(clusterID, nodeID)
}
