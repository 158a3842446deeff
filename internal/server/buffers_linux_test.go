package server

import (
	"io"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socket.send.buffer.bytes and socket.receive.buffer.bytes size every
// accepted connection's SO_SNDBUF and SO_RCVBUF (which Linux reports
// doubled); left at zero the kernel's own sizes stay.
func TestSocketBufferSizes(t *testing.T) {
	const send, recv = 96 << 10, 160 << 10
	for _, tc := range []struct {
		name string
		cfg  Config
		set  bool
	}{
		{"configured", Config{SendBufferBytes: send, ReceiveBufferBytes: recv}, true},
		{"kernel", Config{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			tc.cfg.WriteTimeout = time.Second
			s := New(ln, tc.cfg, streamHandler{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nopObserver{})
			go s.Serve()
			defer s.Close(time.Second)
			cl, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			var nc net.Conn
			waitFor(t, func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				for c := range s.conns {
					nc = c.nc
				}
				return nc != nil
			}, "the server to accept")
			snd, rcv := sockopt(t, nc, unix.SO_SNDBUF), sockopt(t, nc, unix.SO_RCVBUF)
			if tc.set && (snd != 2*send || rcv != 2*recv) {
				t.Fatalf("SO_SNDBUF %d, SO_RCVBUF %d; want %d and %d", snd, rcv, 2*send, 2*recv)
			}
			if !tc.set && (snd == 2*send || rcv == 2*recv) {
				t.Fatalf("SO_SNDBUF %d, SO_RCVBUF %d: sized without a config", snd, rcv)
			}
		})
	}
}

func sockopt(t *testing.T, nc net.Conn, opt int) int {
	t.Helper()
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}
