package testenv

import (
	"net"
	"testing"
)

// FreeAddr is a loopback host:port free a moment ago, for a listener the
// code under test opens itself (a subprocess, or a cluster whose nodes
// must know each other's addresses before any of them listens).
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
