package vfs

import "golang.org/x/sys/unix"

// StartWriteback asks the kernel to begin writing [off, off+n) to disk
// without waiting for it (sync_file_range SYNC_FILE_RANGE_WRITE). It
// promises nothing about durability — only Sync does — but a Sync that
// follows finds less left to flush, which shortens the wait of every
// acknowledgement behind it.
func (f osFile) StartWriteback(off, n int64) error {
	return unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
