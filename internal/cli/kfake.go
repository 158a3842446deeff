package cli

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"
)

// KFakeCommand returns the hidden "kfake" command: franz-go's in-process
// fake cluster (one broker) as a process of its own, so `exactly bench
// --kfake` can measure it next to an exactly broker with the same client,
// and read its CPU time from /proc apart from the client's. It takes the
// flags internal/managed gives `exactly serve`, so bench starts it the
// same way.
func KFakeCommand() *cobra.Command {
	var (
		listen, dataDir, logLevel string
		set                       []string
		durable                   bool
	)
	cmd := &cobra.Command{
		Use:    "kfake",
		Short:  "Run franz-go's kfake as a one-broker cluster (for exactly bench --kfake)",
		Hidden: true,
		Long: `Run franz-go's kfake fake cluster with one broker on --listen until
SIGINT or SIGTERM. Without --durable its log lives in memory and --data-dir
is not used; with --durable it persists to --data-dir and fsyncs every
written batch (kfake.DataDir and kfake.SyncWrites). --set key=value passes
broker configs kfake knows (message.max.bytes, transaction.max.timeout.ms,
...).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level, err := kfakeLogLevel(logLevel)
			if err != nil {
				return err
			}
			configs := map[string]string{}
			for _, kv := range set {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--set %q: want key=value", kv)
				}
				configs[k] = v
			}
			// kfake listens on 127.0.0.1 and a port of its choosing;
			// the listener function puts it on the address asked for.
			opts := []kfake.Opt{kfake.NumBrokers(1), kfake.BrokerConfigs(configs),
				kfake.WithLogger(kfake.BasicLogger(cmd.ErrOrStderr(), level)),
				kfake.ListenFn(func(network, _ string) (net.Listener, error) { return net.Listen(network, listen) }),
			}
			if durable {
				if dataDir == "" {
					return fmt.Errorf("--durable needs --data-dir")
				}
				opts = append(opts, kfake.DataDir(dataDir), kfake.SyncWrites())
			}
			silenceUsageOnRun(cmd)
			c, err := kfake.NewCluster(opts...)
			if err != nil {
				return err
			}
			defer c.Close()
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sig)
			select {
			case <-sig:
			case <-commandContext(cmd).Done():
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:9092", "address of the one broker")
	f.StringVar(&dataDir, "data-dir", "", "where a --durable cluster persists its state")
	f.BoolVar(&durable, "durable", false, "persist to --data-dir with an fsync per written batch (default: memory only)")
	f.StringVar(&logLevel, "log-level", "warn", "none, error, warn, info or debug")
	f.StringArrayVar(&set, "set", nil, "a broker config key=value (repeatable)")
	return cmd
}

func kfakeLogLevel(s string) (kfake.LogLevel, error) {
	levels := map[string]kfake.LogLevel{"none": kfake.LogLevelNone, "error": kfake.LogLevelError,
		"warn": kfake.LogLevelWarn, "info": kfake.LogLevelInfo, "debug": kfake.LogLevelDebug}
	l, ok := levels[strings.ToLower(s)]
	if !ok {
		return 0, fmt.Errorf("--log-level %q: want none, error, warn, info or debug", s)
	}
	return l, nil
}
