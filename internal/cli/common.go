package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultBootstrapServer is the broker address used when --bootstrap-server
// is not given.
const DefaultBootstrapServer = "127.0.0.1:9092"

// clientID identifies the CLI's connections in broker logs.
const clientID = "exactly-cli"

// addBootstrapFlag registers --bootstrap-server / -b on fs.
func addBootstrapFlag(fs *pflag.FlagSet, p *string) {
	fs.StringVarP(p, "bootstrap-server", "b", DefaultBootstrapServer,
		"comma-separated host:port list of brokers to bootstrap from")
}

// adminFlags are the connection flags of every admin command group (topic,
// group, txn, quota, user, acl): the connection flags and --request-timeout.
type adminFlags struct {
	connFlags
	requestTimeout time.Duration
}

// register adds the flags to cmd for it and all its subcommands.
func (f *adminFlags) register(cmd *cobra.Command) {
	f.connFlags.register(cmd.PersistentFlags())
	cmd.PersistentFlags().DurationVar(&f.requestTimeout, "request-timeout", 30*time.Second,
		"how long to wait for the brokers to answer")
}

// withAdmin is every admin subcommand's connection: it connects, runs fn
// with a context bounded by --request-timeout, and closes. Errors from
// here on are the brokers' answers, not usage mistakes, so cobra's usage
// text is silenced.
func (f *adminFlags) withAdmin(cmd *cobra.Command, fn func(ctx context.Context, cl *kgo.Client, adm *kadm.Client) error) error {
	silenceUsageOnRun(cmd)
	cl, err := newClient(&f.connFlags)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(commandContext(cmd), f.requestTimeout)
	defer cancel()
	return fn(ctx, cl, kadm.NewClient(cl))
}

// seedBrokers splits a --bootstrap-server value into its addresses.
func seedBrokers(bootstrap string) ([]string, error) {
	var seeds []string
	for _, s := range strings.Split(bootstrap, ",") {
		if s = strings.TrimSpace(s); s != "" {
			seeds = append(seeds, s)
		}
	}
	if len(seeds) == 0 {
		return nil, errors.New("--bootstrap-server must name at least one host:port")
	}
	return seeds, nil
}

// commandContext returns the command's context, or a background context
// when the command is run without one.
func commandContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

// silenceUsageOnRun stops cobra from printing the usage text for errors
// that happen after the arguments were accepted: a broker error is not a
// usage mistake.
func silenceUsageOnRun(cmd *cobra.Command) { cmd.SilenceUsage = true }

// requestError turns a client or transport error into a readable message.
// what describes the operation ("listing topics").
func requestError(what, bootstrap string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: no answer from %s in time (is the broker running?)", what, bootstrap)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		addr := bootstrap
		if opErr.Addr != nil {
			addr = opErr.Addr.String()
		}
		return fmt.Errorf("%s: cannot connect to broker %s: %v", what, addr, opErr.Err)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: interrupted", what)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// topicError turns a per-topic broker error into a readable message.
// what describes the operation ("creating topic"), msg is the broker's
// optional error message.
func topicError(what, topic string, err error, msg string) error {
	switch {
	case errors.Is(err, kerr.TopicAlreadyExists):
		return fmt.Errorf("topic %q already exists", topic)
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return fmt.Errorf("topic %q does not exist", topic)
	}
	if msg != "" {
		return fmt.Errorf("%s %q: %w (%s)", what, topic, err, msg)
	}
	return fmt.Errorf("%s %q: %w", what, topic, err)
}

// isUnknownTopic reports whether err says that a topic does not exist.
func isUnknownTopic(err error) bool {
	return errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID)
}

// parseKeyValue splits "k=v" on the first '='. flag names the flag for the
// error message. The key must not be empty; the value may be.
func parseKeyValue(flag, s string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("invalid %s %q: expected key=value", flag, s)
	}
	return k, v, nil
}

// checkTopic fails with a readable message if topic does not exist or, when
// partition is not negative, has no such partition. Producers and consumers
// alone would wait for the topic to appear or report an opaque error.
func checkTopic(ctx context.Context, cl *kgo.Client, bootstrap, topic string, partition int32, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tds, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err != nil {
		return requestError("looking up topic", bootstrap, err)
	}
	td, ok := tds[topic]
	switch {
	case !ok || isUnknownTopic(td.Err):
		return fmt.Errorf("topic %q does not exist", topic)
	case td.Err != nil:
		return topicError("looking up topic", topic, td.Err, "")
	}
	if partition >= 0 {
		if _, ok := td.Partitions[partition]; !ok {
			return fmt.Errorf("partition %d of topic %q does not exist (it has %d partitions)", partition, topic, len(td.Partitions))
		}
	}
	return nil
}
