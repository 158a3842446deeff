package testenv

import (
	"testing"

	"github.com/exactly/exactly/internal/freeport"
)

// FreeAddr is a loopback host:port free a moment ago, for a listener the
// code under test opens itself (a subprocess, or a cluster whose nodes
// must know each other's addresses before any of them listens); see
// package freeport for why it is not a kernel-picked port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}
