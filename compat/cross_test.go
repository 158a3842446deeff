package compat

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// client is one of the clients under test, seen as a writer and a reader of
// the records of lineSafeRecords plus a 1 MB one.
type client struct {
	name    string
	require func(t *testing.T)
	// produce writes recs compressed with codec.
	produce func(t *testing.T, addr, topic string, recs []record, codec string)
	// consume reads the n records of topic.
	consume func(t *testing.T, addr, topic string, n int) []record
}

var clients = []client{
	{
		name:    "kgo",
		require: func(*testing.T) {},
		produce: func(t *testing.T, addr, topic string, recs []record, codec string) {
			var c kgo.CompressionCodec
			for _, kc := range kgoCodecs {
				if kc.name == codec {
					c = kc.codec
				}
			}
			kgoProduce(t, addr, topic, recs, kgo.ProducerBatchCompression(c), kgo.ProducerBatchMaxBytes(2<<20))
		},
		consume: func(t *testing.T, addr, topic string, n int) []record {
			return kgoConsume(t, addr, topic, n, kgo.FetchMaxBytes(4<<20), kgo.FetchMaxPartitionBytes(4<<20))
		},
	},
	{
		name:    "kcat",
		require: requireKcat,
		produce: func(t *testing.T, addr, topic string, recs []record, codec string) {
			kcatProduce(t, addr, topic, recs, "-z", codec, "-X", "message.max.bytes=2097152")
		},
		consume: func(t *testing.T, addr, topic string, _ int) []record {
			return kcatConsume(t, addr, topic)
		},
	},
	{
		name: "kafka-python",
		require: func(t *testing.T) {
			requirePythonCodec(t, requireKafkaPython(t), "lz4")
		},
		produce: func(t *testing.T, addr, topic string, recs []record, codec string) {
			pythonProduce(t, addr, topic, recs, "all", codec, 2<<20)
		},
		consume: pythonConsume,
	},
}

// TestCrossClient writes records with each client and reads them with each
// of the others: keys (null, empty, set), empty values, headers (repeated
// names, empty values) and a 1 MB record, compressed with a codec per
// writer. kgo, reading, also checks the batches kept the writer's codec.
func TestCrossClient(t *testing.T) {
	addr := startBroker(t)
	codecs := map[string]string{"kgo": "zstd", "kcat": "gzip", "kafka-python": "lz4"}
	for _, w := range clients {
		t.Run("from-"+w.name, func(t *testing.T) {
			w.require(t)
			topic := "cross-from-" + w.name
			createTopic(t, addr, topic, 3, largeTopicConfig)
			want := append(lineSafeRecords(topic, []int32{0, 1, 2}, 15), largeRecord(topic, 1))
			w.produce(t, addr, topic, want, codecs[w.name])
			for _, r := range clients {
				if r.name == w.name {
					continue
				}
				t.Run("to-"+r.name, func(t *testing.T) {
					r.require(t)
					got := r.consume(t, addr, topic, len(want))
					diffRecords(t, r.name, want, got)
					if r.name == "kgo" {
						// Each partition has records from several runs
						// of the writer; the 1 MB one is certain to be
						// compressed.
						for _, g := range got {
							if len(g.Value) == largeSize {
								checkCodec(t, codecs[w.name], []record{g})
							}
						}
					}
				})
			}
		})
	}
}
