package verify

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ShareAckFor is the acknowledgement a share-mode consumer gives value on
// its count-th delivery: AckReject for a rejectFrac share of (seed, value,
// count) triples, AckRelease for a releaseFrac share, AckAccept otherwise.
// A pure function, so the choices of a run follow from its seed whatever
// the timing, and a redelivery draws afresh.
func ShareAckFor(seed int64, value string, count int32, releaseFrac, rejectFrac float64) string {
	h := fnv.New64a()
	h.Write([]byte(value))
	u := rand.New(rand.NewPCG(uint64(seed), h.Sum64()^uint64(count)*0x9e3779b97f4a7c15)).Float64()
	switch {
	case u < rejectFrac:
		return AckReject
	case u < rejectFrac+releaseFrac:
		return AckRelease
	}
	return AckAccept
}

var kgoAck = map[string]kgo.AckStatus{AckAccept: kgo.AckAccept, AckRelease: kgo.AckRelease, AckReject: kgo.AckReject}

// runShareConsumer is a share-mode worker: it polls the input topic as a
// member of the share group and acknowledges every record it gets. Each
// poll goes: record what came (EvSharePoll), crash point before-commit
// (the records stay acquired until their locks expire), record the
// acknowledgements and flush the history (EvShareAck), send them and wait
// for every answer (FlushAcks), record the answer per partition
// (EvShareAckResult), crash point after-commit.
func runShareConsumer(ctx context.Context, spec WorkerSpec, c *control, rec *Recorder, cnt *counters) error {
	cp := spec.Profile.Consumer
	var (
		mu      sync.Mutex
		results []kgo.ShareAckResult
	)
	opts := append(clientOpts(spec),
		kgo.ShareGroup(spec.Group),
		kgo.ConsumeTopics(spec.InTopic),
		// Strict: a fetch acquires at most this many records and happens
		// only while polling, so the client holds few records it has not
		// handed over (a killed instance strands only those).
		kgo.ShareMaxRecords(int32(max(cp.MaxPollRecords, 1))),
		kgo.ShareMaxRecordsStrict(),
		kgo.FetchMaxWait(250*time.Millisecond),
		kgo.ShareAckCallback(func(_ *kgo.Client, rs kgo.ShareAckResults) {
			mu.Lock()
			results = append(results, rs...)
			mu.Unlock()
		}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()

	for !c.stop.Load() && ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollRecords(pctx, -1)
		cancel()
		byPart := map[int32][]*kgo.Record{}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Topic == spec.InTopic {
				byPart[r.Partition] = append(byPart[r.Partition], r)
			}
		})
		if len(byPart) == 0 {
			continue
		}
		parts := make([]int32, 0, len(byPart))
		for p, rs := range byPart {
			parts = append(parts, p)
			sort.Slice(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
			e := Event{Type: EvSharePoll, Topic: spec.InTopic, Partition: p}
			for _, r := range rs {
				e.Offsets = append(e.Offsets, r.Offset)
				e.Values = append(e.Values, string(r.Value))
				e.Counts = append(e.Counts, r.DeliveryCount())
			}
			rec.Record(e)
			cnt.polled.Add(int64(len(rs)))
		}
		sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })

		c.at(PhaseBeforeCommit)
		for _, p := range parts {
			e := Event{Type: EvShareAck, Topic: spec.InTopic, Partition: p}
			for _, r := range byPart[p] {
				e.Offsets = append(e.Offsets, r.Offset)
				e.Counts = append(e.Counts, r.DeliveryCount())
				e.Acks = append(e.Acks, ShareAckFor(spec.Seed, string(r.Value), r.DeliveryCount(), cp.ReleaseFraction, cp.RejectFraction))
			}
			rec.Record(e)
		}
		// The intent is on disk before anything is sent: a kill from
		// here on leaves the acknowledgements' trace, never an
		// acknowledgement without one.
		rec.Flush()
		mu.Lock()
		results = results[:0]
		mu.Unlock()
		accepted := 0
		for _, p := range parts {
			for _, r := range byPart[p] {
				a := ShareAckFor(spec.Seed, string(r.Value), r.DeliveryCount(), cp.ReleaseFraction, cp.RejectFraction)
				if a == AckAccept {
					accepted++
				}
				r.Ack(kgoAck[a])
			}
		}
		fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := cl.FlushAcks(fctx)
		cancel()
		if err != nil {
			// Answers that arrive later could not be told from the next
			// poll's: start afresh instead.
			for _, p := range parts {
				rec.Record(Event{Type: EvShareAckResult, Topic: spec.InTopic, Partition: p, Error: "flushing acknowledgements: " + err.Error()})
			}
			return fmt.Errorf("flushing acknowledgements: %w", err)
		}
		mu.Lock()
		got := append([]kgo.ShareAckResult(nil), results...)
		mu.Unlock()
		for _, p := range parts {
			e := Event{Type: EvShareAckResult, Topic: spec.InTopic, Partition: p}
			seen := false
			for _, r := range got {
				if r.Topic != spec.InTopic || r.Partition != p {
					continue
				}
				seen = true
				if r.Err != nil && e.Error == "" {
					e.Error = r.Err.Error()
				}
			}
			switch {
			case !seen:
				e.Error = "no answer for partition " + strconv.Itoa(int(p))
			case e.Error == "":
				e.OK = true
			}
			rec.Record(e)
		}
		cnt.commits.Add(int64(accepted))
		c.at(PhaseAfterCommit)
	}
	return nil
}
