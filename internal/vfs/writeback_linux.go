package vfs

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// StartWriteback asks the kernel to begin writing [off, off+n) to disk
// without waiting for it (sync_file_range SYNC_FILE_RANGE_WRITE). It
// promises nothing about durability — only Sync does — but a Sync that
// follows finds less left to flush, which shortens the wait of every
// acknowledgement behind it.
func (f osFile) StartWriteback(off, n int64) error {
	return unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// DropCache asks the kernel to drop the cached pages of [off, off+n)
// (posix_fadvise POSIX_FADV_DONTNEED). Only clean pages go: dirty ones are
// written first or kept, so it never loses data, only memory contents a
// later read has to fetch from disk again.
func (f osFile) DropCache(off, n int64) error {
	return unix.Fadvise(int(f.Fd()), off, n, unix.FADV_DONTNEED)
}

// CachedPages reports, for each page of the first size bytes of the file
// at path, whether it is in the page cache (mincore(2)): what DropCache
// did, for tests and diagnosis.
func CachedPages(path string, size int64) ([]bool, error) {
	if size <= 0 {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (int(size)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return nil, errno
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out, nil
}
