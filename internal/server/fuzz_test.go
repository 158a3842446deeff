package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// allVersions serves every key kmsg knows at every version, so the fuzzer
// reaches every request decoder.
type allVersions struct{}

func (allVersions) Versions(key int16) (int16, int16, bool) {
	r := kmsg.RequestForKey(key)
	if r == nil {
		return 0, 0, false
	}
	return 0, r.MaxVersion(), true
}

func (allVersions) Handle(context.Context, *Request) Reply { return Reply{} }

// FuzzDecode feeds arbitrary frame bodies to the request decoder: it must
// return an error or a request, never panic.
func FuzzDecode(f *testing.F) {
	for _, req := range []kmsg.Request{
		kmsg.NewPtrApiVersionsRequest(), kmsg.NewPtrMetadataRequest(), kmsg.NewPtrProduceRequest(), kmsg.NewPtrFetchRequest(),
		kmsg.NewPtrCreateTopicsRequest(), kmsg.NewPtrListOffsetsRequest(),
	} {
		for _, v := range []int16{0, 3, req.MaxVersion()} {
			if v > req.MaxVersion() {
				continue
			}
			req.SetVersion(v)
			frame := kmsg.NewRequestFormatter(kmsg.FormatterClientID("fuzz")).AppendRequest(nil, req, 7)
			f.Add(frame[4:])
		}
	}
	srv := New(nil, Config{}, allVersions{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &Conn{srv: srv, nc: a}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) < 8 {
			return
		}
		req, _, err := c.decode(body)
		if err == nil && req == nil {
			t.Fatal("nil request without error")
		}
		if req != nil {
			srv.budget.release(req.decodeCharge) // as the reader does once a request is done
		}
	})
}
