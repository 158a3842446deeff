package compat

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	krecord "github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// topicCodecWrites are what TestTopicCompressionType writes to a topic:
// each partition by one client, uncompressed and gzip, idempotent and
// transactional, with one aborted transaction.
type topicCodecWrites struct {
	committed []record // every record of a committed or non-transactional write
	aborted   []record // the records of the aborted transaction (partition 2)
}

// kgoTxn writes recs in one franz-go transaction and commits or aborts it.
func kgoTxn(t *testing.T, addr, topic, txnID string, recs []record, commit bool, opts ...kgo.Opt) {
	t.Helper()
	opts = append([]kgo.Opt{
		kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.TransactionalID(txnID), kgo.ProduceRequestTimeout(30 * time.Second),
	}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		kr := &kgo.Record{Partition: r.Partition, Key: r.Key, Value: r.Value}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		cl.Produce(ctx, kr, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("transactional produce: %v", err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
		t.Fatalf("ending the transaction (commit=%v): %v", commit, err)
	}
}

// writeEveryWay writes to topic's four partitions: kcat uncompressed,
// gzip, and gzip idempotent (0); franz-go uncompressed at acks=1 and gzip
// idempotent (1); franz-go gzip transactions, one committed, one aborted,
// and one uncompressed committed (2); kafka-python lz4 (3). Every run
// mixes line-safe records with compressible ones, so clients compress.
func writeEveryWay(t *testing.T, addr, topic string) topicCodecWrites {
	t.Helper()
	var w topicCodecWrites
	run := func(name string, p int32) []record {
		recs := append(lineSafeRecords(topic+"-"+name, []int32{p}, 8), compressibleRecords(p, 12)...)
		for i := range recs[8:] {
			recs[8+i].Key = []byte(fmt.Sprintf("bulk-%s-%d", name, i))
		}
		return recs
	}
	kcat := func(name, codec string, extra ...string) {
		recs := run(name, 0)
		kcatProduce(t, addr, topic, recs, append([]string{"-z", codec, "-X", "linger.ms=50"}, extra...)...)
		w.committed = append(w.committed, recs...)
	}
	kcat("kcat-none", "none")
	kcat("kcat-gzip", "gzip")
	kcat("kcat-idem-gzip", "gzip", "-X", "enable.idempotence=true")

	plain := run("kgo-none", 1)
	kgoProduce(t, addr, topic, plain, kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	idem := run("kgo-idem-gzip", 1)
	kgoProduce(t, addr, topic, idem, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	w.committed = append(w.committed, plain...)
	w.committed = append(w.committed, idem...)

	txnID := topic + "-txn"
	t1, aborted, t3 := run("txn-commit", 2), run("txn-abort", 2), run("txn-none", 2)
	kgoTxn(t, addr, topic, txnID, t1, true, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	kgoTxn(t, addr, topic, txnID, aborted, false, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	kgoTxn(t, addr, topic, txnID, t3, true, kgo.ProducerBatchCompression(kgo.NoCompression()))
	w.committed = append(w.committed, t1...)
	w.committed = append(w.committed, t3...)
	w.aborted = aborted

	py := run("python-lz4", 3)
	pythonProduce(t, addr, topic, py, "all", "lz4", 1<<20)
	w.committed = append(w.committed, py...)
	return w
}

// onPartition keeps the records of partition p, in order.
func onPartition(recs []record, p int32) []record {
	var out []record
	for _, r := range recs {
		if r.Partition == p {
			out = append(out, r)
		}
	}
	return out
}

// withAborted is what a read_uncommitted reader sees: the aborted
// records in their place on partition 2, between the two commits.
func (w topicCodecWrites) withAborted() []record {
	p2 := onPartition(w.committed, 2)
	n := len(p2) / 2 // two committed runs of equal length
	var out []record
	for _, r := range w.committed {
		if r.Partition != 2 {
			out = append(out, r)
		}
	}
	out = append(out, p2[:n]...)
	out = append(out, w.aborted...)
	return append(out, p2[n:]...)
}

// TestTopicCompressionType: a topic with compression.type=zstd receives
// uncompressed, gzip and lz4 batches from kcat (librdkafka), franz-go and
// kafka-python, idempotent and transactional ones included, and stores
// every data batch as zstd (read from its segment files) and every
// transaction marker uncompressed. Every client reads the records
// unchanged: kcat and franz-go read_committed without the aborted
// transaction, franz-go and kafka-python (which has no read_committed)
// read_uncommitted with it. The same writes to a compression.type=producer
// topic arrive compressed as the clients sent them, so the zstd topic's
// batches were re-encoded and not sent as zstd.
func TestTopicCompressionType(t *testing.T) {
	requireKcat(t)
	requirePythonCodec(t, requireKafkaPython(t), "lz4")
	requirePythonCodec(t, requireKafkaPython(t), "zstd")
	dir := t.TempDir()
	b := exactly.NewTestBroker(t, exactly.Options{DataDir: dir, Config: map[string]string{"auto.create.topics.enable": "false"}})
	addr := b.Addr()

	createTopic(t, addr, "as-sent", 4, map[string]*string{"compression.type": ptr("producer")})
	sent := writeEveryWay(t, addr, "as-sent")
	got := kgoConsume(t, addr, "as-sent", len(sent.committed), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	diffRecords(t, "kgo read_committed (as-sent)", sent.committed, got)
	for p, codec := range map[int32]string{1: "gzip", 3: "lz4"} {
		// kcat and the transactions also send uncompressed batches, so
		// only whole-gzip and whole-lz4 partitions are checked here.
		var idem []record
		for _, r := range onPartition(got, p) {
			if p == 3 || strings.HasPrefix(string(r.Key), "bulk-kgo-idem-gzip-") {
				idem = append(idem, r)
			}
		}
		checkBulkCodec(t, codec, idem)
	}

	createTopic(t, addr, "zstd", 4, map[string]*string{"compression.type": ptr("zstd")})
	w := writeEveryWay(t, addr, "zstd")

	markerOffsets := map[int32]map[int64]bool{}
	for p := range 4 {
		var data, markers, withPID, withoutPID int
		for i, raw := range testenv.StoredBatches(t, dir, "zstd", p) {
			h, err := krecord.Validate(raw)
			if err != nil {
				t.Fatalf("partition %d, stored batch %d: %v", p, i, err)
			}
			switch {
			case h.IsControl():
				markers++
				if markerOffsets[int32(p)] == nil {
					markerOffsets[int32(p)] = map[int64]bool{}
				}
				markerOffsets[int32(p)][h.BaseOffset] = true
				if h.Compression() != krecord.CompressionNone {
					t.Errorf("partition %d: a transaction marker stored with codec %d", p, h.Compression())
				}
			case h.Compression() != krecord.CompressionZstd:
				t.Errorf("partition %d: batch %d stored with codec %d, want zstd", p, i, h.Compression())
			default:
				data++
				if h.HasProducerID() {
					withPID++
				} else {
					withoutPID++
				}
				if p == 2 && (!h.IsTransactional() || !h.HasProducerID()) {
					t.Errorf("partition 2: batch %d lost its transactional producer: %+v", i, h)
				}
			}
		}
		if data == 0 {
			t.Errorf("partition %d: no data batches stored", p)
		}
		if wantMarkers := map[int]int{2: 3}[p]; markers != wantMarkers {
			t.Errorf("partition %d: %d transaction markers, want %d", p, markers, wantMarkers)
		}
		// The idempotent runs of kcat (0) and franz-go (1) kept their
		// producer ids; franz-go's acks=1 run (1) has none.
		if (p == 0 || p == 1) && withPID == 0 || p == 1 && withoutPID == 0 {
			t.Errorf("partition %d: %d batches with a producer id, %d without", p, withPID, withoutPID)
		}
	}

	t.Run("kgo-read-committed", func(t *testing.T) {
		got := kgoConsume(t, addr, "zstd", len(w.committed), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		diffRecords(t, "kgo read_committed", w.committed, got)
		checkCodec(t, "zstd", got)
	})
	t.Run("kgo-read-uncommitted", func(t *testing.T) {
		all := w.withAborted()
		got := kgoConsume(t, addr, "zstd", len(all))
		diffRecords(t, "kgo read_uncommitted", all, got)
		checkCodec(t, "zstd", got)
	})
	t.Run("kcat-read-committed", func(t *testing.T) {
		diffRecords(t, "kcat", w.committed, kcatConsume(t, addr, "zstd", "-X", "isolation.level=read_committed"))
	})
	t.Run("kafka-python", func(t *testing.T) {
		// kafka-python 2.0.2 hands the records of control batches to the
		// application as data; they are dropped here by their offsets,
		// read from the segment files above.
		all := w.withAborted()
		var got []record
		for _, r := range pythonConsume(t, addr, "zstd", len(all)+len(markerOffsets[2])) {
			if !markerOffsets[r.Partition][r.Offset] {
				got = append(got, r)
			}
		}
		diffRecords(t, "kafka-python", all, got)
	})
}
