package compat

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// largeTopicConfig lets a topic take a record of about 1 MB, above the
// default max.message.bytes (1048588) once batch overhead is counted.
var largeTopicConfig = map[string]*string{"max.message.bytes": ptr("2097152")}

// largeSize is the value size of the "1 MB record" tests.
const largeSize = 1 << 20

func ptr(s string) *string { return &s }

// startBroker starts an embedded broker for one test and returns its
// address. Topics are never created implicitly: each test creates its own.
func startBroker(t *testing.T) string {
	t.Helper()
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{
		"auto.create.topics.enable": "false",
	}})
	return b.Addr()
}

// createTopic creates a topic with kadm.
func createTopic(t *testing.T, addr, name string, partitions int32, configs map[string]*string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, configs, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("creating topic %s: %v", name, err)
	}
}

// header is one record header; a record's headers keep their order and may
// repeat a name.
type header struct {
	Key   string
	Value []byte
}

// record is a client-neutral record. A nil Key or Value is null, distinct
// from an empty one. Offset is set only on records read back, Codec only on
// records read back by kgo (which sees each batch's compression).
type record struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []header
	Codec     string
}

// codecNames are the batch attribute compression codes.
var codecNames = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// checkCodec fails unless every record was read from a batch compressed with
// codec: the broker stores batches as the producer compressed them.
func checkCodec(t *testing.T, codec string, recs []record) {
	t.Helper()
	for _, r := range recs {
		if r.Codec != codec {
			t.Errorf("record %v came in a batch compressed with %s, want %s", r, r.Codec, codec)
			return
		}
	}
}

// compressibleRecords are n records for one partition, with the same header,
// each of which compresses well alone. Clients (kgo, librdkafka,
// kafka-python) send a batch uncompressed when compressing does not make it
// smaller, as for a batch of one small record, so only batches of these are
// sure to be compressed whatever the client's batching.
func compressibleRecords(partition int32, n int) []record {
	out := make([]record, n)
	for i := range out {
		out[i] = record{Partition: partition, Key: []byte("bulk-" + strconv.Itoa(i)),
			Value:   []byte(strings.Repeat("compressible ", 20) + strconv.Itoa(i)),
			Headers: []header{{"bulk", []byte("yes")}}}
	}
	return out
}

// checkBulkCodec is checkCodec for the compressibleRecords among recs.
func checkBulkCodec(t *testing.T, codec string, recs []record) {
	t.Helper()
	var bulk []record
	for _, r := range recs {
		if strings.HasPrefix(string(r.Key), "bulk-") {
			bulk = append(bulk, r)
		}
	}
	if len(bulk) == 0 {
		t.Fatal("no compressible records read back")
	}
	checkCodec(t, codec, bulk)
}

func (r record) String() string {
	return fmt.Sprintf("p%d@%d key=%s value=%s headers=%s", r.Partition, r.Offset, show(r.Key), show(r.Value), showHeaders(r.Headers))
}

func show(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 48 {
		return fmt.Sprintf("%q...(%d bytes)", b[:48], len(b))
	}
	return fmt.Sprintf("%q", b)
}

func showHeaders(hs []header) string {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, h := range hs {
		if i > 0 {
			buf.WriteByte(' ')
		}
		fmt.Fprintf(&buf, "%q=%s", h.Key, show(h.Value))
	}
	buf.WriteByte(']')
	return buf.String()
}

// sameBytes compares two nullable byte strings: null only equals null.
func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

// diffRecords reports how got differs from want, partition by partition: the
// same records in the same order, with keys, values and headers equal byte
// for byte. Offsets read back must increase within a partition.
func diffRecords(t *testing.T, reader string, want, got []record) {
	t.Helper()
	byPart := func(rs []record) map[int32][]record {
		m := map[int32][]record{}
		for _, r := range rs {
			m[r.Partition] = append(m[r.Partition], r)
		}
		return m
	}
	w, g := byPart(want), byPart(got)
	for p := range g {
		if _, ok := w[p]; !ok {
			t.Errorf("%s: read %d records from partition %d, where none were written (first: %v)", reader, len(g[p]), p, g[p][0])
		}
	}
	for p, ws := range w {
		gs := g[p]
		if len(gs) != len(ws) {
			t.Errorf("%s: partition %d: read %d records, want %d", reader, p, len(gs), len(ws))
		}
		for i := 0; i < len(ws) && i < len(gs); i++ {
			if i > 0 && gs[i].Offset <= gs[i-1].Offset {
				t.Errorf("%s: partition %d: offset %d follows %d", reader, p, gs[i].Offset, gs[i-1].Offset)
			}
			if msg := diffRecord(ws[i], gs[i]); msg != "" {
				t.Errorf("%s: partition %d, record %d: %s\n got: %v\nwant: %v", reader, p, i, msg, gs[i], ws[i])
			}
		}
	}
}

func diffRecord(want, got record) string {
	if !sameBytes(want.Key, got.Key) {
		return "key differs"
	}
	if !sameBytes(want.Value, got.Value) {
		if want.Value != nil && got.Value != nil && len(want.Value) == len(got.Value) {
			for i := range want.Value {
				if want.Value[i] != got.Value[i] {
					return fmt.Sprintf("value differs at byte %d", i)
				}
			}
		}
		return "value differs"
	}
	if len(want.Headers) != len(got.Headers) {
		return fmt.Sprintf("%d headers, want %d", len(got.Headers), len(want.Headers))
	}
	for i := range want.Headers {
		if want.Headers[i].Key != got.Headers[i].Key || !sameBytes(want.Headers[i].Value, got.Headers[i].Value) {
			return fmt.Sprintf("header %d differs", i)
		}
	}
	return ""
}

// lineSafeRecords makes n records spread over partitions that every client
// here can write, kcat's line-oriented input included: keyed, keyless and
// empty keys, empty values, no headers, one header, and repeated names with
// an empty header value. Keys have no ':' and nothing has a newline; header
// values have no ','. prefix keeps records of different runs apart.
func lineSafeRecords(prefix string, partitions []int32, n int) []record {
	rng := rand.New(rand.NewPCG(uint64(n), uint64(len(prefix))))
	out := make([]record, 0, n)
	for i := 0; i < n; i++ {
		r := record{Partition: partitions[i%len(partitions)]}
		switch i % 4 {
		case 0, 3:
			r.Key = []byte(prefix + "-key-" + strconv.Itoa(i))
		case 1:
			r.Key = nil
		case 2:
			r.Key = []byte{}
		}
		if i%5 == 3 {
			r.Value = []byte{}
			if r.Key == nil {
				r.Key = []byte{} // kcat skips an empty input line
			}
		} else {
			r.Value = []byte(fmt.Sprintf("%s value %d\ttab=eq, comma é ☃ %s", prefix, i, printable(rng, 20+i*7)))
		}
		switch i % 3 {
		case 1:
			r.Headers = []header{{"trace", []byte(prefix + "-" + strconv.Itoa(i))}}
		case 2:
			r.Headers = []header{{"h", []byte("first")}, {"h", []byte("second=2")}, {"empty", []byte{}}}
		}
		out = append(out, r)
	}
	return out
}

// printable returns n random letters and digits.
func printable(rng *rand.Rand, n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return b
}

// largeRecord is one keyed record with a printable value of largeSize bytes
// and a header. The value repeats words between random ones, so every codec
// makes it smaller (a client may send an incompressible batch uncompressed).
func largeRecord(prefix string, partition int32) record {
	rng := rand.New(rand.NewPCG(7, uint64(len(prefix))))
	v := make([]byte, 0, largeSize+64)
	for i := 0; len(v) < largeSize; i++ {
		v = fmt.Appendf(v, "%s chunk %d of a large value ", prefix, i)
		v = append(v, printable(rng, 16)...)
		v = append(v, ' ')
	}
	return record{
		Partition: partition,
		Key:       []byte(prefix + "-large"),
		Value:     v[:largeSize],
		Headers:   []header{{"size", []byte(strconv.Itoa(largeSize))}},
	}
}

// missingClient reports an external client that is not installed, by the
// project's one policy (testenv.MissingTool): a failure, or a skip that
// says so under -short.
func missingClient(t *testing.T, what, why string) {
	t.Helper()
	testenv.MissingTool(t, fmt.Sprintf("%s is not available (%s)", what, why), "apt-get install "+aptPackages)
}

// aptPackages is what ./test.sh installs for these tests.
const aptPackages = "kcat python3-kafka python3-snappy python3-lz4 python3-zstandard"
