// Package vfs is the small filesystem interface the storage layer is written
// against, so that the same code runs on real disks and, in tests, on an
// in-memory filesystem that can simulate crashes (MemFS.Crash) or on a
// wrapper that injects I/O errors (FaultyFS).
//
// The interface is deliberately narrow: it exposes only what a segmented log
// needs (append-only writes, positional reads, fsync of files and of
// directories, atomic rename) and nothing whose crash semantics would be hard
// to model.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// FS is a hierarchical filesystem. Paths use the host separator for OS() and
// slash-separated paths for the in-memory implementation; both accept paths
// built with path/filepath on Unix.
type FS interface {
	// OpenFile opens a file with os.O_* flags (O_RDONLY, O_WRONLY, O_RDWR,
	// O_CREATE, O_EXCL, O_TRUNC, O_APPEND are honoured).
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// Remove removes a file or an empty directory.
	Remove(name string) error
	// RemoveAll removes a path and everything below it; a missing path is
	// not an error.
	RemoveAll(name string) error
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// MkdirAll creates a directory and any missing parents.
	MkdirAll(name string, perm os.FileMode) error
	// ReadDir returns the sorted names of the entries of a directory.
	ReadDir(name string) ([]string, error)
	// Stat describes a path; a missing path yields an error for which
	// errors.Is(err, fs.ErrNotExist) holds.
	Stat(name string) (os.FileInfo, error)
	// SyncDir makes the creations, renames and removals of entries in the
	// directory durable (fsync of the directory itself).
	SyncDir(name string) error
	// Lock takes an exclusive lock on the file name (created if missing)
	// without waiting: a lock held by anyone else, in this process or
	// another, fails with an error wrapping ErrLocked (a *LockedError).
	// The holder's process id is written into the file. Closing the result
	// releases the lock; so does the holder's exit.
	Lock(name string) (io.Closer, error)
}

// ErrLocked is wrapped by the error of Lock when someone else holds the lock.
var ErrLocked = errors.New("locked by another process")

// LockedError says which lock file is held and, when the file names one, by
// which process.
type LockedError struct {
	Path string
	// PID is the holder's process id as written in the file; 0 if unknown.
	PID int
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("%s is locked by process %d", e.Path, e.PID)
	}
	return fmt.Sprintf("%s is locked by another process", e.Path)
}

// Unwrap makes errors.Is(err, ErrLocked) hold.
func (e *LockedError) Unwrap() error { return ErrLocked }

// File is an open file. Writes go to the handle's current offset (to the end
// when opened with O_APPEND); reads are positional so that concurrent readers
// never share an offset.
type File interface {
	io.ReaderAt
	io.Writer
	io.Closer
	// Sync makes the file's contents durable (fsync).
	Sync() error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Size returns the current size of the file.
	Size() (int64, error)
	// Name returns the name the file was opened with.
	Name() string
}

// DropCache asks that f's cached pages of [off, off+n) be dropped, for
// files whose data was just fsynced and will not be read soon: the pages
// go back to the allocator for the next writes. A no-op for files that
// cannot (in-memory filesystems, other systems); errors are ignored, as
// the advice changes nothing but the cache.
func DropCache(f File, off, n int64) {
	if d, ok := f.(interface{ DropCache(off, n int64) error }); ok && n > 0 {
		_ = d.DropCache(off, n)
	}
}

// StartWriteback asks that f's dirty pages of [off, off+n) start going to
// disk now, without waiting: a Sync that follows has less left to flush.
// Like DropCache, a no-op for files that cannot, and errors are ignored:
// only Sync decides durability.
func StartWriteback(f File, off, n int64) {
	if w, ok := f.(interface{ StartWriteback(off, n int64) error }); ok && n > 0 {
		_ = w.StartWriteback(off, n)
	}
}

// MkdirAllDurable creates dir and any missing parents, then fsyncs the
// parent of each directory it created, so the new entries survive a crash
// (a plain MkdirAll leaves them only in the page cache).
func MkdirAllDurable(fsys FS, dir string) error {
	var missing []string
	for p := filepath.Clean(dir); ; {
		_, err := fsys.Stat(p)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, p)
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	if len(missing) == 0 {
		return nil
	}
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := fsys.SyncDir(filepath.Dir(missing[i])); err != nil {
			return err
		}
	}
	return nil
}

// WriteFileAtomic replaces path with data so that a crash leaves either the
// old or the new content: write a temporary file (path + ".tmp"), fsync it,
// rename it into place, fsync the directory.
func WriteFileAtomic(fsys FS, path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := fsys.OpenFile(tmp, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	n, err := f.Write(data)
	if err == nil && n != len(data) {
		err = io.ErrShortWrite
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err != nil {
		fsys.Remove(tmp)
		return err
	}
	return fsys.SyncDir(filepath.Dir(path))
}

// ReadFile reads a whole small file, refusing one larger than limit bytes
// (a damaged or foreign file must not make the reader allocate its size).
func ReadFile(fsys FS, path string, limit int64) ([]byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	if size > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d expected", path, size, limit)
	}
	b := make([]byte, size)
	if n, err := f.ReadAt(b, 0); n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
