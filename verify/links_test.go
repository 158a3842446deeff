package verify

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers every byte with itself.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip writes msg on c and reports whether the echo came back within
// wait.
func roundTrip(t *testing.T, c net.Conn, msg string, wait time.Duration) bool {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		return false
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return false
	}
	if string(buf) != msg {
		t.Fatalf("echo %q, sent %q", buf, msg)
	}
	return true
}

func dialLink(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestLinksCutHoldsTrafficThenClosesTheConnection: a cut link moves no
// bytes, old or new connections alike; its heal closes the connections
// that lived through it, and new ones pass.
func TestLinksCutHoldsTrafficThenClosesTheConnection(t *testing.T) {
	ls := NewLinks(1)
	defer ls.Close()
	addr, err := ls.Add(1, 2, echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	old := dialLink(t, addr)
	if !roundTrip(t, old, "before", 5*time.Second) {
		t.Fatal("no echo through an open link")
	}
	heal := ls.Cut(1, 2)
	if roundTrip(t, old, "during", 300*time.Millisecond) {
		t.Fatal("an echo came through a cut link")
	}
	fresh := dialLink(t, addr) // accepted, but reaches nothing
	if roundTrip(t, fresh, "new", 300*time.Millisecond) {
		t.Fatal("a connection made during the cut reached the other side")
	}
	heal()
	for _, c := range []net.Conn{old, fresh} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 64)); err == nil {
			t.Fatal("a connection that lived through a cut still delivers after the heal")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a connection that lived through a cut was not closed at the heal")
		}
	}
	after := dialLink(t, addr)
	if !roundTrip(t, after, "after", 5*time.Second) {
		t.Fatal("no echo through a healed link")
	}
	if s := ls.Stats(); s.CutConnections != 2 {
		t.Fatalf("stats %+v, want 2 cut connections", s)
	}
}

// TestLinksIsolateCutsOnlyTheNodesLinks: isolating node 1 cuts both
// directions of its links and leaves 2→3 alone.
func TestLinksIsolateCutsOnlyTheNodesLinks(t *testing.T) {
	ls := NewLinks(1)
	defer ls.Close()
	up := echoServer(t)
	addrs := map[[2]int]string{}
	for _, k := range [][2]int{{1, 2}, {2, 1}, {1, 3}, {3, 1}, {2, 3}} {
		a, err := ls.Add(k[0], k[1], up)
		if err != nil {
			t.Fatal(err)
		}
		addrs[k] = a
	}
	heal := ls.Isolate(1)
	for k, a := range addrs {
		got := roundTrip(t, dialLink(t, a), "x", 300*time.Millisecond)
		if want := k == [2]int{2, 3}; got != want {
			t.Errorf("link %d→%d passes=%v during the isolation of node 1, want %v", k[0], k[1], got, want)
		}
	}
	heal()
	for k, a := range addrs {
		if !roundTrip(t, dialLink(t, a), "y", 5*time.Second) {
			t.Errorf("link %d→%d does not pass after the heal", k[0], k[1])
		}
	}
}

// TestLinksDelayKeepsOrder: under a delay every byte arrives, in order.
func TestLinksDelayKeepsOrder(t *testing.T) {
	ls := NewLinks(3)
	defer ls.Close()
	addr, err := ls.Add(1, 2, echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	ls.SetDelay(20 * time.Millisecond)
	c := dialLink(t, addr)
	var want bytes.Buffer
	go func() {
		for i := range 200 {
			msg := []byte{byte(i)}
			c.Write(msg)
			time.Sleep(time.Millisecond)
		}
	}()
	for i := range 200 {
		want.WriteByte(byte(i))
	}
	got := make([]byte, 200)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("bytes reordered or changed under a delay: %v", got)
	}
	if ls.Stats().DelayedChunks == 0 {
		t.Fatal("nothing was delayed")
	}
}
