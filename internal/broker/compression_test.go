package broker_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// compressionBroker is a broker on a data directory the test reads.
func compressionBroker(t *testing.T, config map[string]string) (addr, dir string) {
	t.Helper()
	dir = t.TempDir()
	b := exactly.NewTestBroker(t, exactly.Options{DataDir: dir, Config: config})
	return b.Addr(), dir
}

// createTopicWith creates a one-partition topic with configs and returns
// the error the broker answered with (nil for none).
func createTopicWith(t *testing.T, adm *kadm.Client, ctx context.Context, topic string, configs map[string]*string) error {
	t.Helper()
	resp, err := adm.CreateTopic(ctx, 1, 1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	return err
}

// topicConfig describes one key of a topic: its value and source.
func topicConfig(t *testing.T, adm *kadm.Client, ctx context.Context, topic, key string) (string, kmsg.ConfigSource) {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rc.Configs {
		if c.Key == key {
			return c.MaybeValue(), c.Source
		}
	}
	t.Fatalf("%s has no config %s", topic, key)
	return "", 0
}

// compression.type and the KIP-390 levels on create, alter and describe,
// with Kafka's values and ranges; anything else is INVALID_CONFIG.
func TestCompressionTypeConfig(t *testing.T) {
	addr, _ := compressionBroker(t, nil)
	adm, ctx := admin(t, addr)
	for _, v := range []string{"producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"} {
		topic := "ct-" + v
		if err := createTopicWith(t, adm, ctx, topic, map[string]*string{"compression.type": str(v)}); err != nil {
			t.Fatalf("compression.type=%s: %v", v, err)
		}
		if got, src := topicConfig(t, adm, ctx, topic, "compression.type"); got != v || src != kmsg.ConfigSourceDynamicTopicConfig {
			t.Fatalf("%s describes compression.type=%s (source %v)", topic, got, src)
		}
	}
	for key, want := range map[string]string{"compression.gzip.level": "-1", "compression.lz4.level": "9", "compression.zstd.level": "3"} {
		if got, src := topicConfig(t, adm, ctx, "ct-zstd", key); got != want || src != kmsg.ConfigSourceDefaultConfig {
			t.Errorf("%s = %s (source %v), want the default %s", key, got, src, want)
		}
	}
	good := map[string][]string{
		"compression.gzip.level": {"-1", "1", "9"},
		"compression.lz4.level":  {"1", "17"},
		"compression.zstd.level": {"-131072", "-1", "0", "22"},
	}
	n := 0
	for key, vs := range good {
		for _, v := range vs {
			n++
			if err := createTopicWith(t, adm, ctx, fmt.Sprint("level-", n), map[string]*string{key: str(v)}); err != nil {
				t.Errorf("%s=%s refused: %v", key, v, err)
			}
		}
	}
	bad := []struct{ key, value string }{
		{"compression.type", "brotli"}, {"compression.type", "none"}, {"compression.type", ""},
		{"compression.gzip.level", "0"}, {"compression.gzip.level", "10"}, {"compression.gzip.level", "-2"},
		{"compression.lz4.level", "0"}, {"compression.lz4.level", "18"},
		{"compression.zstd.level", "23"}, {"compression.zstd.level", "-131073"}, {"compression.zstd.level", "fast"},
	}
	for i, c := range bad {
		if err := createTopicWith(t, adm, ctx, fmt.Sprint("bad-", i), map[string]*string{c.key: str(c.value)}); !errors.Is(err, kerr.InvalidConfig) {
			t.Errorf("create with %s=%q: %v, want INVALID_CONFIG", c.key, c.value, err)
		}
		resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: c.key, Value: str(c.value)}}, "ct-producer")
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(resp[0].Err, kerr.InvalidConfig) {
			t.Errorf("alter to %s=%q: %v, want INVALID_CONFIG", c.key, c.value, resp[0].Err)
		}
	}
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "compression.type", Value: str("lz4")}, {Name: "compression.lz4.level", Value: str("12")}}, "ct-producer")
	if err != nil || resp[0].Err != nil {
		t.Fatalf("alter to lz4: %v %v", err, resp)
	}
	if got, _ := topicConfig(t, adm, ctx, "ct-producer", "compression.lz4.level"); got != "12" {
		t.Fatalf("compression.lz4.level = %s after alter", got)
	}

	// The broker default: a topic without its own value follows it.
	if err := createTopicWith(t, adm, ctx, "follows-broker", nil); err != nil {
		t.Fatal(err)
	}
	bresp, err := adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Name: "compression.type", Value: str("gzip")}})
	if err != nil || bresp[0].Err != nil {
		t.Fatalf("broker compression.type=gzip: %v %v", err, bresp)
	}
	if got, src := topicConfig(t, adm, ctx, "follows-broker", "compression.type"); got != "gzip" || src == kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("topic follows broker: compression.type=%s (source %v)", got, src)
	}
	bresp, err = adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Name: "compression.zstd.level", Value: str("99")}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(bresp[0].Err, kerr.InvalidConfig) {
		t.Fatalf("broker compression.zstd.level=99: %v, want INVALID_CONFIG", bresp[0].Err)
	}
}

// A static broker default that is not a codec refuses the start.
func TestCompressionTypeBrokerDefaultValidated(t *testing.T) {
	b, err := exactly.Start(exactly.Options{DataDir: t.TempDir(), Config: map[string]string{"compression.type": "brotli"}})
	if err == nil {
		b.Close()
		t.Fatal("broker started with compression.type=brotli")
	}
}

// requestClient is a client for hand-built requests (RequestWith).
func requestClient(t *testing.T, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produceRaw sends one batch to partition 0 and returns the partition's
// answer.
func produceRaw(t *testing.T, cl *kgo.Client, topic string, batch []byte) kmsg.ProduceResponseTopicPartition {
	t.Helper()
	resp, err := testenv.ProduceRequest(topic, 0, batch).RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].Partitions[0]
}

// values are compressible values of n records.
func values(prefix string, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte(fmt.Sprintf("%s-%d %s", prefix, i, strings.Repeat("compressible ", 30)))
	}
	return out
}

// On a zstd topic, batches of every codec are stored as zstd (read from
// the segment file), a zstd batch is stored as sent, and the records read
// back are the ones produced; on a producer topic every batch is stored
// byte for byte as sent, apart from the two fields the broker stamps.
func TestCompressionTypeStoresTopicCodec(t *testing.T) {
	addr, dir := compressionBroker(t, nil)
	adm, ctx := admin(t, addr)
	cl := requestClient(t, addr)
	for _, tc := range []struct{ topic, config, timestamps string }{
		{"to-zstd", "zstd", "CreateTime"},
		{"to-zstd-append-time", "zstd", "LogAppendTime"},
		{"to-snappy", "snappy", "CreateTime"},
		{"as-sent", "producer", "CreateTime"},
	} {
		t.Run(tc.topic, func(t *testing.T) {
			if err := createTopicWith(t, adm, ctx, tc.topic, map[string]*string{
				"compression.type": str(tc.config), "message.timestamp.type": str(tc.timestamps)}); err != nil {
				t.Fatal(err)
			}
			var sent [][]byte
			var want []string
			for codec := int16(0); codec <= 4; codec++ {
				vs := values(fmt.Sprint("codec", codec), 5)
				batch := testenv.CompressedBatch(codec, vs...)
				sent = append(sent, bytes.Clone(batch))
				if r := produceRaw(t, cl, tc.topic, batch); r.ErrorCode != 0 {
					t.Fatalf("codec %d: %v", codec, kerr.ErrorForCode(r.ErrorCode))
				}
				for _, v := range vs {
					want = append(want, string(v))
				}
			}
			stored := testenv.StoredBatches(t, dir, tc.topic, 0)
			if len(stored) != len(sent) {
				t.Fatalf("%d batches on disk, %d produced", len(stored), len(sent))
			}
			for i, b := range stored {
				h, err := record.Validate(b)
				if err != nil {
					t.Fatalf("stored batch %d: %v", i, err)
				}
				sh, _ := record.Parse(sent[i])
				switch {
				case tc.config == "producer":
					// Base offset and leader epoch are the broker's.
					if !bytes.Equal(b[12:], sent[i][12:]) || !bytes.Equal(b[8:12], sent[i][8:12]) {
						t.Errorf("batch %d not stored as sent", i)
					}
				case tc.config == "zstd" && h.Compression() != record.CompressionZstd,
					tc.config == "snappy" && h.Compression() != record.CompressionSnappy:
					t.Errorf("batch %d stored with codec %d, topic says %s", i, h.Compression(), tc.config)
				case tc.config == "zstd" && sh.Compression() == record.CompressionZstd && tc.timestamps == "CreateTime" && !bytes.Equal(b[12:], sent[i][12:]):
					t.Errorf("a zstd batch on a zstd topic was re-encoded")
				}
				if tc.timestamps == "LogAppendTime" && h.Attributes&record.AttrLogAppendTime == 0 {
					t.Errorf("batch %d lost its LogAppendTime", i)
				}
				if h.NumRecords != sh.NumRecords || h.FirstTimestamp != sh.FirstTimestamp || h.ProducerID != sh.ProducerID {
					t.Errorf("batch %d header changed: %+v, sent %+v", i, h, sh)
				}
			}
			var got []string
			for _, r := range testenv.Flatten(testenv.ReadToEnd(t, addr, tc.topic, false)) {
				got = append(got, string(r.Value))
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("read back %d records differing from the %d produced", len(got), len(want))
			}
		})
	}
}

// idempotentBatch is batch (from CompressedBatch) stamped as producer
// pid's batch at epoch and base sequence seq.
func idempotentBatch(batch []byte, pid int64, epoch int16, seq int32) []byte {
	be := binary.BigEndian
	be.PutUint64(batch[43:], uint64(pid))
	be.PutUint16(batch[51:], uint16(epoch))
	be.PutUint32(batch[53:], uint32(seq))
	return testenv.SealBatch(batch)
}

// The producer state sees the re-encoded batch's header, which keeps the
// producer's id, epoch and sequences: a retried gzip batch on a zstd topic
// is answered with its first offsets and not stored twice, and sequence
// checks go on as before.
func TestRecodedRetryIsDeduplicated(t *testing.T) {
	addr, dir := compressionBroker(t, map[string]string{"compression.type": "zstd"})
	adm, ctx := admin(t, addr)
	cl := requestClient(t, addr)
	if err := createTopicWith(t, adm, ctx, "dedup", nil); err != nil {
		t.Fatal(err)
	}
	init := kmsg.NewPtrInitProducerIDRequest()
	init.TransactionTimeoutMillis = 60000
	ir, err := init.RequestWith(ctx, cl)
	if err != nil || ir.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v %v", err, ir)
	}
	pid, epoch := ir.ProducerID, ir.ProducerEpoch
	first := idempotentBatch(testenv.CompressedBatch(record.CompressionGzip, values("a", 4)...), pid, epoch, 0)
	r1 := produceRaw(t, cl, "dedup", bytes.Clone(first))
	r2 := produceRaw(t, cl, "dedup", bytes.Clone(first))
	if r1.ErrorCode != 0 || r2.ErrorCode != 0 || r2.BaseOffset != r1.BaseOffset {
		t.Fatalf("first send %v at %d, retry %v at %d: want the retry answered with the first offset",
			kerr.ErrorForCode(r1.ErrorCode), r1.BaseOffset, kerr.ErrorForCode(r2.ErrorCode), r2.BaseOffset)
	}
	next := idempotentBatch(testenv.CompressedBatch(0, values("b", 2)...), pid, epoch, 4)
	if r := produceRaw(t, cl, "dedup", next); r.ErrorCode != 0 || r.BaseOffset != r1.BaseOffset+4 {
		t.Fatalf("next batch: %v at %d", kerr.ErrorForCode(r.ErrorCode), r.BaseOffset)
	}
	gap := idempotentBatch(testenv.CompressedBatch(record.CompressionGzip, values("c", 1)...), pid, epoch, 9)
	if r := produceRaw(t, cl, "dedup", gap); r.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("sequence gap: %v, want OUT_OF_ORDER_SEQUENCE_NUMBER", kerr.ErrorForCode(r.ErrorCode))
	}
	stored := testenv.StoredBatches(t, dir, "dedup", 0)
	if len(stored) != 2 {
		t.Fatalf("%d batches stored, want 2 (the retry deduplicated)", len(stored))
	}
	for i, b := range stored {
		h, err := record.Validate(b)
		if err != nil || h.Compression() != record.CompressionZstd || h.ProducerID != pid || h.ProducerEpoch != epoch || h.BaseSequence != []int32{0, 4}[i] {
			t.Fatalf("stored batch %d: %+v, %v", i, h, err)
		}
	}
}

// A batch that re-encodes past max.message.bytes is MESSAGE_TOO_LARGE, as
// in Kafka; the same batch is taken by a topic that stores it as sent. A
// decompression bomb is refused on a re-encoding topic as on any other.
func TestRecodedBatchOverMaxMessageBytes(t *testing.T) {
	addr, _ := compressionBroker(t, nil)
	adm, ctx := admin(t, addr)
	cl := requestClient(t, addr)
	limit := map[string]*string{"max.message.bytes": str("65536")}
	if err := createTopicWith(t, adm, ctx, "as-sent", limit); err != nil {
		t.Fatal(err)
	}
	limit["compression.type"] = str("uncompressed")
	if err := createTopicWith(t, adm, ctx, "plain", limit); err != nil {
		t.Fatal(err)
	}
	zeros := testenv.CompressedBatch(record.CompressionGzip, make([]byte, 256<<10))
	if r := produceRaw(t, cl, "as-sent", bytes.Clone(zeros)); r.ErrorCode != 0 {
		t.Fatalf("stored as sent: %v", kerr.ErrorForCode(r.ErrorCode))
	}
	r := produceRaw(t, cl, "plain", bytes.Clone(zeros))
	if r.ErrorCode != kerr.MessageTooLarge.Code || r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, "re-encoded") {
		t.Fatalf("256 KiB stored uncompressed under max.message.bytes=65536: %v %v, want MESSAGE_TOO_LARGE", kerr.ErrorForCode(r.ErrorCode), r.ErrorMessage)
	}
	// A bomb is stopped at the decompression bound on the way to the
	// topic's codec too.
	if err := createTopicWith(t, adm, ctx, "zstd", map[string]*string{"compression.type": str("zstd")}); err != nil {
		t.Fatal(err)
	}
	r = produceRaw(t, cl, "zstd", testenv.Bomb(record.CompressionGzip, 64<<20))
	if r.ErrorCode != kerr.MessageTooLarge.Code || r.ErrorMessage == nil || !strings.Contains(*r.ErrorMessage, "8 x max.message.bytes") {
		t.Fatalf("64 MiB gzip bomb to a zstd topic: %v %v, want MESSAGE_TOO_LARGE", kerr.ErrorForCode(r.ErrorCode), r.ErrorMessage)
	}
}
