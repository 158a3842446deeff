package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/cluster"
	"github.com/spf13/cobra"
)

// serveGCPercent is the broker process's GOGC when the environment sets
// none. Measured with exactly bench against a broker process: at 100,
// consume ran at 133 MB/s and a burst of produce requests after each
// commit stalled behind collections; at 400, 207 MB/s consume and
// transactional produce level with idempotent, for a peak RSS of about
// 150 MiB.
const serveGCPercent = 400

// serveMemoryLimit is the broker process's soft memory limit (Go's
// GOMEMLIMIT) when the environment sets none. GOGC=400 lets the heap grow
// to five times what is live before collecting, which is cheap while the
// live heap is tens of MiB but would let hostile clients, each within the
// broker's bounds (queued.max.request.bytes, fetch limits), push the
// process past a GiB; near this limit the collector runs as often as it
// must instead.
const serveMemoryLimit = 768 << 20

func serveCommand() *cobra.Command {
	var (
		dataDir, listen, advertise, configFile, metricsListen, logLevel string
		sets, addScram                                                  []string
		join, adopt                                                     bool
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the broker",
		Long: `Run the broker in the foreground until SIGINT or SIGTERM, then shut down
cleanly (stop accepting, answer requests already read, fsync, close).

Configuration uses Kafka's key names: --config reads a server.properties file,
--set key=value overrides single keys (repeatable). Flags win over both.

The Go garbage collector runs at GOGC=400 unless GOGC is set: the broker's
live heap is small (tens of MiB) and its garbage is mostly large,
short-lived request and fetch buffers, so collecting at the default 100%
growth spent more time in the collector than in moving data. Go's soft
memory limit is 768 MiB unless GOMEMLIMIT is set: near it the collector
runs more often, which keeps a broker under hostile load within about a
GiB.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SilenceUsage = true
			if os.Getenv("GOGC") == "" {
				debug.SetGCPercent(serveGCPercent)
			}
			if os.Getenv("GOMEMLIMIT") == "" {
				debug.SetMemoryLimit(serveMemoryLimit)
			}
			cfg := map[string]string{}
			if configFile != "" {
				f, err := os.Open(configFile)
				if err != nil {
					return err
				}
				props, err := cluster.ParseProperties(f)
				f.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", configFile, err)
				}
				for k, v := range props {
					cfg[k] = v
				}
			}
			for _, s := range sets {
				k, v, ok := strings.Cut(s, "=")
				if !ok || strings.TrimSpace(k) == "" {
					return fmt.Errorf("--set %q: want key=value", s)
				}
				cfg[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			// --listen is shorthand for one PLAINTEXT listener: its default
			// applies only when no `listeners` key is given.
			if !cmd.Flags().Changed("listen") && cfg["listeners"] != "" {
				listen = ""
			}
			scram, err := parseAddScram(addScram)
			if err != nil {
				return err
			}
			if cmd.Flags().Changed("data-dir") || cfg["log.dirs"] == "" {
				cfg["log.dirs"] = dataDir
			}
			for k, v := range cfg {
				if err := cluster.ValidateBrokerConfig(k, v); err != nil {
					return err
				}
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: %w", logLevel, err)
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if err := os.MkdirAll(cfg["log.dirs"], 0o755); err != nil {
				return err
			}
			b, err := exactly.Start(exactly.Options{
				DataDir: cfg["log.dirs"], Listen: listen, Advertise: advertise,
				Config: cfg, MetricsListen: metricsListen, Logger: logger, ScramUsers: scram, JoinQuorum: join, AdoptSingleNode: adopt,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "exactly: serving Kafka on %s (data in %s)\n", b.Addr(), cfg["log.dirs"])
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			s := <-sig
			for s == syscall.SIGHUP {
				b.ReloadTLS() // logs the outcome
				s = <-sig
			}
			logger.Info("shutting down", "signal", s.String())
			signal.Stop(sig)
			return b.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "./data", "directory for logs and metadata (log.dirs)")
	f.StringVar(&listen, "listen", "127.0.0.1:9092", "address to accept Kafka connections on")
	f.StringVar(&advertise, "advertise", "", "host:port returned to clients (default: the listen address)")
	f.StringVar(&configFile, "config", "", "server.properties file with Kafka broker keys")
	f.StringArrayVar(&sets, "set", nil, "broker config key=value (repeatable)")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve Prometheus metrics on this address; without a host (:9308) on loopback only")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.BoolVar(&join, "join", false, "a cluster node with empty metadata storage (new, or its disk wiped) waits to be added with 'exactly cluster add-voter' instead of bootstrapping the quorum")
	f.BoolVar(&adopt, "adopt", false, "grow a single node into a cluster: its topics become the new cluster's (once, on the voter with the lowest node.id; format the other nodes with its cluster id)")
	f.StringArrayVar(&addScram, "add-scram", nil, "create a SCRAM credential before serving, e.g. 'SCRAM-SHA-256=[name=admin,password=admin-secret]' (optional iterations=N; repeatable; replaces a credential whose password differs)")
	return cmd
}

// parseAddScram parses --add-scram values in kafka-storage.sh's form:
// MECHANISM=[name=NAME,password=PASSWORD(,iterations=N)]. A password with
// a comma or bracket may be quoted: password="a,b".
func parseAddScram(vals []string) ([]exactly.ScramUser, error) {
	var out []exactly.ScramUser
	for _, v := range vals {
		mech, rest, ok := strings.Cut(v, "=")
		body, ok2 := strings.CutPrefix(rest, "[")
		body, ok3 := strings.CutSuffix(body, "]")
		if !ok || !ok2 || !ok3 {
			return nil, fmt.Errorf("--add-scram %q: want MECHANISM=[name=NAME,password=PASSWORD]", v)
		}
		u := exactly.ScramUser{Mechanism: strings.TrimSpace(mech)}
		for body != "" {
			var k, val string
			k, body, _ = strings.Cut(body, "=")
			if strings.HasPrefix(body, `"`) {
				end := strings.Index(body[1:], `"`)
				if end < 0 {
					return nil, fmt.Errorf("--add-scram %q: unterminated quote", v)
				}
				val, body = body[1:1+end], strings.TrimPrefix(body[2+end:], ",")
			} else {
				val, body, _ = strings.Cut(body, ",")
			}
			switch strings.TrimSpace(k) {
			case "name":
				u.Name = val
			case "password":
				u.Password = val
			case "iterations":
				n, err := strconv.Atoi(val)
				if err != nil {
					return nil, fmt.Errorf("--add-scram %q: iterations %q is not a number", v, val)
				}
				u.Iterations = n
			default:
				return nil, fmt.Errorf("--add-scram %q: unknown field %q (name, password, iterations)", v, k)
			}
		}
		if u.Name == "" || u.Password == "" {
			return nil, fmt.Errorf("--add-scram %q: name and password are required", v)
		}
		out = append(out, u)
	}
	return out, nil
}
