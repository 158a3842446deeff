package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TxnCommand returns the "txn" command: list, describe, describe-producers,
// find-hanging and abort, shaped like Kafka's kafka-transactions.sh (same
// subcommands, options and columns), for operating transactions on any
// Kafka-compatible broker.
func TxnCommand() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "txn",
		Short: "Inspect transactions and abort hanging ones (like kafka-transactions.sh)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	f.register(cmd)
	cmd.AddCommand(
		txnListCommand(f),
		txnDescribeCommand(f),
		txnDescribeProducersCommand(f),
		txnFindHangingCommand(f),
		txnAbortCommand(f),
	)
	return cmd
}

func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

func row(tw *tabwriter.Writer, cols ...any) {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(tw, strings.Join(s, "\t"))
}

func txnListCommand(f *adminFlags) *cobra.Command {
	var (
		states  []string
		pids    []int64
		pattern string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List transactional ids with their producer id and state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				var err error
				var ls kadm.ListedTransactions
				if pattern != "" {
					ls, err = adm.ListTransactionsByTxPattern(ctx, pids, states, pattern)
				} else {
					ls, err = adm.ListTransactions(ctx, pids, states)
				}
				if err != nil {
					return requestError("listing transactions", f.bootstrap, err)
				}
				tw := newTable(cmd.OutOrStdout(), "TransactionalId", "Coordinator", "ProducerId", "TransactionState")
				for _, l := range ls.Sorted() {
					row(tw, l.TxnID, l.Coordinator, l.ProducerID, l.State)
				}
				return tw.Flush()
			})
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&states, "state", nil, "only these states (Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort)")
	fl.Int64SliceVar(&pids, "producer-id", nil, "only these producer ids")
	fl.StringVar(&pattern, "transactional-id-pattern", "", "only transactional ids matching this regular expression")
	return cmd
}

func txnDescribeCommand(f *adminFlags) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "describe --transactional-id ID",
		Short: "Show a transactional id's state, producer, timeout and partitions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return errors.New("--transactional-id is required")
			}
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				ds, err := adm.DescribeTransactions(ctx, id)
				if err != nil {
					return requestError("describing transaction", f.bootstrap, err)
				}
				d, ok := ds[id]
				if !ok {
					return fmt.Errorf("describing transaction %q: the broker did not answer for it", id)
				}
				if d.Err != nil {
					if errors.Is(d.Err, kerr.TransactionalIDNotFound) {
						return fmt.Errorf("transactional id %q is not known to its coordinator", id)
					}
					return fmt.Errorf("describing transaction %q: %w", id, d.Err)
				}
				now := time.Now().UnixMilli()
				start, duration := "None", "None"
				if d.StartTimestamp >= 0 && (d.State == "Ongoing" || strings.HasPrefix(d.State, "Prepare")) {
					start = strconv.FormatInt(d.StartTimestamp, 10)
					duration = strconv.FormatInt(now-d.StartTimestamp, 10)
				}
				var parts []string
				d.Topics.EachPartitions(func(topic string, ps []int32) {
					for _, p := range ps {
						parts = append(parts, fmt.Sprintf("%s-%d", topic, p))
					}
				})
				sort.Strings(parts)
				tw := newTable(cmd.OutOrStdout(), "CoordinatorId", "TransactionalId", "ProducerId", "ProducerEpoch",
					"TransactionState", "TransactionTimeoutMs", "CurrentTransactionStartTimeMs", "TransactionDurationMs", "TopicPartitions")
				row(tw, d.Coordinator, d.TxnID, d.ProducerID, d.ProducerEpoch, d.State, d.TimeoutMillis, start, duration, strings.Join(parts, ","))
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&id, "transactional-id", "", "the transactional id to describe")
	return cmd
}

// topicPartitionsFlag is --topic with an optional --partition.
type topicPartitionsFlag struct {
	topic     string
	partition int32
}

func (tp *topicPartitionsFlag) add(cmd *cobra.Command, partitionRequired bool) {
	cmd.Flags().StringVar(&tp.topic, "topic", "", "the topic")
	usage := "the partition (default: every partition of --topic)"
	if partitionRequired {
		usage = "the partition"
	}
	cmd.Flags().Int32Var(&tp.partition, "partition", -1, usage)
}

// set resolves the flags to the partitions to ask about.
func (tp *topicPartitionsFlag) set(ctx context.Context, adm *kadm.Client) (kadm.TopicsSet, error) {
	if tp.topic == "" {
		return nil, errors.New("--topic is required")
	}
	s := kadm.TopicsSet{}
	if tp.partition >= 0 {
		s.Add(tp.topic, tp.partition)
		return s, nil
	}
	tds, err := adm.ListTopics(ctx, tp.topic)
	if err != nil {
		return nil, err
	}
	td, ok := tds[tp.topic]
	if !ok || td.Err != nil {
		return nil, fmt.Errorf("topic %q does not exist", tp.topic)
	}
	for p := range td.Partitions {
		s.Add(tp.topic, p)
	}
	return s, nil
}

func txnDescribeProducersCommand(f *adminFlags) *cobra.Command {
	var tp topicPartitionsFlag
	cmd := &cobra.Command{
		Use:   "describe-producers --topic TOPIC [--partition N]",
		Short: "Show the active producers of partitions and their open transactions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				set, err := tp.set(ctx, adm)
				if err != nil {
					return err
				}
				ds, err := adm.DescribeProducers(ctx, set)
				if err != nil {
					return requestError("describing producers", f.bootstrap, err)
				}
				tw := newTable(cmd.OutOrStdout(), "Topic", "Partition", "ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch",
					"LastSequence", "LastTimestamp", "CurrentTransactionStartOffset")
				var errs []error
				for _, p := range ds.SortedPartitions() {
					if p.Err != nil {
						errs = append(errs, fmt.Errorf("%s/%d: %w", p.Topic, p.Partition, p.Err))
						continue
					}
					for _, pr := range p.ActiveProducers.Sorted() {
						start := "None"
						if pr.CurrentTxnStartOffset >= 0 {
							start = strconv.FormatInt(pr.CurrentTxnStartOffset, 10)
						}
						row(tw, pr.Topic, pr.Partition, pr.ProducerID, pr.ProducerEpoch, pr.CoordinatorEpoch, pr.LastSequence, pr.LastTimestamp, start)
					}
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				return errors.Join(errs...)
			})
		},
	}
	tp.add(cmd, false)
	return cmd
}

// hanging is one open transaction on a partition that its coordinator does
// not have running with that partition.
type hanging struct {
	kadm.DescribedProducer
}

// findHanging returns the open transactions in set that are older than
// maxTimeout and that no coordinator will end: the producer's transactional
// id is unknown, or runs no transaction with this partition at this
// producer id. A transaction still within its timeout is never reported:
// it may be about to end normally.
func findHanging(ctx context.Context, adm *kadm.Client, set kadm.TopicsSet, maxTimeout time.Duration) ([]hanging, error) {
	ds, err := adm.DescribeProducers(ctx, set)
	if err != nil {
		return nil, err
	}
	cutoff := time.Now().Add(-maxTimeout).UnixMilli()
	var open []kadm.DescribedProducer
	var errs []error
	for _, p := range ds.SortedPartitions() {
		if p.Err != nil {
			errs = append(errs, fmt.Errorf("%s/%d: %w", p.Topic, p.Partition, p.Err))
			continue
		}
		for _, pr := range p.ActiveProducers.Sorted() {
			if pr.CurrentTxnStartOffset >= 0 && pr.LastTimestamp <= cutoff {
				open = append(open, pr)
			}
		}
	}
	if len(open) == 0 {
		return nil, errors.Join(errs...)
	}
	pidSet := map[int64]bool{}
	var pids []int64
	for _, pr := range open {
		if !pidSet[pr.ProducerID] {
			pidSet[pr.ProducerID] = true
			pids = append(pids, pr.ProducerID)
		}
	}
	ls, err := adm.ListTransactions(ctx, pids, nil)
	if err != nil {
		return nil, err
	}
	running := map[int64]kadm.DescribedTransaction{}
	if ids := ls.TransactionalIDs(); len(ids) > 0 {
		dts, err := adm.DescribeTransactions(ctx, ids...)
		if err != nil {
			return nil, err
		}
		for _, d := range dts {
			if d.Err == nil {
				running[d.ProducerID] = d
			}
		}
	}
	var out []hanging
	for _, pr := range open {
		d, ok := running[pr.ProducerID]
		if ok && (d.State == "Ongoing" || strings.HasPrefix(d.State, "Prepare")) {
			if ps, ok := d.Topics[pr.Topic]; ok {
				if _, in := ps[pr.Partition]; in {
					continue // its coordinator will end it
				}
			}
		}
		out = append(out, hanging{pr})
	}
	return out, errors.Join(errs...)
}

func txnFindHangingCommand(f *adminFlags) *cobra.Command {
	var (
		tp         topicPartitionsFlag
		maxTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "find-hanging --topic TOPIC [--partition N]",
		Short: "Find open transactions no coordinator will ever end (they hold back read_committed readers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.withAdmin(cmd, func(ctx context.Context, _ *kgo.Client, adm *kadm.Client) error {
				set, err := tp.set(ctx, adm)
				if err != nil {
					return err
				}
				hs, err := findHanging(ctx, adm, set, maxTimeout)
				tw := newTable(cmd.OutOrStdout(), "Topic", "Partition", "ProducerId", "ProducerEpoch", "CoordinatorEpoch",
					"StartOffset", "LastTimestamp", "Duration(min)")
				now := time.Now().UnixMilli()
				for _, h := range hs {
					row(tw, h.Topic, h.Partition, h.ProducerID, h.ProducerEpoch, h.CoordinatorEpoch, h.CurrentTxnStartOffset,
						h.LastTimestamp, (now-h.LastTimestamp)/60000)
				}
				if ferr := tw.Flush(); ferr != nil {
					return ferr
				}
				if err != nil {
					return requestError("finding hanging transactions", f.bootstrap, err)
				}
				return nil
			})
		},
	}
	tp.add(cmd, false)
	cmd.Flags().DurationVar(&maxTimeout, "max-transaction-timeout", 15*time.Minute,
		"only report transactions open longer than this (the broker's transaction.max.timeout.ms)")
	return cmd
}

func txnAbortCommand(f *adminFlags) *cobra.Command {
	var (
		tp               topicPartitionsFlag
		startOffset      int64
		producerID       int64
		producerEpoch    int16
		coordinatorEpoch int32
	)
	cmd := &cobra.Command{
		Use:   "abort --topic TOPIC --partition N (--start-offset O | --producer-id P --producer-epoch E --coordinator-epoch C)",
		Short: "Abort a hanging transaction on one partition by writing an ABORT marker",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tp.topic == "" || tp.partition < 0 {
				return errors.New("--topic and --partition are required")
			}
			byOffset := startOffset >= 0
			byProducer := producerID >= 0
			if byOffset == byProducer {
				return errors.New("give either --start-offset or --producer-id with --producer-epoch and --coordinator-epoch")
			}
			if byProducer && (producerEpoch < 0 || coordinatorEpoch < 0) {
				return errors.New("--producer-id needs --producer-epoch and --coordinator-epoch")
			}
			return f.withAdmin(cmd, func(ctx context.Context, cl *kgo.Client, adm *kadm.Client) error {
				if byOffset {
					set := kadm.TopicsSet{}
					set.Add(tp.topic, tp.partition)
					ds, err := adm.DescribeProducers(ctx, set)
					if err != nil {
						return requestError("describing producers", f.bootstrap, err)
					}
					found := false
					ds.EachProducer(func(pr kadm.DescribedProducer) {
						if pr.CurrentTxnStartOffset == startOffset {
							producerID, producerEpoch, coordinatorEpoch = pr.ProducerID, pr.ProducerEpoch, pr.CoordinatorEpoch
							found = true
						}
					})
					if !found {
						return fmt.Errorf("no open transaction starts at offset %d of %s/%d", startOffset, tp.topic, tp.partition)
					}
				}
				req := kmsg.NewPtrWriteTxnMarkersRequest()
				m := kmsg.NewWriteTxnMarkersRequestMarker()
				m.ProducerID, m.ProducerEpoch, m.CoordinatorEpoch, m.Committed = producerID, producerEpoch, coordinatorEpoch, false
				t := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
				t.Topic, t.Partitions = tp.topic, []int32{tp.partition}
				m.Topics = append(m.Topics, t)
				req.Markers = append(req.Markers, m)
				resp, err := req.RequestWith(ctx, cl)
				if err != nil {
					return requestError("writing the abort marker", f.bootstrap, err)
				}
				for _, rm := range resp.Markers {
					for _, rt := range rm.Topics {
						for _, rp := range rt.Partitions {
							if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
								return fmt.Errorf("aborting producer %d's transaction on %s/%d: %w", producerID, rt.Topic, rp.Partition, err)
							}
						}
					}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Aborted producer %d (epoch %d)'s transaction on %s/%d.\n", producerID, producerEpoch, tp.topic, tp.partition)
				return nil
			})
		},
	}
	tp.add(cmd, true)
	fl := cmd.Flags()
	fl.Int64Var(&startOffset, "start-offset", -1, "first offset of the transaction to abort (as find-hanging shows)")
	fl.Int64Var(&producerID, "producer-id", -1, "producer id of the transaction to abort")
	fl.Int16Var(&producerEpoch, "producer-epoch", -1, "its producer epoch")
	fl.Int32Var(&coordinatorEpoch, "coordinator-epoch", -1, "its coordinator epoch")
	return cmd
}
