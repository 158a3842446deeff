package quorum

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/exactly/exactly/internal/vfs"
)

// Identity files of a raft storage directory, both JSON written with
// vfs.WriteFileAtomic:
//
//   - quorum.meta: {"version":1,"cluster_id":…,"node_id":…,"directory_id":…}
//     written once when the directory is created. The directory id is 16
//     random bytes (hex); a wiped disk gets a new one, which is how peers
//     tell a node that lost its votes and log from the node they knew.
//   - peers.json: {"<node id>":"<directory id>",…}, the directory id this
//     node first saw for each peer, or the one an applied AddVoter named.
const (
	metaFile  = "quorum.meta"
	peersFile = "peers.json"
	lockFile  = "LOCK"
	// dirIDBytes is the size of a directory id.
	dirIDBytes = 16
)

// DirectoryID identifies one incarnation of a node's raft storage.
type DirectoryID [dirIDBytes]byte

// String returns the id in hex.
func (d DirectoryID) String() string { return hex.EncodeToString(d[:]) }

func parseDirectoryID(s string) (DirectoryID, error) {
	var d DirectoryID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != dirIDBytes {
		return d, fmt.Errorf("bad directory id %q", s)
	}
	copy(d[:], b)
	return d, nil
}

type metaJSON struct {
	Version     int    `json:"version"`
	ClusterID   string `json:"cluster_id"`
	NodeID      uint64 `json:"node_id"`
	DirectoryID string `json:"directory_id"`
}

// loadOrCreateMeta returns the directory id of dir, creating quorum.meta if
// the directory holds no raft state yet. A directory of another cluster or
// node is refused.
func loadOrCreateMeta(fsys vfs.FS, dir, clusterID string, nodeID uint64, hasState bool) (DirectoryID, error) {
	path := filepath.Join(dir, metaFile)
	b, err := vfs.ReadFile(fsys, path, maxMetaFileBytes)
	if errors.Is(err, fs.ErrNotExist) {
		if hasState {
			return DirectoryID{}, fmt.Errorf("%s is missing but the directory holds raft state", path)
		}
		var d DirectoryID
		if _, err := rand.Read(d[:]); err != nil {
			return d, err
		}
		out, _ := json.Marshal(metaJSON{Version: 1, ClusterID: clusterID, NodeID: nodeID, DirectoryID: d.String()})
		return d, vfs.WriteFileAtomic(fsys, path, out)
	}
	if err != nil {
		return DirectoryID{}, err
	}
	var m metaJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return DirectoryID{}, fmt.Errorf("%s: %w", path, err)
	}
	if m.Version != 1 {
		return DirectoryID{}, fmt.Errorf("%s: unknown version %d", path, m.Version)
	}
	if m.ClusterID != clusterID || m.NodeID != nodeID {
		return DirectoryID{}, fmt.Errorf("%s belongs to node %d of cluster %q, not node %d of cluster %q", path, m.NodeID, m.ClusterID, nodeID, clusterID)
	}
	d, err := parseDirectoryID(m.DirectoryID)
	if err != nil {
		return d, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// peerDirs remembers, durably, the directory id of each peer. It is shared
// by the transport (handshakes) and the Ready loop (applied membership
// changes), hence the mutex.
type peerDirs struct {
	fs   vfs.FS
	path string

	mu   sync.Mutex
	dirs map[uint64]DirectoryID
}

func loadPeerDirs(fsys vfs.FS, dir string) (*peerDirs, error) {
	p := &peerDirs{fs: fsys, path: filepath.Join(dir, peersFile), dirs: map[uint64]DirectoryID{}}
	b, err := vfs.ReadFile(fsys, p.path, maxMetaFileBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", p.path, err)
	}
	for k, v := range m {
		id, err := strconv.ParseUint(k, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: bad node id %q", p.path, k)
		}
		d, err := parseDirectoryID(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.path, err)
		}
		p.dirs[id] = d
	}
	return p, nil
}

func (p *peerDirs) persistLocked() error {
	m := make(map[string]string, len(p.dirs))
	for id, d := range p.dirs {
		m[strconv.FormatUint(id, 10)] = d.String()
	}
	b, _ := json.Marshal(m)
	return vfs.WriteFileAtomic(p.fs, p.path, b)
}

// errWrongDirectory refuses a peer whose directory id is not the one
// remembered for its node id.
var errWrongDirectory = errors.New("directory id differs from the one remembered for this node id (a wiped or replaced disk; remove and re-add the voter)")

// admit checks a peer's directory id against the remembered one and
// remembers it, durably, if none is.
func (p *peerDirs) admit(node uint64, d DirectoryID) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if known, ok := p.dirs[node]; ok {
		if known != d {
			return fmt.Errorf("node %d presents directory %s, remembered %s: %w", node, d, known, errWrongDirectory)
		}
		return nil
	}
	p.dirs[node] = d
	if err := p.persistLocked(); err != nil {
		delete(p.dirs, node)
		return err
	}
	return nil
}

// set replaces the remembered directory id of node (forgets it if d is
// nil), as an applied membership change says.
func (p *peerDirs) set(node uint64, d *DirectoryID) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	known, ok := p.dirs[node]
	switch {
	case d == nil && !ok, d != nil && ok && known == *d:
		return nil
	case d == nil:
		delete(p.dirs, node)
	default:
		p.dirs[node] = *d
	}
	return p.persistLocked()
}

func (p *peerDirs) get(node uint64) (DirectoryID, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.dirs[node]
	return d, ok
}
