package broker

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// memBroker is a broker on an in-memory filesystem with no listener, for
// tests that call Handle directly; reg may be nil. It is closed when the
// test ends.
func memBroker(t *testing.T, static map[string]string, reg *prometheus.Registry) *Broker {
	t.Helper()
	cfg := Config{FS: vfs.NewMem(), DataDir: "/data", AdvertisedHost: "127.0.0.1", AdvertisedPort: 9092,
		Static: static, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if reg != nil { // a nil *Registry in the interface would be used
		cfg.Registry = reg
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// handleDirect answers req at its version as Handle does for a
// connection, waiting for a deferred reply.
func handleDirect(b *Broker, req kmsg.Request) kmsg.Response {
	reply := b.Handle(context.Background(), &server.Request{Msg: req, Header: server.Header{APIKey: req.Key(), APIVersion: req.GetVersion()}})
	if reply.Wait != nil {
		return reply.Wait()
	}
	return reply.Response
}
