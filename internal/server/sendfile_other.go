//go:build !linux

package server

import (
	"net"
	"syscall"
)

// sendFile is not used off Linux: the writer copies through a buffer.
func sendFile(*net.TCPConn, syscall.Conn, int64, int64) (bool, error) { return false, nil }
