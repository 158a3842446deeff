// Package exactly starts an exactly broker in-process: a durable,
// Kafka-wire-compatible single-node broker that any Kafka client can talk
// to. It is the same broker `exactly serve` runs, for use in Go programs and
// in tests:
//
//	b, err := exactly.Start(exactly.Options{})
//	if err != nil { ... }
//	defer b.Close()
//	client, _ := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
//
// In tests, NewTestBroker starts a broker on a free port with a temporary
// data directory and stops it when the test ends.
package exactly

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/broker"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configure a broker. The zero value is a working broker on a free
// loopback port with a temporary data directory.
type Options struct {
	// DataDir holds the logs and metadata (log.dirs). Empty: a temporary
	// directory removed by Close.
	DataDir string
	// Listen is the address to accept Kafka connections on. Empty:
	// 127.0.0.1:0 (a free port).
	Listen string
	// Advertise is the host:port returned to clients in metadata. Empty:
	// the actual listening address.
	Advertise string
	// Config holds broker configs by Kafka key (num.partitions,
	// log.retention.ms, message.max.bytes, ...).
	Config map[string]string
	// MetricsListen, if set, serves Prometheus metrics at /metrics there.
	MetricsListen string
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// ShutdownGrace bounds how long Close waits for in-flight requests
	// (default 10s).
	ShutdownGrace time.Duration
}

// Broker is a running broker.
type Broker struct {
	b        *broker.Broker
	srv      *server.Server
	metrics  *http.Server
	mln      net.Listener
	tempDir  string
	grace    time.Duration
	serveErr chan error
	log      *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// Start opens (recovering if needed) the data directory and starts serving.
func Start(opts Options) (*Broker, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	static := map[string]string{}
	for k, v := range opts.Config {
		static[k] = v
	}
	out := &Broker{grace: opts.ShutdownGrace, serveErr: make(chan error, 1), log: logger}
	if out.grace <= 0 {
		out.grace = 10 * time.Second
	}
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = static["log.dirs"]
	}
	if dataDir == "" {
		d, err := os.MkdirTemp("", "exactly-")
		if err != nil {
			return nil, err
		}
		dataDir, out.tempDir = d, d
	}
	if i := strings.IndexByte(dataDir, ','); i >= 0 {
		return nil, fmt.Errorf("log.dirs %q: only one data directory is supported", dataDir)
	}
	static["log.dirs"] = dataDir

	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		out.cleanupTemp()
		return nil, fmt.Errorf("listening on %s: %w", listen, err)
	}
	advertise := opts.Advertise
	if advertise == "" {
		advertise = ln.Addr().String()
	}
	host, portStr, err := net.SplitHostPort(advertise)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port <= 0 || port > 65535 {
		ln.Close()
		out.cleanupTemp()
		return nil, fmt.Errorf("advertised address %q is not host:port", advertise)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		ln.Close()
		out.cleanupTemp()
		return nil, fmt.Errorf("advertised address %q must name a host clients can reach (use --advertise)", advertise)
	}
	nodeID := int32(0)
	for _, k := range []string{"node.id", "broker.id"} {
		if v, ok := static[k]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				ln.Close()
				out.cleanupTemp()
				return nil, fmt.Errorf("%s=%q is not a non-negative integer", k, v)
			}
			nodeID = int32(n)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	b, err := broker.New(broker.Config{
		FS: vfs.OS(), DataDir: dataDir, NodeID: nodeID,
		AdvertisedHost: host, AdvertisedPort: int32(port),
		Static: static, Logger: logger, Registry: reg,
	})
	if err != nil {
		ln.Close()
		out.cleanupTemp()
		return nil, err
	}
	out.b = b
	brokerInt := func(key string) int64 {
		v, _ := b.Catalog().BrokerConfig(key)
		return cluster.Int64(v, 0)
	}
	ms := func(key string) time.Duration { return time.Duration(brokerInt(key)) * time.Millisecond }
	out.srv = server.New(ln, server.Config{
		MaxRequestBytes:     int32(brokerInt("socket.request.max.bytes")),
		IdleTimeout:         ms("connections.max.idle.ms"),
		RequestReadTimeout:  ms("socket.request.read.timeout.ms"),
		WriteTimeout:        ms("socket.response.write.timeout.ms"),
		MaxQueuedBytes:      brokerInt("queued.max.request.bytes"),
		MaxConnections:      int(brokerInt("max.connections")),
		MaxConnectionsPerIP: int(brokerInt("max.connections.per.ip")),
		// Produce appends every batch before its handler returns (the
		// fsync wait holds no request bytes), so its buffers can be
		// reused at once; they are most of what the broker allocates.
		RecycledKeys: []int16{0},
	}, b, logger, b.Observer())
	go func() { out.serveErr <- out.srv.Serve() }()

	if opts.MetricsListen != "" {
		mln, err := net.Listen("tcp", opts.MetricsListen)
		if err != nil {
			out.Close()
			return nil, fmt.Errorf("metrics listener %s: %w", opts.MetricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		out.mln = mln
		out.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go out.metrics.Serve(mln)
	}
	logger.Info("broker started", "listen", ln.Addr().String(), "advertise", advertise,
		"data_dir", dataDir, "node_id", nodeID, "cluster_id", b.ClusterID())
	return out, nil
}

func (b *Broker) cleanupTemp() {
	if b.tempDir != "" {
		os.RemoveAll(b.tempDir)
	}
}

// Addr is the address clients should bootstrap from (host:port).
func (b *Broker) Addr() string { return b.srv.Addr().String() }

// MetricsAddr is the metrics listener's address, or "" if none.
func (b *Broker) MetricsAddr() string {
	if b.mln == nil {
		return ""
	}
	return b.mln.Addr().String()
}

// ClusterID is the cluster ID stored in the data directory.
func (b *Broker) ClusterID() string { return b.b.ClusterID() }

// Close shuts down cleanly: stop accepting, answer requests already read,
// fsync and close every log. A temporary data directory is removed. Close
// may be called more than once (a test may close a NewTestBroker early to
// check what survives); later calls return the first call's result.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.close() })
	return b.closeErr
}

func (b *Broker) close() error {
	if b.metrics != nil {
		b.metrics.Close()
	}
	if b.srv != nil {
		b.srv.Close(b.grace)
	}
	var err error
	if b.b != nil {
		err = b.b.Close()
	}
	if b.srv != nil {
		if serr := <-b.serveErr; serr != nil && !errors.Is(serr, net.ErrClosed) {
			err = errors.Join(err, serr)
		}
	}
	b.cleanupTemp()
	b.log.Info("broker stopped")
	return err
}

// TB is the part of testing.TB that NewTestBroker needs.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
}

// NewTestBroker starts a broker with defaults for a test and closes it when
// the test ends. Pass Options to override (e.g. Config).
func NewTestBroker(t TB, opts ...Options) *Broker {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	b, err := Start(o)
	if err != nil {
		t.Fatalf("starting exactly broker: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
