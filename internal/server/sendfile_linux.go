package server

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// sendFile sends n bytes of src at off to dst with sendfile(2), the bytes
// never entering the process, honouring dst's write deadline. handled is
// false when the kernel refuses sendfile for these files before anything
// was sent; the caller then copies.
func sendFile(dst *net.TCPConn, src syscall.Conn, off, n int64) (handled bool, err error) {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return false, nil
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return false, nil
	}
	sent := false
	var ioErr, waitErr error
	// Control pins the source descriptor for the duration; Write waits
	// (within the deadline) whenever the socket buffer is full.
	cerr := srcRC.Control(func(sfd uintptr) {
		waitErr = dstRC.Write(func(dfd uintptr) bool {
			for n > 0 {
				w, err := syscall.Sendfile(int(dfd), int(sfd), &off, int(min(n, 1<<30)))
				if w > 0 {
					n -= int64(w)
					sent = true
					sendfileBytes.Add(int64(w))
				}
				switch {
				case errors.Is(err, syscall.EAGAIN):
					return false
				case errors.Is(err, syscall.EINTR):
				case err != nil:
					ioErr = err
					return true
				case w == 0:
					ioErr = io.ErrUnexpectedEOF // the file ends before the section
					return true
				}
			}
			return true
		})
	})
	if cerr != nil {
		return sent, cerr
	}
	if ioErr == nil {
		ioErr = waitErr // a deadline or a closed socket while waiting
	}
	if !sent && (errors.Is(ioErr, syscall.EINVAL) || errors.Is(ioErr, syscall.ENOSYS)) {
		return false, nil
	}
	return true, ioErr
}
