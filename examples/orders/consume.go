package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/exactly/exactly/eos/outbox"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ordersTopic is where the relay publishes the OrderPlaced events: the
// outbox default for aggregate type "order".
var ordersTopic = outbox.DefaultTopic(&outbox.Event{AggregateType: "order"})

// consumer is the downstream service as a process of its own: a group
// member that books every event into the ledger (a dedup claim and the
// entry in one PostgreSQL transaction) and commits its Kafka offsets every
// few seconds, like a consumer with auto-commit. Killed in between, it gets
// the events booked since the last commit again after a restart, and the
// claims turn them into no-ops.
type consumer struct {
	bootstrap, group, instanceID string
	until                        int
	commitInterval               time.Duration
}

func (c consumer) run(ctx context.Context, db *sql.DB, schema string, out io.Writer) error {
	l, err := newLedger(ctx, db, schema)
	if err != nil {
		return err
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.bootstrap), kgo.ConsumeTopics(ordersTopic), kgo.ConsumerGroup(c.group),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll()}
	if c.instanceID != "" {
		// Static membership: a restarted process takes its predecessor's
		// place at once instead of waiting out its session.
		opts = append(opts, kgo.InstanceID(c.instanceID), kgo.SessionTimeout(10*time.Second))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	// Close waits for a rebalance that BlockRebalanceOnPoll holds back.
	defer cl.AllowRebalance()
	fmt.Fprintf(out, "consuming %s as group %s\n", ordersTopic, c.group)
	// Offsets are committed every commitInterval, always after the ledger
	// transactions of the records they cover: a crash in between costs
	// redeliveries, which the dedup claims absorb.
	commit := func(ctx context.Context) error {
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			return fmt.Errorf("committing offsets: %w", err)
		}
		return nil
	}
	lastCommit := time.Now()
	for {
		if c.until > 0 {
			if _, n, err := l.totals(ctx); err != nil {
				return err
			} else if n >= c.until {
				fmt.Fprintf(out, "ledger holds %d entries\n", n)
				return commit(ctx)
			}
		}
		pollCtx, cancel := context.WithTimeout(ctx, c.commitInterval)
		fs := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			// Stopped: keep what was booked from being redelivered.
			stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return errors.Join(ctx.Err(), commit(stopCtx))
		}
		var ferr error
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) { // pollCtx: time to commit
				ferr = errors.Join(ferr, fmt.Errorf("fetching %s/%d: %w", topic, p, err))
			}
		})
		if ferr != nil {
			return ferr
		}
		for _, rec := range fs.Records() {
			var ev orderPlaced
			if err := json.Unmarshal(rec.Value, &ev); err != nil {
				fmt.Fprintf(out, "skipping %s/%d@%d: not an OrderPlaced event\n", rec.Topic, rec.Partition, rec.Offset)
				continue
			}
			booked, err := l.apply(ctx, rec, ev)
			if err != nil {
				return err
			}
			if booked {
				fmt.Fprintf(out, "booked %s %d cents id=%s\n", ev.OrderID, ev.AmountCents, header(rec, "id"))
			} else {
				fmt.Fprintf(out, "duplicate %s id=%s skipped\n", ev.OrderID, header(rec, "id"))
			}
		}
		if time.Since(lastCommit) >= c.commitInterval {
			if err := commit(ctx); err != nil && ctx.Err() == nil {
				return err
			}
			lastCommit = time.Now()
		}
		cl.AllowRebalance()
	}
}
