package compat

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
)

// pythonPath is the system interpreter, where Debian's python3-kafka is
// installed; a python3 earlier on PATH may be another installation.
const pythonPath = "/usr/bin/python3"

// pythonScript drives kafka-python; see its docstring for the protocol.
const pythonScript = "testdata/kafka_client.py"

var pythonProbe struct {
	once   sync.Once
	err    string
	codecs map[string]bool
}

// requireKafkaPython skips (locally) or fails (in CI) a test when
// /usr/bin/python3 cannot import kafka, and returns which codecs
// kafka-python can use.
func requireKafkaPython(t *testing.T) map[string]bool {
	t.Helper()
	testenv.SkipShort(t, "kafka-python suite")
	pythonProbe.once.Do(func() {
		var resp struct {
			Kafka  string          `json:"kafka"`
			Codecs map[string]bool `json:"codecs"`
		}
		if err := python(map[string]any{"op": "codecs"}, &resp); err != nil {
			pythonProbe.err = err.Error()
			return
		}
		pythonProbe.codecs = resp.Codecs
	})
	if pythonProbe.err != "" {
		missingClient(t, "kafka-python under "+pythonPath, pythonProbe.err)
	}
	return pythonProbe.codecs
}

// requirePythonCodec skips a subtest whose codec kafka-python cannot use
// here (its compression module is not installed); in CI it fails instead.
func requirePythonCodec(t *testing.T, codecs map[string]bool, codec string) {
	t.Helper()
	if codec == "none" || codecs[codec] {
		return
	}
	module := map[string]string{"snappy": "python3-snappy", "lz4": "python3-lz4", "zstd": "python3-zstandard"}[codec]
	missingClient(t, "kafka-python's "+codec+" codec", "the Python module from "+module+" cannot be imported")
}

// python runs one request through the script and decodes its answer.
func python(req any, resp any) error {
	in, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// -I: ignore PYTHON* variables and the user's site-packages, so only
	// the system's packages are used.
	cmd := exec.CommandContext(ctx, pythonPath, "-I", pythonScript)
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return &pythonError{err: err, stderr: stderr.String()}
	}
	if err := json.Unmarshal(stdout.Bytes(), resp); err != nil {
		return &pythonError{err: err, stderr: stdout.String() + stderr.String()}
	}
	return nil
}

type pythonError struct {
	err    error
	stderr string
}

func (e *pythonError) Error() string {
	s := strings.TrimSpace(e.stderr)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 && len(s) > 2000 {
		s = "..." + s[i:] // the exception line of a long traceback
	}
	return e.err.Error() + ": " + s
}

// pyRecord is a record as the script reads and writes it.
type pyRecord struct {
	Partition int32      `json:"partition"`
	Offset    int64      `json:"offset"`
	Key       *string    `json:"key"`
	Value     *string    `json:"value"`
	Headers   [][]string `json:"headers"`
}

func b64(b []byte) *string {
	if b == nil {
		return nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return &s
}

func unb64(t *testing.T, s *string) []byte {
	t.Helper()
	if s == nil {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(*s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pySecurity is the script's "security" request field: how kafka-python
// connects to a SASL_SSL or SSL listener. Mechanism empty means no SASL;
// CertFile and KeyFile set mean a client certificate (mutual TLS).
type pySecurity struct {
	Protocol  string `json:"protocol"`
	Mechanism string `json:"mechanism,omitempty"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
	CAFile    string `json:"cafile"`
	CertFile  string `json:"certfile,omitempty"`
	KeyFile   string `json:"keyfile,omitempty"`
}

// pythonProduce writes recs in order with one KafkaProducer.
// acks is 0, 1 or "all"; compression "none" or a codec name.
func pythonProduce(t *testing.T, addr, topic string, recs []record, acks any, compression string, maxRequestSize int) {
	t.Helper()
	if err := pythonProduceSecured(addr, topic, recs, acks, compression, maxRequestSize, nil); err != nil {
		t.Fatal(err)
	}
}

// pythonProduceSecured is pythonProduce connecting with sec (nil:
// PLAINTEXT); it returns the failure instead of ending the test.
func pythonProduceSecured(addr, topic string, recs []record, acks any, compression string, maxRequestSize int, sec *pySecurity) error {
	prs := make([]pyRecord, len(recs))
	for i, r := range recs {
		prs[i] = pyRecord{Partition: r.Partition, Key: b64(r.Key), Value: b64(r.Value), Headers: [][]string{}}
		for _, h := range r.Headers {
			v := b64(h.Value)
			if v == nil {
				return fmt.Errorf("kafka-python cannot write a null header value: %v", r)
			}
			prs[i].Headers = append(prs[i].Headers, []string{h.Key, *v})
		}
	}
	var codec any
	if compression != "none" {
		codec = compression
	}
	var resp struct {
		Offsets [][2]int64 `json:"offsets"`
	}
	req := map[string]any{
		"op": "produce", "bootstrap": addr, "topic": topic, "acks": acks,
		"compression": codec, "max_request_size": maxRequestSize, "records": prs,
	}
	if sec != nil {
		req["security"] = sec
		// A denied topic shows as metadata that never arrives.
		req["max_block_ms"] = 20000
	}
	if err := python(req, &resp); err != nil {
		return fmt.Errorf("kafka-python produce to %s: %w", topic, err)
	}
	if len(resp.Offsets) != len(recs) {
		return fmt.Errorf("kafka-python produce to %s: %d acknowledgements for %d records", topic, len(resp.Offsets), len(recs))
	}
	return nil
}

// pythonConsume reads n records from the earliest offsets of topic with a
// KafkaConsumer without a group.
func pythonConsume(t *testing.T, addr, topic string, n int) []record {
	t.Helper()
	return pythonConsumeSecured(t, addr, topic, n, nil)
}

// pythonConsumeSecured is pythonConsume connecting with sec (nil:
// PLAINTEXT).
func pythonConsumeSecured(t *testing.T, addr, topic string, n int, sec *pySecurity) []record {
	t.Helper()
	var resp struct {
		Records []pyRecord `json:"records"`
	}
	req := map[string]any{"op": "consume", "bootstrap": addr, "topic": topic, "count": n, "timeout_ms": 10000}
	if sec != nil {
		req["security"] = sec
	}
	if err := python(req, &resp); err != nil {
		t.Fatalf("kafka-python consume of %s: %v", topic, err)
	}
	out := make([]record, len(resp.Records))
	for i, pr := range resp.Records {
		r := record{Partition: pr.Partition, Offset: pr.Offset, Key: unb64(t, pr.Key), Value: unb64(t, pr.Value)}
		for _, h := range pr.Headers {
			r.Headers = append(r.Headers, header{h[0], unb64(t, &h[1])})
		}
		out[i] = r
	}
	return out
}

// pythonRecords has what lineSafeRecords has plus a null value and binary
// bytes. (kafka-python requires header values to be bytes: no null ones.)
func pythonRecords(prefix string, partitions []int32) []record {
	recs := lineSafeRecords(prefix, partitions, 12)
	return append(recs,
		record{Partition: partitions[0], Key: []byte(prefix + "-tombstone"), Value: nil},
		record{Partition: partitions[len(partitions)-1], Key: []byte{0, 1, 2, '\n', 0xff},
			Value: []byte("line one\nline two\x00\xfe"), Headers: []header{{"bin", []byte{0, '\n', 0xff}}}},
	)
}

// TestKafkaPythonRoundTrip writes keyed, keyless and null-valued records with
// headers through kafka-python with each codec and acks setting, and reads
// them back with kafka-python.
func TestKafkaPythonRoundTrip(t *testing.T) {
	codecs := requireKafkaPython(t)
	addr := startBroker(t)
	for _, c := range []struct {
		codec string
		acks  any
	}{
		{"none", 0},
		{"gzip", 1},
		{"snappy", "all"},
		{"lz4", 1},
		{"zstd", "all"},
	} {
		t.Run(c.codec, func(t *testing.T) {
			requirePythonCodec(t, codecs, c.codec)
			topic := "python-" + c.codec
			createTopic(t, addr, topic, 3, nil)
			want := append(pythonRecords(topic, []int32{0, 2}), compressibleRecords(2, 20)...)
			pythonProduce(t, addr, topic, want, c.acks, c.codec, 1<<20)
			diffRecords(t, "kafka-python", want, pythonConsume(t, addr, topic, len(want)))

			// kgo sees each batch's codec: kafka-python compressed, and
			// the broker kept the batches as they came.
			got := kgoConsume(t, addr, topic, len(want))
			diffRecords(t, "kgo", want, got)
			checkBulkCodec(t, c.codec, got)
		})
	}
}

// TestKafkaPythonLargeRecord writes a 1 MB record with kafka-python and reads
// it back with the consumer's default max_partition_fetch_bytes (1 MiB),
// which the batch exceeds: the broker must still return it (KIP-74).
func TestKafkaPythonLargeRecord(t *testing.T) {
	requireKafkaPython(t)
	addr := startBroker(t)
	topic := "python-large"
	createTopic(t, addr, topic, 1, largeTopicConfig)
	want := []record{
		{Key: []byte("before"), Value: []byte("small")},
		largeRecord(topic, 0),
		{Key: []byte("after"), Value: []byte("small")},
	}
	pythonProduce(t, addr, topic, want, "all", "none", 2<<20)
	diffRecords(t, "kafka-python", want, pythonConsume(t, addr, topic, len(want)))
}
