package share

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Config configures a Consumer. Group, Topics, Handler and DeadLetterTopic
// are required.
type Config struct {
	// Kafka holds client options: at least kgo.SeedBrokers, and anything
	// else the deployment needs (TLS, SASL, logger). The share group, the
	// topics and the acknowledgement callback are applied after these.
	Kafka []kgo.Opt
	// Group is the share group.
	Group string
	// Topics are the topics consumed.
	Topics []string
	// Handler processes one record. nil accepts it; an error wrapped with
	// Permanent sends it to the dead-letter topic at once; any other
	// error releases it for another delivery, or sends it to the
	// dead-letter topic on its last one. ctx is canceled when Run stops.
	Handler func(ctx context.Context, r *kgo.Record) error
	// DeadLetterTopic receives the records given up on. It must not be
	// one of Topics.
	DeadLetterTopic string
	// DeliveryLimit is the group's delivery-count limit. 0: read the
	// broker's group.share.delivery.count.limit when Run starts.
	DeliveryLimit int32
	// MaxPollRecords bounds the records one fetch acquires; default 100.
	// Every record of a poll is handled before any is acknowledged, so
	// the poll's records must be handled within the acquisition lock
	// (group.share.record.lock.duration.ms, 30 s by default).
	MaxPollRecords int32
	// Backoff is the first pause between dead-letter publish attempts,
	// doubled after each, up to 5 s; default 100 ms.
	Backoff time.Duration
	// OnError, if set, is told about every error Run recovers from
	// (failed dead-letter publishes, failed acknowledgements). It is
	// called from Run's goroutine and must not block.
	OnError func(error)
}

// Headers added to a dead-letter record after the record's own headers
// (input headers with these keys are dropped first).
const (
	// HeaderTopic holds the source record's topic.
	HeaderTopic = "share.source.topic"
	// HeaderPartition holds its partition, in decimal.
	HeaderPartition = "share.source.partition"
	// HeaderOffset holds its offset, in decimal.
	HeaderOffset = "share.source.offset"
	// HeaderTimestamp holds its timestamp in Unix milliseconds.
	HeaderTimestamp = "share.source.timestamp"
	// HeaderGroup holds the share group that gave up on it.
	HeaderGroup = "share.group"
	// HeaderDeliveryCount holds the delivery count of the delivery that
	// gave up, in decimal.
	HeaderDeliveryCount = "share.delivery.count"
	// HeaderError holds the handler's error text.
	HeaderError = "share.error"
)

// permanent marks a handler error that no redelivery can fix.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// Permanent wraps err so that the Consumer dead-letters the record at once
// instead of releasing it for another delivery.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// IsPermanent says whether err was wrapped with Permanent.
func IsPermanent(err error) bool {
	var p permanent
	return errors.As(err, &p)
}

// Stats counts what a Consumer did.
type Stats struct {
	// Accepted counts records ACCEPTed after the handler returned nil.
	Accepted int64
	// Released counts deliveries RELEASEd after a retriable error.
	Released int64
	// DeadLettered counts records published to the dead-letter topic
	// (and then REJECTed).
	DeadLettered int64
	// AckErrors counts partitions whose acknowledgements the broker did
	// not confirm (the records are delivered again when their locks
	// expire).
	AckErrors int64
}

// Consumer consumes a share group with a dead-letter topic.
type Consumer struct {
	cfg   Config
	limit atomic.Int32
	stats struct {
		accepted, released, dead, ackErrors atomic.Int64
	}
}

// New checks cfg and returns a Consumer; Run starts it.
func New(cfg Config) (*Consumer, error) {
	switch {
	case cfg.Group == "":
		return nil, errors.New("share: Group is required")
	case len(cfg.Topics) == 0:
		return nil, errors.New("share: Topics are required")
	case cfg.Handler == nil:
		return nil, errors.New("share: Handler is required")
	case cfg.DeadLetterTopic == "":
		return nil, errors.New("share: DeadLetterTopic is required")
	case slices.Contains(cfg.Topics, cfg.DeadLetterTopic):
		return nil, errors.New("share: DeadLetterTopic must not be a consumed topic")
	case cfg.DeliveryLimit < 0:
		return nil, errors.New("share: DeliveryLimit must not be negative")
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 100
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 100 * time.Millisecond
	}
	c := &Consumer{cfg: cfg}
	c.limit.Store(cfg.DeliveryLimit)
	return c, nil
}

// Stats returns the counters so far.
func (c *Consumer) Stats() Stats {
	return Stats{Accepted: c.stats.accepted.Load(), Released: c.stats.released.Load(),
		DeadLettered: c.stats.dead.Load(), AckErrors: c.stats.ackErrors.Load()}
}

// DeliveryLimit is the delivery-count limit in use (0 before Run read it).
func (c *Consumer) DeliveryLimit() int32 { return c.limit.Load() }

func (c *Consumer) onError(err error) {
	if c.cfg.OnError != nil {
		c.cfg.OnError(err)
	}
}

// Run consumes until ctx ends, then acknowledges what it decided, releases
// the rest, leaves the group and returns ctx's error — or an
// *UndecidedError if a record on its last delivery was still waiting for
// its dead-letter publish (the release lets the broker archive it). It
// returns early only if the client cannot be made or the delivery-count
// limit cannot be read.
func (c *Consumer) Run(ctx context.Context) error {
	opts := append(slices.Clone(c.cfg.Kafka),
		kgo.ShareGroup(c.cfg.Group),
		kgo.ConsumeTopics(c.cfg.Topics...),
		kgo.ShareMaxRecords(c.cfg.MaxPollRecords),
		kgo.ShareAckCallback(func(_ *kgo.Client, rs kgo.ShareAckResults) {
			for _, r := range rs {
				if r.Err != nil {
					c.stats.ackErrors.Add(1)
					c.onError(fmt.Errorf("share: acknowledging %s/%d: %w", r.Topic, r.Partition, r.Err))
				}
			}
		}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if c.limit.Load() == 0 {
		l, err := ReadDeliveryLimit(ctx, cl)
		if err != nil {
			return err
		}
		c.limit.Store(l)
	}
	for ctx.Err() == nil {
		fs := cl.PollRecords(ctx, -1)
		fs.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				c.onError(fmt.Errorf("share: fetching %s/%d: %w", t, p, err))
			}
		})
		polled := time.Now()
		var decided []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			if ctx.Err() == nil && c.handle(ctx, cl, r, polled) {
				decided = append(decided, r)
			}
		})
		var undecided *UndecidedError
		if ctx.Err() != nil {
			// Records the handler has not finished with are released
			// (not auto-accepted) so another member gets them.
			fs.EachRecord(func(r *kgo.Record) {
				if slices.Contains(decided, r) {
					return
				}
				r.Ack(kgo.AckRelease)
				if undecided == nil && r.DeliveryCount() >= c.limit.Load() {
					undecided = &UndecidedError{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Err: ctx.Err()}
				}
			})
		}
		fctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if err := cl.FlushAcks(fctx); err != nil {
			c.onError(fmt.Errorf("share: flushing acknowledgements: %w", err))
		}
		cancel()
		if undecided != nil {
			return undecided
		}
	}
	return ctx.Err()
}

// UndecidedError is Run's answer when it stopped while a record on its last
// delivery had been neither handled nor dead-lettered: it was released, so
// the broker archives it with no dead-letter copy.
type UndecidedError struct {
	// Topic, Partition and Offset name the record.
	Topic     string
	Partition int32
	Offset    int64
	// Err is why Run stopped.
	Err error
}

// Error names the record.
func (e *UndecidedError) Error() string {
	return fmt.Sprintf("share: stopped before %s/%d@%d, on its last delivery, was handled or dead-lettered: %v", e.Topic, e.Partition, e.Offset, e.Err)
}

// Unwrap returns why Run stopped.
func (e *UndecidedError) Unwrap() error { return e.Err }

// handle runs the handler on one record (polled at polled) and
// acknowledges it; false if ctx ended before the record was decided.
func (c *Consumer) handle(ctx context.Context, cl *kgo.Client, r *kgo.Record, polled time.Time) bool {
	err := c.cfg.Handler(ctx, r)
	switch {
	case err == nil:
		r.Ack(kgo.AckAccept)
		c.stats.accepted.Add(1)
		return true
	case !IsPermanent(err) && r.DeliveryCount() < c.limit.Load():
		r.Ack(kgo.AckRelease)
		c.stats.released.Add(1)
		return true
	}
	// Give up on it: the dead-letter copy first, so the REJECT never
	// comes without it.
	lk := &lock{deadline: r.AcquisitionDeadline(), span: r.AcquisitionDeadline().Sub(polled)}
	if lk.deadline.IsZero() || lk.span < 2*time.Second {
		lk.span = 2 * time.Second
	}
	if !c.deadLetter(ctx, cl, r, err, lk) {
		return false
	}
	r.Ack(kgo.AckReject)
	c.stats.dead.Add(1)
	return true
}

// deadLetter publishes r's dead-letter record, retrying until it is
// acknowledged or ctx ends (false). The record's acquisition lock must
// outlive the attempts, or the broker would archive a record on its last
// delivery without the copy: each attempt is bounded by half the lock's
// span, and the lock is renewed before an attempt that could outlast it.
func (c *Consumer) deadLetter(ctx context.Context, cl *kgo.Client, r *kgo.Record, cause error, lk *lock) bool {
	backoff := c.cfg.Backoff
	attempt := min(10*time.Second, lk.span/2)
	for {
		if time.Until(lk.deadline) < attempt+time.Second {
			r.Ack(kgo.AckRenew)
			renewed := time.Now()
			fctx, cancel := context.WithTimeout(ctx, attempt)
			if err := cl.FlushAcks(fctx); err == nil {
				lk.deadline = renewed.Add(lk.span)
			}
			cancel()
		}
		// A fresh record each attempt: a produced record keeps the
		// context it was first produced with.
		pctx, cancel := context.WithTimeout(ctx, attempt)
		err := cl.ProduceSync(pctx, c.deadLetterRecord(r, cause)).FirstErr()
		cancel()
		if err == nil {
			return true
		}
		c.onError(fmt.Errorf("share: publishing %s/%d@%d to %s: %w", r.Topic, r.Partition, r.Offset, c.cfg.DeadLetterTopic, err))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// lock is what a Consumer knows of a poll's acquisition locks: when they
// end and how long one lasts (from the fetch to its deadline).
type lock struct {
	deadline time.Time
	span     time.Duration
}

// deadLetterRecord is r for the dead-letter topic: key, value and headers
// kept, this package's headers replaced.
func (c *Consumer) deadLetterRecord(r *kgo.Record, cause error) *kgo.Record {
	ours := []string{HeaderTopic, HeaderPartition, HeaderOffset, HeaderTimestamp, HeaderGroup, HeaderDeliveryCount, HeaderError}
	h := make([]kgo.RecordHeader, 0, len(r.Headers)+len(ours))
	for _, x := range r.Headers {
		if !slices.Contains(ours, x.Key) {
			h = append(h, x)
		}
	}
	h = append(h,
		kgo.RecordHeader{Key: HeaderTopic, Value: []byte(r.Topic)},
		kgo.RecordHeader{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(r.Partition), 10)},
		kgo.RecordHeader{Key: HeaderOffset, Value: strconv.AppendInt(nil, r.Offset, 10)},
		kgo.RecordHeader{Key: HeaderTimestamp, Value: strconv.AppendInt(nil, r.Timestamp.UnixMilli(), 10)},
		kgo.RecordHeader{Key: HeaderGroup, Value: []byte(c.cfg.Group)},
		kgo.RecordHeader{Key: HeaderDeliveryCount, Value: strconv.AppendInt(nil, int64(r.DeliveryCount()), 10)},
		kgo.RecordHeader{Key: HeaderError, Value: []byte(cause.Error())},
	)
	return &kgo.Record{Topic: c.cfg.DeadLetterTopic, Key: r.Key, Value: r.Value, Headers: h}
}

// ReadDeliveryLimit reads group.share.delivery.count.limit from a broker
// of the cluster cl reaches.
func ReadDeliveryLimit(ctx context.Context, cl *kgo.Client) (int32, error) {
	adm := kadm.NewClient(cl)
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return 0, fmt.Errorf("share: listing brokers to read the delivery-count limit: %w", err)
	}
	if len(brokers) == 0 {
		return 0, errors.New("share: no brokers to read the delivery-count limit from")
	}
	rcs, err := adm.DescribeBrokerConfigs(ctx, brokers[0].NodeID)
	if err != nil {
		return 0, fmt.Errorf("share: reading the delivery-count limit: %w", err)
	}
	for _, rc := range rcs {
		for _, cf := range rc.Configs {
			if cf.Key == "group.share.delivery.count.limit" && cf.Value != nil {
				n, err := strconv.Atoi(*cf.Value)
				if err != nil || n <= 0 {
					return 0, fmt.Errorf("share: group.share.delivery.count.limit is %q", *cf.Value)
				}
				return int32(n), nil
			}
		}
	}
	return 0, errors.New("share: the broker does not report group.share.delivery.count.limit; set Config.DeliveryLimit")
}

// StartAtEarliest sets share.auto.offset.reset=earliest on group (a group
// config), so a share group that has no state yet starts at the log start
// of each partition instead of its end. A retriable answer (a cluster
// still placing or moving its coordinators) is tried again until ctx ends.
func StartAtEarliest(ctx context.Context, cl *kgo.Client, group string) error {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, group
	res.Configs = []kmsg.IncrementalAlterConfigsRequestResourceConfig{{Name: "share.auto.offset.reset", Value: kmsg.StringPtr("earliest")}}
	req.Resources = append(req.Resources, res)
	for {
		err := startAtEarliestOnce(ctx, cl, req)
		if err == nil || !kerr.IsRetriable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func startAtEarliestOnce(ctx context.Context, cl *kgo.Client, req *kmsg.IncrementalAlterConfigsRequest) error {
	group := req.Resources[0].ResourceName
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("share: setting share.auto.offset.reset on %s: %w", group, err)
	}
	for _, rr := range resp.Resources {
		if err := kerr.ErrorForCode(rr.ErrorCode); err != nil {
			msg := ""
			if rr.ErrorMessage != nil {
				msg = ": " + *rr.ErrorMessage
			}
			return fmt.Errorf("share: setting share.auto.offset.reset on %s: %w%s", group, err, msg)
		}
	}
	return nil
}
