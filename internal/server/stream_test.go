package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// streamedReply answers with a body of a prefix, sections of a file and a
// suffix, and counts its releases.
type streamedReply struct {
	*kmsg.ApiVersionsResponse // any response type; only the frame matters
	parts                     []Part
	released                  *atomic.Int32
}

func (r *streamedReply) Parts() []Part { return r.parts }
func (r *streamedReply) Release()      { r.released.Add(1) }

type streamHandler struct{ reply func() Streamed }

func (h streamHandler) Versions(key int16) (int16, int16, bool) { return 0, 3, key == 18 }
func (h streamHandler) Handle(context.Context, *Request) Reply {
	return Reply{Wait: func() kmsg.Response { return h.reply() }}
}

func serveStreamed(t *testing.T, reply func() Streamed) string {
	t.Helper()
	return serveWith(t, streamHandler{reply})
}

// serveWith serves h on a loopback port (a 2 s write timeout, no logs)
// until the test ends, and returns the address.
func serveWith(t *testing.T, h Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(ln, Config{WriteTimeout: 2 * time.Second}, h, slog.New(slog.NewTextHandler(io.Discard, nil)), nopObserver{})
	go s.Serve()
	t.Cleanup(func() { s.Close(time.Second) })
	return ln.Addr().String()
}

// A streamed response arrives as one frame holding its parts in order:
// file sections sent with sendfile (an *os.File over plain TCP, sections
// larger than the socket buffers so the writer waits for the reader) or,
// for files sendfile cannot take, through a buffer. Its resources are
// released exactly once.
func TestStreamedResponse(t *testing.T) {
	content := make([]byte, 8<<20)
	rand.Read(content)
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		name string
		file io.ReaderAt
	}{{"sendfile", f}, {"copy", bytes.NewReader(content)}} {
		t.Run(tc.name, func(t *testing.T) {
			var released atomic.Int32
			before := sendfileBytes.Load()
			prefix, suffix := []byte("head"), []byte("tail")
			addr := serveStreamed(t, func() Streamed {
				return &streamedReply{ApiVersionsResponse: kmsg.NewPtrApiVersionsResponse(), released: &released, parts: []Part{
					{Bytes: prefix},
					{File: FileSection{File: tc.file, Off: 3, Len: 5 << 20}},
					{File: FileSection{File: tc.file, Off: 7 << 20, Len: 1 << 20}},
					{Bytes: suffix},
				}}
			})
			c := testenv.DialRaw(t, addr)
			for corr := int32(1); corr <= 2; corr++ {
				c.Send(testenv.Frame(kmsg.NewPtrApiVersionsRequest(), 3, corr))
			}
			want := append(append(append(append([]byte{}, prefix...), content[3:3+5<<20]...), content[7<<20:8<<20]...), suffix...)
			for corr := int32(1); corr <= 2; corr++ {
				time.Sleep(100 * time.Millisecond) // let the socket buffers fill
				body := c.ReadFrame()
				if got := int32(body[0])<<24 | int32(body[1])<<16 | int32(body[2])<<8 | int32(body[3]); got != corr {
					t.Fatalf("correlation %d, want %d", got, corr)
				}
				if !bytes.Equal(body[4:], want) { // ApiVersions v3 has no header tags
					t.Fatalf("response %d: %d bytes differ from the %d expected", corr, len(body)-4, len(want))
				}
			}
			waitFor(t, func() bool { return released.Load() == 2 }, "two releases")
			if sent := sendfileBytes.Load() - before; tc.name == "sendfile" && sent != 2*6<<20 || tc.name == "copy" && sent != 0 {
				t.Fatalf("%d bytes went by sendfile", sent)
			}
		})
	}
}

// A section the file cannot fill (it was truncated under the response)
// ends the connection: a frame promised by its size prefix cannot be
// completed, so nothing more may be written. Resources are still released.
func TestStreamedShortFileClosesConnection(t *testing.T) {
	var released atomic.Int32
	addr := serveStreamed(t, func() Streamed {
		return &streamedReply{ApiVersionsResponse: kmsg.NewPtrApiVersionsResponse(), released: &released, parts: []Part{
			{File: FileSection{File: bytes.NewReader(make([]byte, 100)), Off: 50, Len: 100}},
		}}
	})
	c := testenv.DialRaw(t, addr)
	c.Send(testenv.Frame(kmsg.NewPtrApiVersionsRequest(), 3, 1))
	c.NC.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, _ := io.ReadAll(c.NC)
	if len(got) >= 4+4+100 {
		t.Fatalf("read %d bytes: a whole frame from a short file", len(got))
	}
	waitFor(t, func() bool { return released.Load() == 1 }, "a release")
}

// A client that stops reading loses the connection after the write
// timeout, in the middle of a sendfile, and the response is released.
func TestStreamedStalledReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, make([]byte, 32<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var released atomic.Int32
	addr := serveStreamed(t, func() Streamed {
		return &streamedReply{ApiVersionsResponse: kmsg.NewPtrApiVersionsResponse(), released: &released, parts: []Part{
			{File: FileSection{File: f, Off: 0, Len: 32 << 20}},
		}}
	})
	c := testenv.DialRaw(t, addr)
	c.Send(testenv.Frame(kmsg.NewPtrApiVersionsRequest(), 3, 1))
	waitFor(t, func() bool { return released.Load() == 1 }, "a release after the write timeout")
	c.NC.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c.NC)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection still open after the write timeout")
	}
	if n >= 32<<20 {
		t.Fatalf("read all %d bytes from a stalled connection", n)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
