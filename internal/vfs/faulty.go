package vfs

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// Op names an FS or File operation, for fault injection and call counting.
type Op int

// Operations that FaultyFS can count and fail.
const (
	OpOpenFile Op = iota
	OpRemove
	OpRemoveAll
	OpRename
	OpMkdirAll
	OpReadDir
	OpStat
	OpSyncDir
	OpWrite
	OpReadAt
	OpSync
	OpTruncate
	OpSize
	OpClose
	OpLock
	numOps
)

var opNames = [numOps]string{
	"OpenFile", "Remove", "RemoveAll", "Rename", "MkdirAll", "ReadDir", "Stat",
	"SyncDir", "Write", "ReadAt", "Sync", "Truncate", "Size", "Close", "Lock",
}

// String returns the operation's name.
func (o Op) String() string {
	if o < 0 || o >= numOps {
		return "Op(?)"
	}
	return opNames[o]
}

// ErrInjected is the error a fault returns when none is given.
var ErrInjected = errors.New("vfs: injected fault")

// Fault describes an error to inject into matching calls.
type Fault struct {
	// Op is the operation to fail.
	Op Op
	// Path, if set, restricts the fault to calls on matching paths (the file
	// name for File operations; either name for Rename).
	Path func(name string) bool
	// Skip is the number of matching calls let through before the fault
	// fires.
	Skip int
	// Times is the number of matching calls that fail once the fault fires;
	// zero means every later matching call fails (a dead disk).
	Times int
	// Err is the injected error; nil means ErrInjected.
	Err error
	// ShortWrite, for OpWrite, writes the first half of the buffer to the
	// inner file before returning the error, like a write interrupted by a
	// full or failing disk.
	ShortWrite bool
}

// FaultyFS wraps an FS, counts every operation and fails the ones that match
// injected faults. It is safe for concurrent use.
type FaultyFS struct {
	inner  FS
	counts [numOps]atomic.Int64

	mu     sync.Mutex
	faults []*faultState
	hook   func(op Op, name string) error
}

type faultState struct {
	Fault
	seen int
}

// NewFaulty wraps inner. Without injected faults it behaves exactly like
// inner.
func NewFaulty(inner FS) *FaultyFS { return &FaultyFS{inner: inner} }

// Inject adds a fault. Faults are checked in the order they were added; the
// first one that fires decides the call's error.
func (f *FaultyFS) Inject(ft Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &faultState{Fault: ft})
}

// FailAfter lets the next n calls of op succeed and fails every later one
// with err (ErrInjected if nil).
func (f *FaultyFS) FailAfter(op Op, n int, err error) {
	f.Inject(Fault{Op: op, Skip: n, Err: err})
}

// FailOnce fails only the (n+1)-th call of op from now on.
func (f *FaultyFS) FailOnce(op Op, n int, err error) {
	f.Inject(Fault{Op: op, Skip: n, Times: 1, Err: err})
}

// FailPath fails every call of op on a path for which match returns true.
func (f *FaultyFS) FailPath(op Op, match func(name string) bool, err error) {
	f.Inject(Fault{Op: op, Path: match, Err: err})
}

// SetHook installs a function called before every operation, after it is
// counted; a non-nil result fails the operation with that error, whatever
// the injected faults say. Tests use it to crash at an arbitrary point,
// e.g. by snapshotting MemFS.Crash and failing every later call. nil removes
// the hook.
func (f *FaultyFS) SetHook(h func(op Op, name string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = h
}

// Clear removes all faults and the hook.
func (f *FaultyFS) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
	f.hook = nil
}

// Count returns how many calls of op were made, failed ones included.
func (f *FaultyFS) Count(op Op) int64 { return f.counts[op].Load() }

// check counts a call and returns the injected error, if any, and whether
// the fault asks for a short write.
func (f *FaultyFS) check(op Op, names ...string) (short bool, err error) {
	f.counts[op].Add(1)
	f.mu.Lock()
	hook := f.hook
	for _, ft := range f.faults {
		if ft.Op != op || !ft.matches(names) {
			continue
		}
		ft.seen++
		if ft.seen <= ft.Skip || (ft.Times > 0 && ft.seen > ft.Skip+ft.Times) {
			continue
		}
		err = ft.Err
		if err == nil {
			err = ErrInjected
		}
		short = ft.ShortWrite
		break
	}
	f.mu.Unlock()
	if hook != nil {
		name := ""
		if len(names) > 0 {
			name = names[0]
		}
		if herr := hook(op, name); herr != nil {
			return false, herr
		}
	}
	return short, err
}

func (ft *faultState) matches(names []string) bool {
	if ft.Path == nil {
		return true
	}
	for _, n := range names {
		if ft.Path(n) {
			return true
		}
	}
	return false
}

func pathErr(op, name string, err error) error {
	return &os.PathError{Op: op, Path: name, Err: err}
}

// OpenFile implements FS.
func (f *FaultyFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if _, err := f.check(OpOpenFile, name); err != nil {
		return nil, pathErr("open", name, err)
	}
	file, err := f.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultyFile{fs: f, inner: file, name: name}, nil
}

// Remove implements FS.
func (f *FaultyFS) Remove(name string) error {
	if _, err := f.check(OpRemove, name); err != nil {
		return pathErr("remove", name, err)
	}
	return f.inner.Remove(name)
}

// RemoveAll implements FS.
func (f *FaultyFS) RemoveAll(name string) error {
	if _, err := f.check(OpRemoveAll, name); err != nil {
		return pathErr("removeall", name, err)
	}
	return f.inner.RemoveAll(name)
}

// Rename implements FS.
func (f *FaultyFS) Rename(oldname, newname string) error {
	if _, err := f.check(OpRename, oldname, newname); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return f.inner.Rename(oldname, newname)
}

// MkdirAll implements FS.
func (f *FaultyFS) MkdirAll(name string, perm os.FileMode) error {
	if _, err := f.check(OpMkdirAll, name); err != nil {
		return pathErr("mkdir", name, err)
	}
	return f.inner.MkdirAll(name, perm)
}

// ReadDir implements FS.
func (f *FaultyFS) ReadDir(name string) ([]string, error) {
	if _, err := f.check(OpReadDir, name); err != nil {
		return nil, pathErr("readdir", name, err)
	}
	return f.inner.ReadDir(name)
}

// Stat implements FS.
func (f *FaultyFS) Stat(name string) (os.FileInfo, error) {
	if _, err := f.check(OpStat, name); err != nil {
		return nil, pathErr("stat", name, err)
	}
	return f.inner.Stat(name)
}

// SyncDir implements FS.
func (f *FaultyFS) SyncDir(name string) error {
	if _, err := f.check(OpSyncDir, name); err != nil {
		return pathErr("syncdir", name, err)
	}
	return f.inner.SyncDir(name)
}

// Lock implements FS.
func (f *FaultyFS) Lock(name string) (io.Closer, error) {
	if _, err := f.check(OpLock, name); err != nil {
		return nil, pathErr("lock", name, err)
	}
	return f.inner.Lock(name)
}

type faultyFile struct {
	fs    *FaultyFS
	inner File
	name  string
}

func (f *faultyFile) Name() string { return f.name }

func (f *faultyFile) ReadAt(p []byte, off int64) (int, error) {
	if _, err := f.fs.check(OpReadAt, f.name); err != nil {
		return 0, pathErr("read", f.name, err)
	}
	return f.inner.ReadAt(p, off)
}

func (f *faultyFile) Write(p []byte) (int, error) {
	short, err := f.fs.check(OpWrite, f.name)
	if err == nil {
		return f.inner.Write(p)
	}
	n := 0
	if short && len(p) > 1 {
		n, _ = f.inner.Write(p[:len(p)/2])
	}
	return n, pathErr("write", f.name, err)
}

func (f *faultyFile) Close() error {
	if _, err := f.fs.check(OpClose, f.name); err != nil {
		f.inner.Close() // release the inner handle anyway, like close(2)
		return pathErr("close", f.name, err)
	}
	return f.inner.Close()
}

func (f *faultyFile) Sync() error {
	if _, err := f.fs.check(OpSync, f.name); err != nil {
		return pathErr("sync", f.name, err)
	}
	return f.inner.Sync()
}

func (f *faultyFile) Truncate(size int64) error {
	if _, err := f.fs.check(OpTruncate, f.name); err != nil {
		return pathErr("truncate", f.name, err)
	}
	return f.inner.Truncate(size)
}

func (f *faultyFile) Size() (int64, error) {
	if _, err := f.fs.check(OpSize, f.name); err != nil {
		return 0, pathErr("stat", f.name, err)
	}
	return f.inner.Size()
}
