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
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/exactly/exactly/internal/broker"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/security"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Options configure a broker. The zero value is a working broker on a free
// loopback port with a temporary data directory.
type Options struct {
	// DataDir holds the logs and metadata (log.dirs). Empty: a temporary
	// directory removed by Close.
	DataDir string
	// Listen is the address of one PLAINTEXT listener, shorthand for
	// Config["listeners"]="PLAINTEXT://<Listen>" (setting both is an
	// error). Both empty: 127.0.0.1:0 (a free port).
	Listen string
	// Advertise is the host:port returned to clients of the first
	// listener in metadata, unless Config["advertised.listeners"] names
	// it. Empty: the actual listening address.
	Advertise string
	// ScramUsers are SCRAM credentials to create (or replace, if the
	// password or iterations differ) before the broker accepts
	// connections: the first users of a SASL listener, as
	// `exactly serve --add-scram` gives them.
	ScramUsers []ScramUser
	// Config holds broker configs by Kafka key (num.partitions,
	// log.retention.ms, message.max.bytes, ...).
	Config map[string]string
	// MetricsListen, if set, serves Prometheus metrics at /metrics there;
	// without a host (":9308") on loopback only. Config's
	// metrics.ssl.keystore.location makes it HTTPS and
	// metrics.basic.auth.users admits only those users (checked against
	// their SCRAM credentials).
	MetricsListen string
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// ShutdownGrace bounds how long Close waits for in-flight requests
	// (default 10s).
	ShutdownGrace time.Duration
	// JoinQuorum starts a cluster node whose metadata storage is empty
	// without bootstrapping the quorum: it waits to be added as a voter
	// (`exactly cluster add-voter`). `exactly serve --join`.
	JoinQuorum bool
	// AdoptSingleNode makes the data directory's single-node topics the
	// new cluster's: `exactly serve --adopt`, once, on the voter with the
	// lowest node id (docs/DESIGN.md, "Cluster").
	AdoptSingleNode bool
}

// ScramUser is one SCRAM credential to create at start.
type ScramUser struct {
	// Mechanism is SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string
	Name      string
	Password  string
	// Iterations defaults to 4096 (Kafka's default); 4096..16384.
	Iterations int
}

// Broker is a running broker.
type Broker struct {
	b        *broker.Broker
	srv      *server.Server
	tls      *security.TLS
	metrics  *metricsEndpoint
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

	lns, err := openListeners(opts, static)
	if err != nil {
		out.cleanupTemp()
		return nil, err
	}
	allLns := lns
	closeAll := func() {
		for _, l := range allLns {
			l.Net.Close()
		}
		out.cleanupTemp()
	}
	clusterCfg, clientLns, err := clusterConfig(static, lns, opts.JoinQuorum, opts.AdoptSingleNode)
	if err != nil {
		closeAll()
		return nil, err
	}
	advertised, err := advertisedListeners(opts, static, clientLns)
	if err != nil {
		closeAll()
		return nil, err
	}
	if clusterCfg != nil {
		clusterCfg.Listeners = registeredListeners(clientLns, advertised)
	}
	lns = clientLns
	if out.tls, err = loadTLS(static, lns); err != nil {
		closeAll()
		return nil, err
	}
	nodeID := int32(0)
	for _, k := range []string{"node.id", "broker.id"} {
		if v, ok := static[k]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				closeAll()
				return nil, fmt.Errorf("%s=%q is not a non-negative integer", k, v)
			}
			nodeID = int32(n)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	b, err := broker.New(broker.Config{
		FS: vfs.OS(), DataDir: dataDir, NodeID: nodeID,
		AdvertisedHost: advertised[lns[0].Name].Host, AdvertisedPort: advertised[lns[0].Name].Port,
		Advertised: advertised, Static: static, Logger: logger, Registry: reg, Cluster: clusterCfg,
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	out.b = b
	for _, u := range opts.ScramUsers {
		if u.Iterations == 0 {
			u.Iterations = security.MinScramIterations
		}
		outcome, err := b.UpsertScramPassword(u.Name, u.Mechanism, u.Password, u.Iterations)
		if err != nil {
			b.Close()
			closeAll()
			return nil, fmt.Errorf("SCRAM credential %s for %q: %w", u.Mechanism, u.Name, err)
		}
		logger.Info("SCRAM credential "+string(outcome), "user", u.Name, "mechanism", u.Mechanism, "iterations", u.Iterations)
	}
	brokerInt := func(key string) int64 {
		v, _ := b.Catalog().BrokerConfig(key)
		return cluster.Int64(v, 0)
	}
	ms := func(key string) time.Duration { return time.Duration(brokerInt(key)) * time.Millisecond }
	overridesValue, _ := b.Catalog().BrokerConfig("max.connections.per.ip.overrides")
	perIPOverrides, err := resolveConnectionOverrides(overridesValue)
	if err != nil {
		b.Close()
		closeAll()
		return nil, err
	}
	out.srv = server.NewListeners(lns, server.Config{
		MaxRequestBytes:              int32(brokerInt("socket.request.max.bytes")),
		SendBufferBytes:              int(brokerInt("socket.send.buffer.bytes")),
		ReceiveBufferBytes:           int(brokerInt("socket.receive.buffer.bytes")),
		IdleTimeout:                  ms("connections.max.idle.ms"),
		RequestReadTimeout:           ms("socket.request.read.timeout.ms"),
		WriteTimeout:                 ms("socket.response.write.timeout.ms"),
		MaxQueuedBytes:               brokerInt("queued.max.request.bytes"),
		MaxConnections:               int(brokerInt("max.connections")),
		MaxConnectionsPerIP:          int(brokerInt("max.connections.per.ip")),
		MaxConnectionsPerIPOverrides: perIPOverrides,
		// Produce appends every batch before its handler returns (the
		// fsync wait holds no request bytes), so its buffers can be
		// reused at once; they are most of what the broker allocates.
		RecycledKeys:   []int16{0},
		Authenticator:  b.Authenticator(),
		AuthTimeout:    ms("socket.request.read.timeout.ms"),
		MaxSaslReceive: int32(brokerInt("sasl.server.max.receive.size")),
		MaxReauth:      ms("connections.max.reauth.ms"),
	}, b, logger, b.Observer())
	go func() { out.serveErr <- out.srv.Serve() }()

	if opts.MetricsListen != "" {
		m, err := startMetrics(opts.MetricsListen, static, reg, b)
		if err != nil {
			out.Close()
			return nil, err
		}
		out.metrics = m
	}
	for _, l := range lns {
		a := advertised[l.Name]
		logger.Info("listening", "listener", l.Name, "security_protocol", string(l.Protocol),
			"listen", l.Net.Addr().String(), "advertise", net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port))))
	}
	logger.Info("broker started", "listen", lns[0].Net.Addr().String(),
		"data_dir", dataDir, "node_id", nodeID, "cluster_id", b.ClusterID())
	return out, nil
}

func (b *Broker) cleanupTemp() {
	if b.tempDir != "" {
		os.RemoveAll(b.tempDir)
	}
}

// Addr is the first listener's address (host:port): with Listen, the
// one clients bootstrap from.
func (b *Broker) Addr() string { return b.srv.Addr().String() }

// ListenerAddr is the address of the named listener ("SASL_SSL", ...),
// or "" if there is none.
func (b *Broker) ListenerAddr(name string) string {
	if a := b.srv.ListenerAddr(strings.ToUpper(name)); a != nil {
		return a.String()
	}
	return ""
}

// ReloadTLS reads the TLS listeners' certificate files
// (ssl.keystore.location, ssl.truststore.location) and the metrics
// endpoint's (metrics.ssl.keystore.location) again; connections accepted
// afterwards use them. On error the files in use are kept.
// `exactly serve` calls it on SIGHUP.
func (b *Broker) ReloadTLS() error {
	var errs []error
	for what, t := range map[string]*security.TLS{"listeners": b.tls, "metrics endpoint": b.metricsTLS()} {
		if t == nil {
			continue
		}
		if err := t.Reload(); err != nil {
			b.log.Error("TLS reload failed; keeping the certificates in use", "for", what, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			continue
		}
		b.log.Info("TLS certificates reloaded", "for", what)
	}
	return errors.Join(errs...)
}

// MetricsAddr is the metrics listener's address, or "" if none.
func (b *Broker) MetricsAddr() string {
	if b.metrics == nil {
		return ""
	}
	return b.metrics.ln.Addr().String()
}

func (b *Broker) metricsTLS() *security.TLS {
	if b.metrics == nil {
		return nil
	}
	return b.metrics.tls
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
		b.metrics.close()
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
