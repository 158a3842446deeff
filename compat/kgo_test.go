package compat

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kgoProduce writes recs in order with one kgo client and waits for every
// acknowledgement (under acks=0, for every write).
func kgoProduce(t *testing.T, addr, topic string, recs []record, opts ...kgo.Opt) {
	t.Helper()
	opts = append([]kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProduceRequestTimeout(30 * time.Second),
	}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	krs := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		kr := &kgo.Record{Partition: r.Partition, Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		krs[i] = kr
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.ProduceSync(ctx, krs...).FirstErr(); err != nil {
		t.Fatalf("kgo produce to %s: %v", topic, err)
	}
}

// kgoConsume reads n records from the start of every partition of topic,
// without a group, and a little more to catch records beyond n.
func kgoConsume(t *testing.T, addr, topic string, n int, opts ...kgo.Opt) []record {
	t.Helper()
	opts = append([]kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200 * time.Millisecond),
	}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []record
	deadline := time.Now().Add(30 * time.Second)
	for done := false; !done; {
		wait := time.Second
		if len(out) >= n {
			// Everything wanted is here: one short poll more catches
			// records beyond n.
			wait, done = 300*time.Millisecond, true
		} else if time.Now().After(deadline) {
			t.Fatalf("kgo consume of %s: %d records after 30s, want %d", topic, len(out), n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("kgo fetch %s[%d]: %v", topic, p, err)
			}
		})
		fs.EachRecord(func(kr *kgo.Record) {
			r := record{Partition: kr.Partition, Offset: kr.Offset, Key: kr.Key, Value: kr.Value, Codec: "unknown"}
			if c := int(kr.Attrs.CompressionType()); c < len(codecNames) {
				r.Codec = codecNames[c]
			}
			for _, h := range kr.Headers {
				r.Headers = append(r.Headers, header{h.Key, h.Value})
			}
			out = append(out, r)
		})
	}
	return out
}

// kgoRecords has what lineSafeRecords has plus what only a library can
// write: a null value, a header named but valueless, binary bytes.
func kgoRecords(prefix string, partitions []int32) []record {
	recs := lineSafeRecords(prefix, partitions, 12)
	recs = append(recs,
		record{Partition: partitions[0], Key: []byte(prefix + "-tombstone"), Value: nil},
		record{Partition: partitions[len(partitions)-1], Key: []byte{0, 1, 2, '\n', 0xff},
			Value: []byte("line one\nline two\x00\xfe"), Headers: []header{{"bin", []byte{0, '\n', 0xff}}, {"", []byte("empty name")}}},
	)
	return recs
}

var kgoCodecs = []struct {
	name  string
	codec kgo.CompressionCodec
}{
	{"none", kgo.NoCompression()},
	{"gzip", kgo.GzipCompression()},
	{"snappy", kgo.SnappyCompression()},
	{"lz4", kgo.Lz4Compression()},
	{"zstd", kgo.ZstdCompression()},
}

var kgoAcks = []struct {
	name string
	opts []kgo.Opt
}{
	{"acks=0", []kgo.Opt{kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite()}},
	{"acks=1", []kgo.Opt{kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite()}},
	{"acks=all", []kgo.Opt{kgo.RequiredAcks(kgo.AllISRAcks())}},
}

// TestKgoRoundTrip writes keyed, keyless and null-valued records with
// headers through every codec and acks setting, and reads them back.
func TestKgoRoundTrip(t *testing.T) {
	addr := startBroker(t)
	for _, c := range kgoCodecs {
		for _, a := range kgoAcks {
			t.Run(c.name+"/"+a.name, func(t *testing.T) {
				topic := fmt.Sprintf("kgo-%s-%s", c.name, a.name[len("acks="):])
				createTopic(t, addr, topic, 3, nil)
				// Partition 1 stays empty.
				want := append(kgoRecords(topic, []int32{0, 2}), compressibleRecords(2, 20)...)
				opts := append([]kgo.Opt{kgo.ProducerBatchCompression(c.codec)}, a.opts...)
				kgoProduce(t, addr, topic, want, opts...)
				got := kgoConsume(t, addr, topic, len(want))
				diffRecords(t, "kgo", want, got)
				checkBulkCodec(t, c.name, got)
			})
		}
	}
}

// TestKgoLargeRecord writes a 1 MB record, between two small ones, to a
// topic whose max.message.bytes allows it.
func TestKgoLargeRecord(t *testing.T) {
	addr := startBroker(t)
	for _, c := range kgoCodecs {
		t.Run(c.name, func(t *testing.T) {
			topic := "kgo-large-" + c.name
			createTopic(t, addr, topic, 1, largeTopicConfig)
			want := []record{
				{Key: []byte("before"), Value: []byte("small")},
				largeRecord(topic, 0),
				{Key: []byte("after"), Value: []byte("small")},
			}
			// Separate produce calls keep the large record in a batch of
			// its own: three records of 1 MB together would pass the limit.
			for _, r := range want {
				kgoProduce(t, addr, topic, []record{r}, kgo.ProducerBatchCompression(c.codec), kgo.ProducerBatchMaxBytes(2<<20))
			}
			got := kgoConsume(t, addr, topic, len(want), kgo.FetchMaxBytes(4<<20), kgo.FetchMaxPartitionBytes(4<<20))
			diffRecords(t, "kgo", want, got)
			if len(got) == len(want) {
				// kgo sends a batch uncompressed when compression does
				// not make it smaller, as with the small records.
				checkCodec(t, c.name, got[1:2])
			}
		})
	}
}

// TestKgoLargeRecordRejectedByDefault checks the other side of the limit: on
// a topic with the default max.message.bytes the 1 MB record is refused
// with MESSAGE_TOO_LARGE and nothing is written.
func TestKgoLargeRecordRejectedByDefault(t *testing.T) {
	addr := startBroker(t)
	topic := "kgo-large-default"
	createTopic(t, addr, topic, 1, nil)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchMaxBytes(2<<20), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RecordRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	r := largeRecord(topic, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = cl.ProduceSync(ctx, &kgo.Record{Key: r.Key, Value: r.Value}).FirstErr()
	if !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("producing %d bytes to a topic with the default max.message.bytes: err = %v, want MESSAGE_TOO_LARGE", largeSize, err)
	}
	kgoProduce(t, addr, topic, []record{{Value: []byte("small")}})
	diffRecords(t, "kgo", []record{{Value: []byte("small")}}, kgoConsume(t, addr, topic, 1))
}
