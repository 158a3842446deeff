package verify

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/exactly/exactly/eos/share"
	"github.com/twmb/franz-go/pkg/kadm"
)

// shareManagedConfig are the broker settings a managed share run adds: a
// delivery-count limit that RELEASEs and lock expiries reach within a run,
// and locks and member sessions short enough that what a killed consumer
// held is delivered again within seconds (Kafka's defaults are 30 s and
// 45 s, longer than the drain).
var shareManagedConfig = []string{
	"group.share.delivery.count.limit=4",
	"group.share.record.lock.duration.ms=5000",
	"group.share.min.record.lock.duration.ms=1000",
	"group.share.session.timeout.ms=6000",
	"group.share.heartbeat.interval.ms=1000",
}

func (r *runner) share() bool { return r.profile.Consumer.Commit == CommitShare }

// setupShare makes the share group start at the log start
// (share.auto.offset.reset=earliest, a group config) and reads the
// broker's group.share.delivery.count.limit.
func (r *runner) setupShare(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := share.StartAtEarliest(cctx, r.admin, r.group); err != nil {
		return err
	}
	l, err := share.ReadDeliveryLimit(cctx, r.admin)
	if err != nil {
		return err
	}
	r.shareLimit = l
	return nil
}

// waitShareSettled waits until the share group's start offset has reached
// the end of every input partition: every record acknowledged or archived.
func (r *runner) waitShareSettled(ctx context.Context, by time.Time) (bool, map[int32]int64, error) {
	target := map[int32]int64{}
	rctx, cancel := context.WithDeadline(ctx, by)
	defer cancel()
	var ends kadm.ListedOffsets
	err := untilSettled(rctx, func() (err error) {
		ends, err = kadm.NewClient(r.admin).ListEndOffsets(rctx, r.in)
		return err
	})
	if err != nil {
		return false, target, err
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			target[o.Partition] = o.Offset
		}
	})
	for {
		spso, err := r.shareStartOffsets(rctx)
		if err == nil {
			done := true
			for p, want := range target {
				if o, ok := spso[p]; !ok || o < want {
					done = false
				}
			}
			if done {
				r.logf("the share group settled every record")
				return true, target, nil
			}
		}
		select {
		case <-rctx.Done():
			return false, target, nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// shareStartOffsets returns the share group's share-partition start offset
// of each input partition it has state for.
func (r *runner) shareStartOffsets(ctx context.Context) (map[int32]int64, error) {
	d, err := kadm.NewClient(r.admin).DescribeShareGroupOffsets(ctx, r.group)
	if err != nil {
		return nil, err
	}
	g, ok := d[r.group]
	if !ok {
		return nil, fmt.Errorf("share group %s not described", r.group)
	}
	if g.Err != nil {
		return nil, g.Err
	}
	out := map[int32]int64{}
	for p, o := range g.Offsets[r.in] {
		if o.Err == nil && o.StartOffset >= 0 {
			out[p] = o.StartOffset
		}
	}
	return out, nil
}

// shareFinal records the proxy's dropped responses (each may have hidden
// a delivery) and the group's final start offsets.
func (r *runner) shareFinal(ctx context.Context) (Event, error) {
	for _, d := range r.proxy.Drops() {
		r.rec.Record(Event{Time: d.At.UnixNano(), Proc: "proxy", Type: EvFault, Detail: FaultDroppedResponse, Value: strconv.Itoa(int(d.Key))})
	}
	var spso map[int32]int64
	err := untilSettled(ctx, func() (err error) {
		spso, err = r.shareStartOffsets(ctx)
		return err
	})
	if err != nil {
		return Event{}, fmt.Errorf("describing the share group's offsets: %w", err)
	}
	return Event{Type: EvShareOffsets, Commits: map[string]map[int32]int64{r.in: spso}}, nil
}
