package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// maxReportedErrors bounds how many individual record failures produce
// prints before only counting them.
const maxReportedErrors = 10

// produceFlags holds the flags of the produce command.
type produceFlags struct {
	connFlags
	keySeparator    string
	acks            string
	partition       int32
	headers         []string
	compression     string
	idempotent      bool
	deliveryTimeout time.Duration
}

// ProduceCommand returns the "produce TOPIC" command, which sends every line
// of standard input as one record, reports a summary on standard error and
// fails if any record could not be delivered.
func ProduceCommand() *cobra.Command {
	f := &produceFlags{}
	cmd := &cobra.Command{
		Use:   "produce TOPIC",
		Short: "Produce standard input lines as records",
		Long: "Produce every line of standard input as one record to TOPIC.\n" +
			"With --key-separator, the text before the first separator is the key.\n" +
			"A summary is printed on standard error; the exit status is non-zero if\n" +
			"any record failed.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runProduce(cmd, args[0], f)
		},
	}
	fl := cmd.Flags()
	f.connFlags.register(fl)
	fl.StringVar(&f.keySeparator, "key-separator", "", "split each line into key and value on the first occurrence of this string")
	fl.StringVar(&f.acks, "acks", "all", "acknowledgements to wait for: 0, 1 or all")
	fl.Int32Var(&f.partition, "partition", -1, "produce every record to this partition (-1: chosen by key hash)")
	fl.StringArrayVar(&f.headers, "header", nil, "header key=value added to every record (repeatable)")
	fl.StringVar(&f.compression, "compression", "none", "batch compression: none, gzip, snappy, lz4 or zstd")
	fl.BoolVar(&f.idempotent, "idempotent", true, "idempotent writes (needs --acks all; off by default with --acks 0 or 1)")
	fl.DurationVar(&f.deliveryTimeout, "delivery-timeout", 30*time.Second, "give up on a record not acknowledged within this time")
	return cmd
}

// parseAcks maps an --acks value to franz-go's setting.
func parseAcks(s string) (kgo.Acks, bool, error) {
	switch s {
	case "0":
		return kgo.NoAck(), false, nil
	case "1":
		return kgo.LeaderAck(), false, nil
	case "all", "-1":
		return kgo.AllISRAcks(), true, nil
	}
	return kgo.Acks{}, false, fmt.Errorf("invalid --acks %q: must be 0, 1 or all", s)
}

// parseCompression maps a --compression value to franz-go's codec.
func parseCompression(s string) (kgo.CompressionCodec, error) {
	switch s {
	case "none", "":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("invalid --compression %q: must be none, gzip, snappy, lz4 or zstd", s)
}

func runProduce(cmd *cobra.Command, topic string, f *produceFlags) error {
	acks, allAcks, err := parseAcks(f.acks)
	if err != nil {
		return err
	}
	codec, err := parseCompression(f.compression)
	if err != nil {
		return err
	}
	if f.deliveryTimeout <= 0 {
		return fmt.Errorf("invalid --delivery-timeout %s: must be positive", f.deliveryTimeout)
	}
	partitionSet := cmd.Flags().Changed("partition")
	if partitionSet && f.partition < 0 {
		return fmt.Errorf("invalid --partition %d: must be 0 or more", f.partition)
	}
	var headers []kgo.RecordHeader
	for _, h := range f.headers {
		k, v, err := parseKeyValue("--header", h)
		if err != nil {
			return err
		}
		headers = append(headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	opts := []kgo.Opt{
		kgo.RequiredAcks(acks),
		kgo.ProducerBatchCompression(codec),
		kgo.RecordDeliveryTimeout(f.deliveryTimeout),
	}
	switch {
	case allAcks && !f.idempotent:
		opts = append(opts, kgo.DisableIdempotentWrite())
	case !allAcks && f.idempotent && cmd.Flags().Changed("idempotent"):
		return errors.New("--idempotent requires --acks all")
	case !allAcks:
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	if partitionSet {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	silenceUsageOnRun(cmd)

	cl, err := newClient(&f.connFlags, opts...)
	if err != nil {
		return err
	}

	if partitionSet {
		if err := checkTopic(commandContext(cmd), cl, f.bootstrap, topic, f.partition, 30*time.Second); err != nil {
			cl.Close()
			return err
		}
	}

	// The first SIGINT/SIGTERM stops reading and delivers what was read;
	// stop() then restores the default handling, so a second one kills.
	sigCtx, stop := signal.NotifyContext(commandContext(cmd), os.Interrupt, syscall.SIGTERM)
	defer stop()

	stderr := cmd.ErrOrStderr()
	var (
		sent, failed atomic.Int64
		wg           sync.WaitGroup
		errMu        sync.Mutex
		reported     int
	)
	partition := int32(-1) // for messages: the partition asked for, if any
	if partitionSet {
		partition = f.partition
	}
	report := func(line int64, err error) {
		failed.Add(1)
		errMu.Lock()
		defer errMu.Unlock()
		if reported < maxReportedErrors {
			fmt.Fprintf(stderr, "line %d: %v\n", line, produceError(topic, partition, err))
		} else if reported == maxReportedErrors {
			fmt.Fprintln(stderr, "(further record errors not shown)")
		}
		reported++
	}

	// Records are produced with a context that outlives an interrupt, so
	// lines already read are still delivered (bounded by
	// --delivery-timeout); only reading stops on a signal.
	prodCtx := context.WithoutCancel(commandContext(cmd))
	lines := readLines(cmd.InOrStdin())
	var (
		lineNo  int64
		readErr error
	)
read:
	for {
		var l lineOrErr
		var ok bool
		select {
		case <-sigCtx.Done():
			break read
		case l, ok = <-lines:
		}
		if !ok {
			break
		}
		if l.err != nil {
			readErr = l.err
			break
		}
		lineNo++
		n := lineNo
		rec := &kgo.Record{Topic: topic, Value: l.line, Headers: headers}
		if partitionSet {
			rec.Partition = f.partition
		}
		if f.keySeparator != "" {
			k, v, found := bytes.Cut(l.line, []byte(f.keySeparator))
			if !found {
				report(n, fmt.Errorf("key separator %q not found", f.keySeparator))
				continue
			}
			rec.Key, rec.Value = k, v
		}
		wg.Add(1)
		cl.Produce(prodCtx, rec, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				report(n, err)
				return
			}
			sent.Add(1)
		})
	}
	interrupted := sigCtx.Err() != nil
	stop()
	// Flush waits for every buffered record; each ends by
	// --delivery-timeout at the latest.
	_ = cl.Flush(prodCtx)
	cl.Close()
	wg.Wait()

	total := lineNo
	fmt.Fprintf(stderr, "%d records produced to %s, %d failed", sent.Load(), topic, failed.Load())
	if interrupted {
		fmt.Fprint(stderr, " (interrupted)")
	}
	fmt.Fprintln(stderr)
	if readErr != nil {
		return fmt.Errorf("reading standard input: %w", readErr)
	}
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d of %d records failed", n, total)
	}
	return nil
}

// produceError makes a record delivery error readable. partition is the
// partition the user asked for, or -1.
func produceError(topic string, partition int32, err error) error {
	switch {
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		if partition >= 0 {
			return fmt.Errorf("topic %q or its partition %d does not exist", topic, partition)
		}
		return fmt.Errorf("topic %q does not exist", topic)
	case errors.Is(err, kgo.ErrRecordTimeout):
		return fmt.Errorf("not acknowledged within --delivery-timeout: %w", err)
	}
	return err
}

// lineOrErr is one line of input (without its line ending) or a read error.
type lineOrErr struct {
	line []byte
	err  error
}

// readLines reads r line by line in its own goroutine, so that a blocked
// read does not keep the command from reacting to a signal. The channel is
// closed at end of input. A trailing "\r" is removed with the "\n".
func readLines(r io.Reader) <-chan lineOrErr {
	ch := make(chan lineOrErr, 64)
	go func() {
		defer close(ch)
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			line, err := br.ReadBytes('\n')
			if len(line) > 0 {
				line = bytes.TrimSuffix(line, []byte("\n"))
				line = bytes.TrimSuffix(line, []byte("\r"))
				ch <- lineOrErr{line: line}
			}
			if err != nil {
				if err != io.EOF {
					ch <- lineOrErr{err: err}
				}
				return
			}
		}
	}()
	return ch
}
