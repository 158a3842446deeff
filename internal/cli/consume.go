package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"
)

// consumeFlags holds the flags of the consume command.
type consumeFlags struct {
	connFlags
	fromBeginning  bool
	offset         string
	partition      int32
	count          int
	isolation      string
	group          string
	format         string
	timeout        time.Duration
	requestTimeout time.Duration
}

// ConsumeCommand returns the "consume TOPIC" command, which prints records
// to standard output through a kcat-like --format string until --count
// records were printed, --timeout passed without a new record, or the
// process receives SIGINT or SIGTERM (a clean, zero-status exit).
func ConsumeCommand() *cobra.Command {
	f := &consumeFlags{}
	cmd := &cobra.Command{
		Use:   "consume TOPIC",
		Short: "Print records of a topic",
		Long: "Print the records of TOPIC to standard output, one --format rendering each.\n" +
			"Starts at the end of every partition unless --from-beginning or --offset is given;\n" +
			"with --group, a committed group offset takes precedence, and offsets are\n" +
			"committed once records are printed.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConsume(cmd, args[0], f)
		},
	}
	fl := cmd.Flags()
	f.connFlags.register(fl)
	fl.BoolVar(&f.fromBeginning, "from-beginning", false, "start at the earliest offset (same as --offset earliest)")
	fl.StringVar(&f.offset, "offset", "", "start offset for every partition: earliest, latest, N (exact) or -N (N before the end)")
	fl.Int32Var(&f.partition, "partition", -1, "consume only this partition (-1: all partitions)")
	fl.IntVar(&f.count, "count", 0, "exit after printing this many records (0: no limit)")
	fl.StringVar(&f.isolation, "isolation", "read_uncommitted", "read_committed or read_uncommitted")
	fl.StringVar(&f.group, "group", "", "consume as a member of this consumer group, committing printed records")
	fl.StringVar(&f.format, "format", DefaultFormat, formatHelp)
	fl.DurationVar(&f.timeout, "timeout", 0, "exit after this long without a new record (0: wait forever)")
	fl.DurationVar(&f.requestTimeout, "request-timeout", 30*time.Second, "how long to wait for the brokers to answer a request")
	return cmd
}

// parseStartOffset maps --offset / --from-beginning to a franz-go offset.
// The default is the end of the log, as with kafka-console-consumer.
func parseStartOffset(fromBeginning bool, offset string, offsetSet bool) (kgo.Offset, error) {
	if fromBeginning && offsetSet {
		return kgo.Offset{}, errors.New("--from-beginning and --offset cannot be used together")
	}
	if fromBeginning {
		return kgo.NewOffset().AtStart(), nil
	}
	switch strings.ToLower(offset) {
	case "", "latest", "end":
		return kgo.NewOffset().AtEnd(), nil
	case "earliest", "beginning", "start":
		return kgo.NewOffset().AtStart(), nil
	}
	n, err := strconv.ParseInt(offset, 10, 64)
	if err != nil {
		return kgo.Offset{}, fmt.Errorf("invalid --offset %q: must be earliest, latest, N or -N", offset)
	}
	if n < 0 {
		return kgo.NewOffset().AtEnd().Relative(n), nil
	}
	return kgo.NewOffset().At(n), nil
}

// parseIsolation maps --isolation to franz-go's level.
func parseIsolation(s string) (kgo.IsolationLevel, error) {
	switch s {
	case "read_uncommitted":
		return kgo.ReadUncommitted(), nil
	case "read_committed":
		return kgo.ReadCommitted(), nil
	}
	return kgo.IsolationLevel{}, fmt.Errorf("invalid --isolation %q: must be read_committed or read_uncommitted", s)
}

func runConsume(cmd *cobra.Command, topic string, f *consumeFlags) error {
	format, err := parseFormat(f.format)
	if err != nil {
		return err
	}
	start, err := parseStartOffset(f.fromBeginning, f.offset, cmd.Flags().Changed("offset"))
	if err != nil {
		return err
	}
	isolation, err := parseIsolation(f.isolation)
	if err != nil {
		return err
	}
	partitionSet := cmd.Flags().Changed("partition")
	switch {
	case partitionSet && f.partition < 0:
		return fmt.Errorf("invalid --partition %d: must be 0 or more", f.partition)
	case partitionSet && f.group != "":
		return errors.New("--partition cannot be used with --group: the group assigns partitions")
	case f.count < 0:
		return fmt.Errorf("invalid --count %d: must be 0 or more", f.count)
	case f.timeout < 0:
		return fmt.Errorf("invalid --timeout %s: must not be negative", f.timeout)
	case f.requestTimeout <= 0:
		return fmt.Errorf("invalid --request-timeout %s: must be positive", f.requestTimeout)
	}
	silenceUsageOnRun(cmd)

	ctx, stop := signal.NotifyContext(commandContext(cmd), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := checkConsumable(ctx, f, topic, partitionSet); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while checking
		}
		return err
	}

	opts := []kgo.Opt{
		kgo.FetchIsolationLevel(isolation),
		kgo.ConsumeStartOffset(start),
	}
	if partitionSet {
		opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			topic: {f.partition: start},
		}))
	} else {
		opts = append(opts, kgo.ConsumeTopics(topic))
	}
	if f.group != "" {
		opts = append(opts, kgo.ConsumerGroup(f.group), kgo.DisableAutoCommit())
	}
	cl, err := newClient(&f.connFlags, opts...)
	if err != nil {
		return err
	}
	defer cl.Close()

	out := bufio.NewWriterSize(cmd.OutOrStdout(), 64<<10)
	defer out.Flush()
	stderr := cmd.ErrOrStderr()

	var (
		printed int
		buf     []byte
		idle    time.Time // when --timeout expires, if set
	)
	if f.timeout > 0 {
		idle = time.Now().Add(f.timeout)
	}
	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if f.timeout > 0 {
			pollCtx, cancel = context.WithDeadline(ctx, idle)
		}
		limit := 0
		if f.count > 0 {
			limit = f.count - printed
		}
		fetches := cl.PollRecords(pollCtx, limit)
		cancel()
		if fetches.IsClientClosed() {
			return nil
		}
		var fatal error
		fetches.EachError(func(t string, p int32, err error) {
			var loss *kgo.ErrDataLoss
			switch {
			case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			case errors.As(err, &loss):
				fmt.Fprintf(stderr, "warning: %v\n", err)
			case fatal == nil:
				if isUnknownTopic(err) {
					fatal = fmt.Errorf("topic %q does not exist", topic)
				} else {
					fatal = fmt.Errorf("consuming %s partition %d: %w", t, p, err)
				}
			}
		})
		recs := fetches.Records()
		for _, r := range recs {
			buf = format.appendRecord(buf[:0], r)
			if _, err := out.Write(buf); err != nil {
				return fmt.Errorf("writing output: %w", err)
			}
		}
		printed += len(recs)
		if err := out.Flush(); err != nil {
			return fmt.Errorf("writing output: %w", err)
		}
		if f.group != "" && len(recs) > 0 {
			// Commit even if a signal just arrived: these records
			// were printed.
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), f.requestTimeout)
			err := cl.CommitRecords(cctx, recs...)
			ccancel()
			if err != nil {
				return fmt.Errorf("committing offsets for group %q: %w", f.group, err)
			}
		}
		if fatal != nil {
			return fatal
		}
		if f.count > 0 && printed >= f.count {
			return nil
		}
		if ctx.Err() != nil {
			return nil // interrupted: a clean exit
		}
		if f.timeout > 0 {
			now := time.Now()
			if len(recs) > 0 {
				idle = now.Add(f.timeout)
			} else if !now.Before(idle) {
				return nil
			}
		}
	}
}

// checkConsumable fails early, with a readable message, if the topic or the
// requested partition does not exist: the consumer itself would silently
// wait for it to appear.
func checkConsumable(ctx context.Context, f *consumeFlags, topic string, partitionSet bool) error {
	cl, err := newClient(&f.connFlags)
	if err != nil {
		return err
	}
	defer cl.Close()
	partition := int32(-1)
	if partitionSet {
		partition = f.partition
	}
	return checkTopic(ctx, cl, f.bootstrap, topic, partition, f.requestTimeout)
}
