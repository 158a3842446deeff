// Package freeport picks loopback ports for servers a test or a tool
// starts a moment later (brokers, cluster nodes), where the port must be
// known before the process binds it.
//
// A port taken from the kernel with a ":0" listen and released again is
// in the ephemeral range, where the kernel also picks the local ports of
// outgoing connections and other ":0" listens: under a busy parallel test
// run one of those can take it before the server binds it ("address
// already in use"). Ports below that range are handed out only on
// request, so they are drawn from there instead, and checked free.
package freeport

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// lo and hi bound the ports drawn: below Linux's default ephemeral range
// (32768-60999) and above the usual well-known services.
const lo, hi = 20000, 32767

// given are the ports this process handed out: never twice, since the
// first taker may not have bound it yet.
var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// Addr returns a 127.0.0.1:port that was free a moment ago, drawn below
// the ephemeral range; after many taken draws it falls back to a port the
// kernel picks.
func Addr() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 50 {
		port := lo + rand.IntN(hi-lo+1)
		if given[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			given[port] = true
			return addr, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
