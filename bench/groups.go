package bench

// The group consume modes: share groups (KIP-932) of 1, 4 and 16
// consumers on one partition, against a classic consumer group with one
// consumer per partition. Each run reads a prefilled topic to its end with
// a fresh group, checks that every record was handed out (and counts any
// handed out twice) and that the group durably finished every record
// (share: the share-partition start offset reached the end; classic: the
// committed offsets did), then deletes the group.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Group consume modes, as accepted by Config.Modes and the CLI.
const (
	Share1       = "share-1"
	Share4       = "share-4"
	Share16      = "share-16"
	ClassicGroup = "classic-group"
)

// shareConsumers is the number of share consumers of a share mode, 0 for
// any other mode.
func shareConsumers(mode string) int {
	switch mode {
	case Share1:
		return 1
	case Share4:
		return 4
	case Share16:
		return 16
	}
	return 0
}

func isGroupConsume(mode string) bool { return shareConsumers(mode) > 0 || mode == ClassicGroup }

// groupFormTimeout bounds the wait for a group's members to get their
// assignments (a classic group waits group.initial.rebalance.delay.ms).
const groupFormTimeout = time.Minute

// plainTopic is a prefilled topic of the group modes: records without
// transactions, so offsets [0, end) of each partition are all records.
type plainTopic struct {
	topic   string
	ends    map[int32]int64
	records int64
	bytes   int64
}

// prefillPlain creates topic with the given partitions and writes
// cfg.ConsumeBytes of values with an idempotent producer.
func prefillPlain(ctx context.Context, cfg Config, t Target, topic string, partitions int32, value []byte) (*plainTopic, error) {
	if err := createTopicWith(ctx, cfg, t, topic, partitions); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(producerOpts(cfg, t, Idempotent, topic, "")...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	want := max(cfg.ConsumeBytes/int64(len(value)), 1)
	var failed error
	var mu sync.Mutex
	for range want {
		cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				failed = cmpErr(failed, err)
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return nil, err
	}
	if failed != nil {
		return nil, failed
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	p := &plainTopic{topic: topic, ends: map[int32]int64{}, bytes: want * int64(len(value))}
	var bad error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			bad = o.Err
		}
		p.ends[o.Partition] = o.Offset
		p.records += o.Offset
	})
	if bad != nil {
		return nil, bad
	}
	if p.records != want || len(p.ends) != int(partitions) {
		return nil, fmt.Errorf("%s holds %d records in %d partitions, want %d in %d", topic, p.records, len(p.ends), want, partitions)
	}
	return p, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// deliveries is what the consumers of one run were handed: every offset
// of the prefilled topic, and how often.
type deliveries struct {
	mu       sync.Mutex
	seen     map[int32][]bool
	left     int64
	again    int64 // deliveries of an offset already delivered
	stranger int64 // records outside the prefilled range
	done     chan struct{}
}

func newDeliveries(ends map[int32]int64) *deliveries {
	d := &deliveries{seen: map[int32][]bool{}, done: make(chan struct{})}
	for p, end := range ends {
		d.seen[p] = make([]bool, end)
		d.left += end
	}
	if d.left == 0 {
		close(d.done)
	}
	return d
}

func (d *deliveries) add(fs kgo.Fetches) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fs.EachRecord(func(r *kgo.Record) {
		s := d.seen[r.Partition]
		switch {
		case r.Offset < 0 || r.Offset >= int64(len(s)):
			d.stranger++
		case s[r.Offset]:
			d.again++
		default:
			s[r.Offset] = true
			d.left--
			if d.left == 0 {
				close(d.done)
			}
		}
	})
}

func (d *deliveries) counts() (left, again, stranger int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.left, d.again, d.stranger
}

// firstError keeps the first error of a run's goroutines and says so on
// failed.
type firstError struct {
	once   sync.Once
	err    error
	failed chan struct{}
}

func newFirstError() *firstError { return &firstError{failed: make(chan struct{})} }

func (f *firstError) set(err error) {
	f.once.Do(func() { f.err = err; close(f.failed) })
}

func (f *firstError) get() error {
	select {
	case <-f.failed:
		return f.err
	default:
		return nil
	}
}

// groupConsumeRun is one run of a group mode with a fresh group.
func groupConsumeRun(ctx context.Context, cfg Config, t Target, mode, group string, p *plainTopic) Result {
	if p == nil {
		return Result{Err: "no prefilled topic"}
	}
	admCl, err := kgo.NewClient(t.clientOpts()...)
	if err != nil {
		return Result{Err: err.Error()}
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	g := &groupRun{cfg: cfg, t: t, cl: admCl, adm: adm, group: group, p: p, d: newDeliveries(p.ends), errs: newFirstError()}
	var res Result
	if n := shareConsumers(mode); n > 0 {
		res = g.share(ctx, n)
	} else {
		res = g.classic(ctx)
	}
	if err := deleteGroup(adm, group); err != nil && res.Err == "" {
		res.Err = fmt.Sprintf("deleting group %s: %v", group, err)
	}
	return res
}

// groupRun is one group mode run's shared state.
type groupRun struct {
	cfg   Config
	t     Target
	cl    *kgo.Client // the run's admin connection
	adm   *kadm.Client
	group string
	p     *plainTopic
	d     *deliveries
	errs  *firstError
}

// share consumes with n share consumers, each ACCEPTing every record it
// gets.
func (g *groupRun) share(ctx context.Context, n int) Result {
	if err := setGroupConfig(ctx, g.cl, g.group, "share.auto.offset.reset", "earliest"); err != nil {
		return Result{Err: fmt.Sprintf("setting share.auto.offset.reset: %v", err)}
	}
	clients := make([]*kgo.Client, n)
	defer closeAll(clients)
	for i := range clients {
		cl, err := kgo.NewClient(g.t.clientOpts(kgo.ShareGroup(g.group), kgo.ConsumeTopics(g.p.topic),
			kgo.ShareAckCallback(func(_ *kgo.Client, rs kgo.ShareAckResults) {
				if err := rs.Error(); err != nil {
					g.errs.set(fmt.Errorf("acknowledgement refused: %w", err))
				}
			}))...)
		if err != nil {
			return Result{Err: err.Error()}
		}
		// Paused until every member has its assignment: the clock
		// measures consumption, not group formation.
		cl.PauseFetchTopics(g.p.topic)
		clients[i] = cl
	}
	if err := g.awaitShareMembers(ctx, n); err != nil {
		return Result{Err: err.Error()}
	}
	res := g.consume(ctx, clients, func(ctx context.Context, cl *kgo.Client) error {
		cl.MarkAcks(kgo.AckAccept)
		return nil
	}, func(ctx context.Context, cl *kgo.Client) error {
		return cl.FlushAcks(ctx)
	})
	if res.Err != "" {
		return res
	}
	described, err := g.adm.DescribeShareGroupOffsets(ctx, g.group)
	if err == nil {
		err = described[g.group].Err
	}
	if err != nil {
		res.Err = fmt.Sprintf("describing the share group's offsets: %v", err)
		return res
	}
	for part, end := range g.p.ends {
		o, ok := described[g.group].Offsets.Lookup(g.p.topic, part)
		if !ok || o.Err != nil || o.StartOffset < 0 {
			res.Err = fmt.Sprintf("no share-partition start offset for partition %d (%v)", part, o.Err)
			return res
		}
		res.Settled += o.StartOffset
		if o.StartOffset != end {
			res.Err = fmt.Sprintf("partition %d: share-partition start offset %d after every record was accepted, want %d", part, o.StartOffset, end)
		}
	}
	return res
}

// awaitShareMembers waits until the group has n members, each assigned
// the topic's partitions.
func (g *groupRun) awaitShareMembers(ctx context.Context, n int) error {
	deadline := time.Now().Add(groupFormTimeout)
	for {
		described, err := g.adm.DescribeShareGroups(ctx, g.group)
		members := 0
		if err == nil {
			if dg, ok := described[g.group]; ok && dg.Err == nil {
				for _, m := range dg.Members {
					if len(m.Assignment[g.p.topic]) > 0 {
						members++
					}
				}
			}
		}
		if members == n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the share group had %d of %d members with an assignment after %v (%v)", members, n, groupFormTimeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// classic consumes with one classic-group consumer per partition, each
// committing what it polled after every poll.
func (g *groupRun) classic(ctx context.Context) Result {
	n := len(g.p.ends)
	clients := make([]*kgo.Client, n)
	defer closeAll(clients)
	owned := &assignments{held: make([]map[int32]bool, n)}
	for i := range clients {
		owned.held[i] = map[int32]bool{}
		change := func(add bool) func(context.Context, *kgo.Client, map[string][]int32) {
			return func(_ context.Context, _ *kgo.Client, m map[string][]int32) { owned.change(i, m[g.p.topic], add) }
		}
		cl, err := kgo.NewClient(g.t.clientOpts(kgo.ConsumerGroup(g.group), kgo.ConsumeTopics(g.p.topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
			kgo.OnPartitionsAssigned(change(true)), kgo.OnPartitionsRevoked(change(false)), kgo.OnPartitionsLost(change(false)))...)
		if err != nil {
			return Result{Err: err.Error()}
		}
		cl.PauseFetchTopics(g.p.topic)
		clients[i] = cl
	}
	deadline := time.Now().Add(groupFormTimeout)
	for !owned.onePerMember(int32(n)) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return Result{Err: fmt.Sprintf("the classic group did not give each of %d consumers one partition within %v", n, groupFormTimeout)}
		}
		time.Sleep(20 * time.Millisecond)
	}
	commit := func(ctx context.Context, cl *kgo.Client) error { return cl.CommitUncommittedOffsets(ctx) }
	res := g.consume(ctx, clients, commit, commit)
	if res.Err != "" {
		return res
	}
	committed, err := g.adm.FetchOffsets(ctx, g.group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		res.Err = fmt.Sprintf("fetching the group's committed offsets: %v", err)
		return res
	}
	for part, end := range g.p.ends {
		o, ok := committed.Lookup(g.p.topic, part)
		if !ok {
			res.Err = fmt.Sprintf("partition %d: no committed offset", part)
			return res
		}
		res.Settled += o.At
		if o.At != end {
			res.Err = fmt.Sprintf("partition %d: committed offset %d after every record was consumed, want %d", part, o.At, end)
		}
	}
	return res
}

// assignments tracks which partitions each classic consumer holds, from
// its rebalance callbacks.
type assignments struct {
	mu   sync.Mutex
	held []map[int32]bool
}

func (a *assignments) change(member int, parts []int32, add bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range parts {
		if add {
			a.held[member][p] = true
		} else {
			delete(a.held[member], p)
		}
	}
}

// onePerMember reports whether every member holds exactly one partition
// and together they hold all n.
func (a *assignments) onePerMember(n int32) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	all := map[int32]bool{}
	for _, h := range a.held {
		if len(h) != 1 {
			return false
		}
		for p := range h {
			all[p] = true
		}
	}
	return int32(len(all)) == n
}

// consume resumes every client and polls each in its own goroutine until
// every record was delivered; after each poll it calls settle (ACCEPT,
// commit), and finish once all records are in (flush the
// acknowledgements, commit). The clock runs from the resume until every
// finish returned.
func (g *groupRun) consume(ctx context.Context, clients []*kgo.Client, settle, finish func(context.Context, *kgo.Client) error) Result {
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	start := time.Now()
	for _, cl := range clients {
		cl.ResumeFetchTopics(g.p.topic)
	}
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				fs := cl.PollFetches(pollCtx)
				if pollCtx.Err() != nil {
					break
				}
				if err := fs.Err(); err != nil {
					g.errs.set(err)
					return
				}
				g.d.add(fs)
				if err := settle(ctx, cl); err != nil {
					g.errs.set(err)
					return
				}
			}
			if err := finish(ctx, cl); err != nil {
				g.errs.set(err)
			}
		}()
	}
	select {
	case <-g.d.done:
	case <-g.errs.failed:
	case <-ctx.Done():
	}
	stopPolling()
	wg.Wait()
	elapsed := time.Since(start)
	left, again, stranger := g.d.counts()
	delivered := g.p.records - left
	res := Result{Records: delivered, Bytes: g.p.bytes, Elapsed: elapsed, Consumers: len(clients), Redelivered: again,
		MBps: float64(g.p.bytes) / elapsed.Seconds() / 1e6, RecordsPerSec: float64(delivered) / elapsed.Seconds()}
	switch err := g.errs.get(); {
	case err != nil:
		res.Err = fmt.Sprintf("after %d of %d records: %v", delivered, g.p.records, err)
	case left > 0:
		res.Err = fmt.Sprintf("%d of %d records delivered when the run ended: %v", delivered, g.p.records, ctx.Err())
	case stranger > 0:
		res.Err = fmt.Sprintf("%d records outside the prefilled offsets", stranger)
	}
	return res
}

func closeAll(clients []*kgo.Client) {
	var wg sync.WaitGroup
	for _, cl := range clients {
		if cl != nil {
			wg.Add(1)
			go func() { defer wg.Done(); cl.Close() }()
		}
	}
	wg.Wait()
}

// setGroupConfig sets one config of a group (the GROUP resource of
// IncrementalAlterConfigs).
func setGroupConfig(ctx context.Context, cl *kgo.Client, group, key, value string) error {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeGroupConfig, group
	c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	c.Name, c.Value = key, kmsg.StringPtr(value)
	res.Configs = append(res.Configs, c)
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	for _, r := range resp.Resources {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			return err
		}
	}
	return nil
}

// deleteGroup deletes a run's group once its members left (they leave as
// their clients close, which the coordinator may see a moment later).
func deleteGroup(adm *kadm.Client, group string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := adm.DeleteGroup(ctx, group)
		if err == nil {
			err = resp.Err
		}
		if errors.Is(err, kerr.GroupIDNotFound) {
			return nil
		}
		if !errors.Is(err, kerr.NonEmptyGroup) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
