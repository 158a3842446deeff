package server

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Streamed is a response the writer sends in parts rather than encoding it
// into one buffer: its body may name byte ranges of files (a fetch's
// stored record batches), which go from the file to the socket with
// sendfile on a plain TCP connection, or through a small pooled buffer
// otherwise (TLS), never as one response-sized copy.
type Streamed interface {
	kmsg.Response
	// Parts returns the response body (after the response header) for
	// the response's version. The writer calls it once, when the
	// response's turn to be written comes.
	Parts() []Part
	// Release frees what the parts pin (open files). The writer calls it
	// exactly once, after the response is written or dropped.
	Release()
}

// Part is a piece of a streamed body: Bytes, or when Bytes is nil, File.
type Part struct {
	Bytes []byte
	File  FileSection
}

// FileSection is Len bytes of File at Off.
type FileSection struct {
	File     io.ReaderAt
	Off, Len int64
}

func (p Part) size() int64 {
	if p.Bytes != nil {
		return int64(len(p.Bytes))
	}
	return p.File.Len
}

// sendfileBytes counts the bytes sent with sendfile, for tests.
var sendfileBytes atomic.Int64

// copyBufs carry file bytes to connections sendfile cannot serve.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// writeStreamed writes out (earlier pipelined responses) and then resp as a
// size-prefixed frame, part by part, within the write timeout.
func (c *Conn) writeStreamed(out []byte, p pending, resp Streamed) (err error) {
	defer func() {
		if r := recover(); r != nil { // one bad response closes one connection
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	resp.SetVersion(p.version)
	parts := resp.Parts()
	hdr := 4
	if p.flex {
		hdr++
	}
	size := int64(hdr)
	for _, part := range parts {
		size += part.size()
	}
	if size > 1<<31-1 {
		return errors.New("streamed response over 2 GiB")
	}
	out = binary.BigEndian.AppendUint32(out, uint32(size))
	out = binary.BigEndian.AppendUint32(out, uint32(p.hdr.CorrelationID))
	if p.flex {
		out = append(out, 0) // empty response header tags
	}
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	for _, part := range parts {
		if part.Bytes != nil {
			out = append(out, part.Bytes...)
			continue
		}
		if len(out) > 0 {
			if _, err := c.nc.Write(out); err != nil {
				return err
			}
			out = out[:0]
		}
		if err := c.sendSection(part.File); err != nil {
			return err
		}
	}
	if len(out) > 0 {
		_, err := c.nc.Write(out)
		return err
	}
	return nil
}

// sendSection sends a file section: sendfile when both ends allow it, else
// reads and writes through a pooled buffer.
func (c *Conn) sendSection(fs FileSection) error {
	if tcp, ok := c.nc.(*net.TCPConn); ok {
		if src, ok := fs.File.(syscall.Conn); ok {
			if handled, err := sendFile(tcp, src, fs.Off, fs.Len); handled {
				return err
			}
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for off, end := fs.Off, fs.Off+fs.Len; off < end; {
		n := int(min(int64(len(buf)), end-off))
		got, err := fs.File.ReadAt(buf[:n], off)
		if got < n {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if _, err := c.nc.Write(buf[:n]); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}
