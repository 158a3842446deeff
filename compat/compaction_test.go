package compat

// Compacted topics (cleanup.policy=compact) as real clients see them:
// franz-go, kcat and kafka-python read a compacted partition whose offsets have gaps,
// keyless records are refused, a changelog consumer rebuilds the same table
// before and after compaction (and after a restart), and in a Streams-style
// transactional changelog no aborted record ever reappears.

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// compactingBroker starts a broker whose cleaner looks for work every
// 50 ms, on dataDir ("" for a temporary one).
func compactingBroker(t *testing.T, dataDir string) *exactly.Broker {
	t.Helper()
	return exactly.NewTestBroker(t, exactly.Options{DataDir: dataDir, Config: map[string]string{
		"auto.create.topics.enable": "false",
		"log.cleaner.backoff.ms":    "50",
	}})
}

// compactedTopicConfigs: small segments so that most of the log is closed
// and cleanable, any dirt worth cleaning.
func compactedTopicConfigs() map[string]*string {
	return map[string]*string{
		"cleanup.policy":            ptr("compact"),
		"segment.bytes":             ptr("2048"),
		"min.cleanable.dirty.ratio": ptr("0.01"),
	}
}

// table is a changelog's state: the last value per key; a tombstone
// removes the key.
type table map[string]string

func (tb table) apply(key, value []byte) {
	if value == nil {
		delete(tb, string(key))
		return
	}
	tb[string(key)] = string(value)
}

// restore rebuilds the table from records in offset order.
func restore(recs []*kgo.Record) table {
	tb := table{}
	for _, r := range recs {
		tb.apply(r.Key, r.Value)
	}
	return tb
}

func sameTable(t *testing.T, what string, got, want table) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d keys, want %d", what, len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: key %s = %q, want %q", what, k, got[k], v)
		}
	}
}

// hasGap reports whether consecutive records skip an offset.
func hasGap(recs []*kgo.Record) bool {
	for i := 1; i < len(recs); i++ {
		if recs[i].Offset != recs[i-1].Offset+1 {
			return true
		}
	}
	return false
}

// awaitCompaction reads the partition until it holds at most half the
// records it was given, so the cleaner has run over most of it.
func awaitCompaction(t *testing.T, addr, topic string, written int, committed bool) []*kgo.Record {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		recs := testenv.ReadToEnd(t, addr, topic, committed)[0]
		if len(recs) <= written/2 {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still holds %d of %d records after 90 s: not compacted", topic, len(recs), written)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestCompactedTopicWithGaps: franz-go, kcat and kafka-python read a
// compacted topic
// whose offsets have gaps and rebuild the same table as before compaction
// (also after a restart, which replays the log with its gaps); keyless
// records are INVALID_RECORD for franz-go, kcat and a raw v8 request (with
// KIP-467 record errors).
func TestCompactedTopicWithGaps(t *testing.T) {
	dir := t.TempDir()
	b := compactingBroker(t, dir)
	addr := b.Addr()
	const topic = "changelog"
	createTopic(t, addr, topic, 1, compactedTopicConfigs())

	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0),
		kgo.ProducerBatchCompression(kgo.GzipCompression(), kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewSource(1))
	want := table{}
	written := 0
	for i := 0; i < 60; i++ {
		var batch []*kgo.Record
		for j := 0; j < 1+rng.Intn(8); j++ {
			k := []byte(fmt.Sprintf("key-%02d", rng.Intn(25)))
			var v []byte
			if rng.Intn(8) > 0 {
				v = []byte(fmt.Sprintf("value-%d-%d", i, j))
			}
			batch = append(batch, &kgo.Record{Key: k, Value: v})
			want.apply(k, v)
		}
		written += len(batch)
		if err := cl.ProduceSync(ctx, batch...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	before := testenv.ReadToEnd(t, addr, topic, false)[0]
	sameTable(t, "franz-go before compaction", restore(before), want)

	after := awaitCompaction(t, addr, topic, written, false)
	if !hasGap(after) {
		t.Fatal("compacted partition has no offset gap")
	}
	sameTable(t, "franz-go after compaction", restore(after), want)

	// Keyless records.
	err = cl.ProduceSync(ctx, &kgo.Record{Value: []byte("no key")}).FirstErr()
	if !errors.Is(err, kerr.InvalidRecord) {
		t.Fatalf("franz-go keyless produce: %v, want INVALID_RECORD", err)
	}
	raw := testenv.DialRaw(t, addr)
	req := testenv.ProduceRequest(topic, 0, testenv.Batch("a", "b"))
	resp := raw.Request(req, 8).(*kmsg.ProduceResponse)
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != kerr.InvalidRecord.Code || len(p.ErrorRecords) != 2 || p.ErrorRecords[1].RelativeOffset != 1 ||
		p.ErrorMessage == nil || !strings.Contains(*p.ErrorMessage, "without key") {
		t.Fatalf("raw keyless produce: code %d, message %v, record errors %+v", p.ErrorCode, p.ErrorMessage, p.ErrorRecords)
	}

	// DeleteRecords is refused on a compact-only topic, as Kafka does.
	dr := kmsg.NewPtrDeleteRecordsRequest()
	drt := kmsg.NewDeleteRecordsRequestTopic()
	drt.Topic = topic
	drp := kmsg.NewDeleteRecordsRequestTopicPartition()
	drp.Offset = 1
	drt.Partitions = append(drt.Partitions, drp)
	dr.Topics = append(dr.Topics, drt)
	dr.TimeoutMillis = 5000
	if c := raw.Request(dr, 2).(*kmsg.DeleteRecordsResponse).Topics[0].Partitions[0].ErrorCode; c != kerr.PolicyViolation.Code {
		t.Fatalf("DeleteRecords on a compacted topic: error %d, want POLICY_VIOLATION", c)
	}

	// A restart replays the compacted log.
	cl.Close()
	b.Close()
	b = compactingBroker(t, dir)
	addr = b.Addr()
	after = testenv.ReadToEnd(t, addr, topic, false)[0]
	sameTable(t, "franz-go after a restart", restore(after), want)

	// External clients (skipped with -short), on the restarted broker.
	requireKcat(t)
	kc := kcatConsume(t, addr, topic)
	if len(kc) != len(after) {
		t.Fatalf("kcat read %d records, franz-go %d", len(kc), len(after))
	}
	kt := table{}
	for i, r := range kc {
		if r.Offset != after[i].Offset {
			t.Fatalf("kcat record %d at offset %d, franz-go's at %d", i, r.Offset, after[i].Offset)
		}
		kt.apply(r.Key, r.Value)
	}
	sameTable(t, "kcat after compaction", kt, want)
	if out, err := kcatProduceErr(addr, topic, "keyless value\n"); err == nil || !strings.Contains(out, "Broker failed to validate record") {
		t.Fatalf("kcat keyless produce: %v\n%s", err, out)
	}

	requireKafkaPython(t)
	py := pythonConsume(t, addr, topic, len(after))
	pt := table{}
	for i, r := range py {
		if r.Offset != after[i].Offset {
			t.Fatalf("kafka-python record %d at offset %d, franz-go's at %d", i, r.Offset, after[i].Offset)
		}
		pt.apply(r.Key, r.Value)
	}
	if len(py) != len(after) {
		t.Fatalf("kafka-python read %d records, franz-go %d", len(py), len(after))
	}
	sameTable(t, "kafka-python after compaction", pt, want)

}

// kcatProduceErr produces lines with kcat and returns its output and exit
// error (a refused record makes kcat exit non-zero; librdkafka words
// INVALID_RECORD as "Broker failed to validate record").
func kcatProduceErr(addr, topic, lines string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcatPath, "-b", addr, "-P", "-t", topic, "-p", "0", "-X", "message.send.max.retries=0")
	cmd.Stdin = strings.NewReader(lines)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestTransactionalChangelogRestore is a Kafka Streams-style changelog:
// transactional writes of keyed state updates, a third of the
// transactions aborted, compaction running throughout, and restores with
// read_committed before, during and after compaction (and after a
// restart): each rebuilds exactly the committed table, and no aborted
// value ever appears in it. Compaction also removes the aborted records
// from the log itself.
func TestTransactionalChangelogRestore(t *testing.T) {
	dir := t.TempDir()
	b := compactingBroker(t, dir)
	addr := b.Addr()
	const topic = "store-changelog"
	createTopic(t, addr, topic, 1, compactedTopicConfigs())
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.TransactionalID("store-1"), kgo.ProducerLinger(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewSource(2))
	want := table{}
	written, abortedWritten := 0, 0
	check := func(what string) {
		t.Helper()
		recs := testenv.ReadToEnd(t, addr, topic, true)[0]
		for _, r := range recs {
			if strings.HasPrefix(string(r.Value), "aborted") {
				t.Fatalf("%s: aborted record %s=%s at offset %d read committed", what, r.Key, r.Value, r.Offset)
			}
		}
		sameTable(t, what, restore(recs), want)
	}
	for i := 0; i < 80; i++ {
		if err := cl.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		abort := rng.Intn(3) == 0
		pending := table{}
		var deleted []string
		for j := 0; j < 1+rng.Intn(6); j++ {
			k := fmt.Sprintf("store-key-%02d", rng.Intn(20))
			v := fmt.Sprintf("committed-%d-%d", i, j)
			if abort {
				v = fmt.Sprintf("aborted-%d-%d", i, j)
			}
			rec := &kgo.Record{Key: []byte(k), Value: []byte(v)}
			if !abort && rng.Intn(10) == 0 {
				rec.Value = nil
				deleted = append(deleted, k)
				delete(pending, k)
			} else {
				pending[k] = v
			}
			if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
			written++
			if abort {
				abortedWritten++
			}
		}
		if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(!abort)); err != nil {
			t.Fatal(err)
		}
		if !abort {
			for _, k := range deleted {
				delete(want, k)
			}
			for k, v := range pending {
				want[k] = v
			}
		}
		if i%20 == 19 {
			check(fmt.Sprintf("restore after transaction %d", i))
		}
	}
	awaitCompaction(t, addr, topic, written, true)
	check("restore after compaction")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		left := 0
		for _, r := range testenv.ReadToEnd(t, addr, topic, false)[0] {
			if strings.HasPrefix(string(r.Value), "aborted") {
				left++
			}
		}
		if left*2 <= abortedWritten {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d aborted records still in the log after compaction", left, abortedWritten)
		}
	}
	cl.Close()
	b.Close()
	b = compactingBroker(t, dir)
	addr = b.Addr()
	check("restore after a restart")
	testenv.StableEnds(t, addr, topic)
}
