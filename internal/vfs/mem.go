package vfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"maps"
	"math/rand"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// MemFS is an in-memory FS, safe for concurrent use, that remembers which of
// its state has been made durable so that tests can simulate a machine crash
// with Crash.
//
// Crash model (conservative: anything not fsynced may vanish):
//
//   - File contents survive as of the last File.Sync of that file (any
//     handle). Writes and truncations made after it are lost, except that
//     Crash with a non-nil rng may keep a random prefix of the unsynced tail
//     of an append-only file (a torn write), sometimes with the end of that
//     prefix zeroed (the size reached disk, the data blocks did not). If the
//     file was overwritten or truncated below its synced size since the last
//     Sync, the crash randomly yields either the synced contents or a prefix
//     of the current contents.
//   - Directory entries (creations, removals, renames within the directory)
//     survive as of the last SyncDir of the parent directory. With a non-nil
//     rng, a random prefix of the entry operations made since then also
//     survives, in order, as on a journaling filesystem that commits metadata
//     in order. A rename within one directory is atomic; a rename across
//     directories is a removal in one and an addition in the other, which may
//     survive independently.
//   - File.Sync does not make the file's directory entry durable, and
//     SyncDir does not make file contents durable.
//   - Open handles keep working after their file is removed (POSIX
//     semantics); handles of a crashed MemFS keep referring to the old,
//     pre-crash state and must not be used to inspect the new one.
type MemFS struct {
	mu   sync.RWMutex
	root *memNode
	// locks holds the paths locked by Lock. A crash releases them all, as
	// the death of every process does.
	locks map[string]bool
}

// NewMem returns an empty in-memory filesystem whose root directory "/"
// exists. Relative paths are resolved against the root.
func NewMem() *MemFS {
	return &MemFS{root: newDirNode()}
}

type memNode struct {
	dir     bool
	modTime time.Time

	// Regular files.
	data     []byte // current contents
	synced   []byte // contents as of the last Sync; may alias data's array
	shared   bool   // data may share its array with synced: copy before overwriting
	diverged bool   // data no longer has synced as a prefix

	// Directories.
	entries map[string]*memNode // current entries
	durable map[string]*memNode // entries as of the last SyncDir
	pending []dirOp             // entry operations since the last SyncDir
}

// dirOp is one directory entry operation: node == nil removes name; from !=
// "" renames from → name; otherwise node is added as name.
type dirOp struct {
	name string
	from string
	node *memNode
}

func newDirNode() *memNode {
	return &memNode{
		dir:     true,
		modTime: time.Now(),
		entries: map[string]*memNode{},
		durable: map[string]*memNode{},
	}
}

func (d *memNode) apply(m map[string]*memNode, op dirOp) {
	switch {
	case op.from != "":
		delete(m, op.from)
		m[op.name] = op.node
	case op.node == nil:
		delete(m, op.name)
	default:
		m[op.name] = op.node
	}
}

func (d *memNode) record(op dirOp) {
	d.apply(d.entries, op)
	d.pending = append(d.pending, op)
	d.modTime = time.Now()
}

// beforeOverwrite prepares a file for a mutation at or after byte off that
// does not simply append.
func (n *memNode) beforeOverwrite(off int64) {
	if n.shared {
		n.data = bytes.Clone(n.data)
		n.shared = false
	}
	if off < int64(len(n.synced)) {
		n.diverged = true
	}
}

func (n *memNode) writeAt(off int64, p []byte) {
	if off < int64(len(n.data)) {
		n.beforeOverwrite(off)
	}
	if gap := off - int64(len(n.data)); gap > 0 {
		n.data = append(n.data, make([]byte, gap)...)
	}
	k := copy(n.data[off:], p)
	n.data = append(n.data, p[k:]...)
	n.modTime = time.Now()
}

func (n *memNode) truncate(size int64) {
	if size < int64(len(n.data)) {
		n.beforeOverwrite(size)
		n.data = n.data[:size]
	} else if size > int64(len(n.data)) {
		n.data = append(n.data, make([]byte, size-int64(len(n.data)))...)
	}
	n.modTime = time.Now()
}

func (n *memNode) sync() {
	n.synced = n.data[:len(n.data):len(n.data)]
	n.shared = true
	n.diverged = false
}

func clean(name string) string {
	return path.Clean("/" + filepath.ToSlash(name))
}

func split(p string) (dir, base string) {
	dir, base = path.Split(p)
	return path.Clean(dir), base
}

// walk returns the node at p, or nil.
func (m *MemFS) walk(p string) (*memNode, error) {
	n := m.root
	if p == "/" {
		return n, nil
	}
	for _, c := range strings.Split(p[1:], "/") {
		if !n.dir {
			return nil, syscall.ENOTDIR
		}
		n = n.entries[c]
		if n == nil {
			return nil, fs.ErrNotExist
		}
	}
	return n, nil
}

// parent returns the directory that holds p and p's base name.
func (m *MemFS) parent(op, p string) (*memNode, string, error) {
	if p == "/" {
		return nil, "", &fs.PathError{Op: op, Path: p, Err: fs.ErrInvalid}
	}
	dir, base := split(p)
	d, err := m.walk(dir)
	if err != nil {
		return nil, "", &fs.PathError{Op: op, Path: p, Err: err}
	}
	if !d.dir {
		return nil, "", &fs.PathError{Op: op, Path: p, Err: syscall.ENOTDIR}
	}
	return d, base, nil
}

// OpenFile implements FS.
func (m *MemFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	p := clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	d, base, err := m.parent("open", p)
	if err != nil {
		return nil, err
	}
	n := d.entries[base]
	writable := flag&(os.O_WRONLY|os.O_RDWR) != 0
	switch {
	case n == nil && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case n == nil:
		n = &memNode{modTime: time.Now()}
		d.record(dirOp{name: base, node: n})
	case flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case n.dir:
		return nil, &fs.PathError{Op: "open", Path: name, Err: syscall.EISDIR}
	case flag&os.O_TRUNC != 0 && writable:
		n.truncate(0)
	}
	return &memFile{fs: m, node: n, name: name, flag: flag}, nil
}

// Remove implements FS.
func (m *MemFS) Remove(name string) error {
	p := clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	d, base, err := m.parent("remove", p)
	if err != nil {
		return err
	}
	n := d.entries[base]
	if n == nil {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if n.dir && len(n.entries) > 0 {
		return &fs.PathError{Op: "remove", Path: name, Err: syscall.ENOTEMPTY}
	}
	d.record(dirOp{name: base})
	return nil
}

// RemoveAll implements FS.
func (m *MemFS) RemoveAll(name string) error {
	p := clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if p == "/" {
		for _, k := range slices.Sorted(maps.Keys(m.root.entries)) {
			m.root.record(dirOp{name: k})
		}
		return nil
	}
	d, base, err := m.parent("removeall", p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if d.entries[base] == nil {
		return nil
	}
	d.record(dirOp{name: base})
	return nil
}

// Rename implements FS.
func (m *MemFS) Rename(oldname, newname string) error {
	op, np := clean(oldname), clean(newname)
	m.mu.Lock()
	defer m.mu.Unlock()
	od, obase, err := m.parent("rename", op)
	if err != nil {
		return err
	}
	nd, nbase, err := m.parent("rename", np)
	if err != nil {
		return err
	}
	n := od.entries[obase]
	if n == nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrNotExist}
	}
	if op == np {
		return nil
	}
	if n.dir && strings.HasPrefix(np, op+"/") {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fs.ErrInvalid}
	}
	if t := nd.entries[nbase]; t != nil {
		if t.dir && (!n.dir || len(t.entries) > 0) {
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.EEXIST}
		}
		if !t.dir && n.dir {
			return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: syscall.ENOTDIR}
		}
	}
	if od == nd {
		od.record(dirOp{name: nbase, from: obase, node: n})
		return nil
	}
	od.record(dirOp{name: obase})
	nd.record(dirOp{name: nbase, node: n})
	return nil
}

// MkdirAll implements FS.
func (m *MemFS) MkdirAll(name string, perm os.FileMode) error {
	p := clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.root
	if p == "/" {
		return nil
	}
	for _, c := range strings.Split(p[1:], "/") {
		child := n.entries[c]
		if child == nil {
			child = newDirNode()
			n.record(dirOp{name: c, node: child})
		} else if !child.dir {
			return &fs.PathError{Op: "mkdir", Path: name, Err: syscall.ENOTDIR}
		}
		n = child
	}
	return nil
}

// ReadDir implements FS.
func (m *MemFS) ReadDir(name string) ([]string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, err := m.walk(clean(name))
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	if !n.dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: syscall.ENOTDIR}
	}
	return slices.Sorted(maps.Keys(n.entries)), nil
}

// Stat implements FS.
func (m *MemFS) Stat(name string) (os.FileInfo, error) {
	p := clean(name)
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, err := m.walk(p)
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	return memInfo{name: path.Base(p), size: int64(len(n.data)), dir: n.dir, mod: n.modTime}, nil
}

// SyncDir implements FS: the directory's current entries become durable.
func (m *MemFS) SyncDir(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.walk(clean(name))
	if err != nil {
		return &fs.PathError{Op: "syncdir", Path: name, Err: err}
	}
	if !n.dir {
		return &fs.PathError{Op: "syncdir", Path: name, Err: syscall.ENOTDIR}
	}
	n.durable = maps.Clone(n.entries)
	n.pending = nil
	return nil
}

// Crash returns a new MemFS holding only what a machine crash at this instant
// would leave on disk, under the model described on MemFS. With rng == nil
// exactly the durable state survives; with an rng, random parts of the
// non-durable state survive too (torn writes, in-order prefixes of directory
// operations). The receiver is left unchanged and keeps working.
func (m *MemFS) Crash(rng *rand.Rand) *MemFS {
	m.mu.RLock()
	defer m.mu.RUnlock()
	memo := map[*memNode]*memNode{}
	return &MemFS{root: crashNode(m.root, rng, memo)}
}

func crashNode(n *memNode, rng *rand.Rand, memo map[*memNode]*memNode) *memNode {
	if c := memo[n]; c != nil {
		return c
	}
	c := &memNode{dir: n.dir, modTime: n.modTime}
	memo[n] = c
	if !n.dir {
		c.data = crashData(n, rng)
		c.sync()
		return c
	}
	ents := maps.Clone(n.durable)
	if rng != nil && len(n.pending) > 0 {
		for _, op := range n.pending[:rng.Intn(len(n.pending)+1)] {
			n.apply(ents, op)
		}
	}
	c.entries = make(map[string]*memNode, len(ents))
	for name, child := range ents {
		c.entries[name] = crashNode(child, rng, memo)
	}
	c.durable = maps.Clone(c.entries)
	return c
}

func crashData(n *memNode, rng *rand.Rand) []byte {
	if rng == nil {
		return bytes.Clone(n.synced)
	}
	if n.diverged {
		if rng.Intn(2) == 0 {
			return bytes.Clone(n.synced)
		}
		common := 0
		for common < len(n.synced) && common < len(n.data) && n.synced[common] == n.data[common] {
			common++
		}
		return bytes.Clone(n.data[:common+rng.Intn(len(n.data)-common+1)])
	}
	tail := len(n.data) - len(n.synced)
	if tail <= 0 {
		return bytes.Clone(n.synced)
	}
	keep := rng.Intn(tail + 1)
	out := bytes.Clone(n.data[:len(n.synced)+keep])
	if keep > 0 && rng.Intn(4) == 0 {
		zero := 1 + rng.Intn(keep)
		clear(out[len(out)-zero:])
	}
	return out
}

// Lock implements FS. The holder is always this process, so a refusal
// names it.
func (m *MemFS) Lock(name string) (io.Closer, error) {
	f, err := m.OpenFile(name, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	f.Close()
	p := clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks[p] {
		return nil, &LockedError{Path: name, PID: os.Getpid()}
	}
	if m.locks == nil {
		m.locks = map[string]bool{}
	}
	m.locks[p] = true
	return &memLock{fs: m, path: p}, nil
}

type memLock struct {
	fs   *MemFS
	path string
	once sync.Once
}

func (l *memLock) Close() error {
	l.once.Do(func() {
		l.fs.mu.Lock()
		delete(l.fs.locks, l.path)
		l.fs.mu.Unlock()
	})
	return nil
}

type memFile struct {
	fs     *MemFS
	node   *memNode
	name   string
	flag   int
	off    int64 // guarded by fs.mu
	closed bool  // guarded by fs.mu
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.RLock()
	defer f.fs.mu.RUnlock()
	if f.closed {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrClosed}
	}
	if f.flag&os.O_WRONLY != 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: syscall.EBADF}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	if off >= int64(len(f.node.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.node.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: fs.ErrClosed}
	}
	if f.flag&(os.O_WRONLY|os.O_RDWR) == 0 {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: syscall.EBADF}
	}
	if f.flag&os.O_APPEND != 0 {
		f.off = int64(len(f.node.data))
	}
	f.node.writeAt(f.off, p)
	f.off += int64(len(p))
	return len(p), nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	return nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "sync", Path: f.name, Err: fs.ErrClosed}
	}
	f.node.sync()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: fs.ErrClosed}
	}
	if f.flag&(os.O_WRONLY|os.O_RDWR) == 0 || size < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: syscall.EINVAL}
	}
	f.node.truncate(size)
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.fs.mu.RLock()
	defer f.fs.mu.RUnlock()
	if f.closed {
		return 0, &fs.PathError{Op: "stat", Path: f.name, Err: fs.ErrClosed}
	}
	return int64(len(f.node.data)), nil
}

type memInfo struct {
	name string
	size int64
	dir  bool
	mod  time.Time
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) ModTime() time.Time { return i.mod }
func (i memInfo) IsDir() bool        { return i.dir }
func (i memInfo) Sys() any           { return nil }
func (i memInfo) Mode() os.FileMode {
	if i.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
