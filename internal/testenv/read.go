package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ReadToEnd reads every partition of topic from its start to the end it
// has when called — the high watermark, or with committed the last stable
// offset under read_committed — and returns the data records per
// partition in offset order (control records and, when committed, aborted
// records are not returned). It fails the test if the end is not reached
// within 60 s. opts are added to both of its clients (the one listing
// the end offsets and the reading one), so they may carry TLS and SASL.
func ReadToEnd(t testing.TB, addr, topic string, committed bool, opts ...kgo.Opt) map[int32][]*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adm, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	list := kadm.NewClient(adm).ListEndOffsets
	if committed {
		list = kadm.NewClient(adm).ListCommittedOffsets
	}
	ends, err := ListOffsets(ctx, list, topic)
	if err != nil {
		t.Fatalf("listing the end offsets of %s: %v", topic, err)
	}
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	all, err := readLog(ctx, addr, topic, ends, iso, opts)
	if err != nil {
		t.Fatalf("reading %s to its end (committed=%v): %v", topic, committed, err)
	}
	out := map[int32][]*kgo.Record{}
	for p, recs := range all {
		for _, r := range recs {
			if !r.Attrs.IsControl() {
				out[p] = append(out[p], r)
			}
		}
	}
	return out
}

// ListOffsets lists topic's offsets with list (a kadm.Client's
// ListStartOffsets, ListEndOffsets or ListCommittedOffsets), asking again
// every 100 ms until ctx ends while an answer carries a retriable error,
// as a client does: a cluster answers LEADER_NOT_AVAILABLE or
// NOT_LEADER_OR_FOLLOWER for a moment while a leader is elected or its
// broker is fenced. The error is the last answer's, or nil.
func ListOffsets(ctx context.Context, list func(context.Context, ...string) (kadm.ListedOffsets, error), topic string) (kadm.ListedOffsets, error) {
	for {
		offs, err := list(ctx, topic)
		if err == nil {
			err = offs.Error()
		}
		if err == nil || !kerr.IsRetriable(err) {
			return offs, err
		}
		select {
		case <-ctx.Done():
			return offs, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readLog reads every partition of topic from its start to ends with
// isolation iso and returns all records, control records included (a
// position can only reach an end that sits just past a transaction marker
// by reading the marker).
func readLog(ctx context.Context, addr, topic string, ends kadm.ListedOffsets, iso kgo.IsolationLevel, opts []kgo.Opt) (map[int32][]*kgo.Record, error) {
	start := map[string]map[int32]kgo.Offset{topic: {}}
	ends.Each(func(o kadm.ListedOffset) { start[topic][o.Partition] = kgo.NewOffset().AtStart() })
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.ConsumePartitions(start), kgo.FetchIsolationLevel(iso),
		kgo.FetchMaxWait(100 * time.Millisecond), kgo.KeepControlRecords()}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	pos := map[int32]int64{}
	out := map[int32][]*kgo.Record{}
	done := func() bool {
		for p, o := range ends[topic] {
			if pos[p] < o.Offset {
				return false
			}
		}
		return true
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out, fmt.Errorf("at %v, ends %v: %w", pos, ends, ctx.Err())
		}
		var ferr error
		fs.EachError(func(tp string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", tp, p, err) })
		if ferr != nil {
			return out, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			pos[r.Partition] = r.Offset + 1
			out[r.Partition] = append(out[r.Partition], r)
		})
	}
	return out, nil
}

// ReadAtLeast is ReadToEnd once the topic holds at least want data records
// to read, for a topic still being written: it rereads until then (60 s at
// most). Records past want — duplicates — are returned too.
func ReadAtLeast(t testing.TB, addr, topic string, committed bool, want int, opts ...kgo.Opt) map[int32][]*kgo.Record {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		recs := ReadToEnd(t, addr, topic, committed, opts...)
		n := 0
		for _, rs := range recs {
			n += len(rs)
		}
		if n >= want {
			return recs
		}
		if time.Now().After(deadline) {
			logStall(t, addr, topic, opts)
			t.Fatalf("reading %s: %d records after 60s, want at least %d", topic, n, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Flatten lists the records of every partition, partitions in ascending
// order.
func Flatten(recs map[int32][]*kgo.Record) []*kgo.Record {
	var out []*kgo.Record
	for p := int32(0); len(out) < count(recs); p++ {
		out = append(out, recs[p]...)
	}
	return out
}

func count(recs map[int32][]*kgo.Record) int {
	n := 0
	for _, rs := range recs {
		n += len(rs)
	}
	return n
}

// FetchOnce sends one raw Fetch for partition of topic from offset (up to
// 50 MiB, a 10 ms wait) and returns that partition's answer as sent: its
// error code and record bytes unprocessed, for tests of what the broker
// itself answers (KAFKA_STORAGE_ERROR, OFFSET_OUT_OF_RANGE, ...).
func FetchOnce(t testing.TB, cl *kgo.Client, topic string, partition int32, offset int64) kmsg.FetchResponseTopicPartition {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MaxBytes = 10, 50<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, md.Topics[topic].ID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = partition, offset, 50<<20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
		t.Fatalf("fetch of %s/%d answered %d topics", topic, partition, len(resp.Topics))
	}
	return resp.Topics[0].Partitions[0]
}

// StableEnds asserts that no partition's LSO lags its high watermark: no
// transaction is left open.
func StableEnds(t testing.TB, addr, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	hw, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	lso, err := adm.ListCommittedOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	hw.Each(func(o kadm.ListedOffset) {
		if l, _ := lso.Lookup(topic, o.Partition); l.Offset != o.Offset {
			t.Errorf("%s/%d: LSO %d behind high watermark %d: a transaction is still open", topic, o.Partition, l.Offset, o.Offset)
		}
	})
}

// logStall logs what can hold a reader back: each partition's high
// watermark and last stable offset, the producers with an open transaction
// there, and every transaction the coordinator runs.
func logStall(t testing.TB, addr, topic string, opts []kgo.Opt) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Logf("stall diagnosis: %v", err)
		return
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	hw, err1 := adm.ListEndOffsets(ctx, topic)
	lso, err2 := adm.ListCommittedOffsets(ctx, topic)
	if err1 == nil && err2 == nil {
		hw.Each(func(o kadm.ListedOffset) {
			l, _ := lso.Lookup(topic, o.Partition)
			t.Logf("stall diagnosis: %s/%d high watermark %d, last stable offset %d", topic, o.Partition, o.Offset, l.Offset)
		})
	}
	if ps, err := adm.DescribeProducers(ctx, kadm.TopicsSet{topic: nil}); err == nil {
		ps.EachProducer(func(p kadm.DescribedProducer) {
			if p.CurrentTxnStartOffset >= 0 {
				t.Logf("stall diagnosis: %s/%d producer %d epoch %d has a transaction open since offset %d (last write %s)",
					p.Topic, p.Partition, p.ProducerID, p.ProducerEpoch, p.CurrentTxnStartOffset, time.UnixMilli(p.LastTimestamp).Format(time.RFC3339Nano))
			}
		})
	}
	if txns, err := adm.DescribeTransactions(ctx); err == nil {
		for _, d := range txns.Sorted() {
			t.Logf("stall diagnosis: transaction %q producer %d epoch %d %s, partitions %v", d.TxnID, d.ProducerID, d.ProducerEpoch, d.State, d.Topics)
		}
	}
	if err1 == nil {
		logLog(t, ctx, addr, topic, hw, opts)
	}
}

// logLog logs every partition's log as runs of records read
// read_uncommitted: the offsets, producer id and epoch of each run of one
// producer's data records, and each transaction marker, so a reader that
// got fewer records than it should can tell aborted data from missing data.
func logLog(t testing.TB, ctx context.Context, addr, topic string, ends kadm.ListedOffsets, opts []kgo.Opt) {
	t.Helper()
	all, err := readLog(ctx, addr, topic, ends, kgo.ReadUncommitted(), opts)
	if err != nil {
		t.Logf("stall diagnosis: reading %s: %v", topic, err)
	}
	// One entry per run of data records of one producer epoch.
	sameRun := func(a, b *kgo.Record) bool {
		return !a.Attrs.IsControl() && !b.Attrs.IsControl() && a.ProducerID == b.ProducerID && a.ProducerEpoch == b.ProducerEpoch
	}
	for p := int32(0); p < int32(len(ends[topic])); p++ {
		var line []byte
		recs, first := all[p], 0
		for i, r := range recs {
			if r.Attrs.IsControl() {
				kind := "abort"
				if len(r.Key) >= 4 && r.Key[3] == 1 {
					kind = "commit"
				}
				line = fmt.Appendf(line, " [%d %s p%d/e%d]", r.Offset, kind, r.ProducerID, r.ProducerEpoch)
				continue
			}
			if i == 0 || !sameRun(recs[i-1], r) {
				first = i
			}
			if i+1 < len(recs) && sameRun(r, recs[i+1]) {
				continue
			}
			line = fmt.Appendf(line, " %d-%d:p%d/e%d", recs[first].Offset, r.Offset, r.ProducerID, r.ProducerEpoch)
		}
		t.Logf("stall diagnosis: %s/%d log read_uncommitted:%s", topic, p, line)
	}
}
