package compat

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
)

const kcatPath = "/usr/bin/kcat"

// requireKcat fails a test when kcat is missing (testenv's policy); with
// -short the kcat suite skips.
func requireKcat(t *testing.T) {
	t.Helper()
	testenv.SkipShort(t, "kcat (librdkafka) suite")
	if _, err := exec.LookPath(kcatPath); err != nil {
		missingClient(t, "kcat", err.Error())
	}
}

// runKcat runs kcat with stdin and returns its standard output.
func runKcat(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcatPath, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v\nstderr: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// kcatProduce writes recs with kcat -P, one run per run of consecutive
// records with the same partition and headers (kcat's -H applies to every
// record of a run). Keys go through -K: ("key:value" lines; a line without
// the delimiter has a null key). args are added to every run.
func kcatProduce(t *testing.T, addr, topic string, recs []record, args ...string) {
	t.Helper()
	for i := 0; i < len(recs); {
		j := i + 1
		for j < len(recs) && recs[j].Partition == recs[i].Partition && sameHeaders(recs[j].Headers, recs[i].Headers) {
			j++
		}
		var in bytes.Buffer
		for _, r := range recs[i:j] {
			switch {
			case r.Value == nil:
				t.Fatalf("kcat cannot write a null value alongside others: %v", r)
			case bytes.ContainsAny(r.Key, ":\n"), bytes.ContainsRune(r.Value, '\n'):
				t.Fatalf("record not writable as a kcat line: %v", r)
			case r.Key == nil && (len(r.Value) == 0 || bytes.ContainsRune(r.Value, ':')):
				t.Fatalf("keyless record not writable as a kcat line: %v", r)
			}
			if r.Key != nil {
				in.Write(r.Key)
				in.WriteByte(':')
			}
			in.Write(r.Value)
			in.WriteByte('\n')
		}
		all := []string{"-b", addr, "-P", "-t", topic, "-p", strconv.Itoa(int(recs[i].Partition)), "-K:"}
		for _, h := range recs[i].Headers {
			all = append(all, "-H", h.Key+"="+string(h.Value))
		}
		runKcat(t, in.Bytes(), append(all, args...)...)
		i = j
	}
}

func sameHeaders(a, b []header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key != b[i].Key || !sameBytes(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

// kcatFormat prints each record as a line of partition, offset, key length,
// value length (-1 for null) and headers, then the key and value bytes and a
// newline, so any bytes can be read back exactly.
const kcatFormat = "%p %o %K %S %h\n%k%s\n"

// kcatConsume reads every record of topic from the beginning with kcat -C -e.
// Header values must not contain ',' (kcat's %h separator).
func kcatConsume(t *testing.T, addr, topic string, args ...string) []record {
	t.Helper()
	out := runKcat(t, nil, append([]string{"-b", addr, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", kcatFormat}, args...)...)
	recs, err := parseKcat(out)
	if err != nil {
		t.Fatalf("kcat output: %v", err)
	}
	return recs
}

func parseKcat(out []byte) ([]record, error) {
	var recs []record
	rd := bufio.NewReader(bytes.NewReader(out))
	for {
		line, err := rd.ReadString('\n')
		if err == io.EOF && line == "" {
			return recs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("truncated record line %q", line)
		}
		f := strings.SplitN(strings.TrimSuffix(line, "\n"), " ", 5)
		if len(f) != 5 {
			return nil, fmt.Errorf("bad record line %q", line)
		}
		var nums [4]int64
		for i := range nums {
			if nums[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
				return nil, fmt.Errorf("bad record line %q", line)
			}
		}
		r := record{Partition: int32(nums[0]), Offset: nums[1]}
		read := func(n int64) ([]byte, error) {
			if n < 0 {
				return nil, nil
			}
			b := make([]byte, n)
			_, err := io.ReadFull(rd, b)
			return b, err
		}
		if r.Key, err = read(nums[2]); err != nil {
			return nil, fmt.Errorf("record %q: key: %v", line, err)
		}
		if r.Value, err = read(nums[3]); err != nil {
			return nil, fmt.Errorf("record %q: value: %v", line, err)
		}
		if c, err := rd.ReadByte(); err != nil || c != '\n' {
			return nil, fmt.Errorf("record %q: no newline after the value", line)
		}
		if f[4] != "" {
			for _, kv := range strings.Split(f[4], ",") {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return nil, fmt.Errorf("record %q: bad header %q", line, kv)
				}
				r.Headers = append(r.Headers, header{k, []byte(v)})
			}
		}
		recs = append(recs, r)
	}
}

var kcatCodecs = []struct{ codec, acks string }{
	{"none", "1"},
	{"gzip", "all"},
	{"snappy", "0"},
	{"lz4", "all"},
	{"zstd", "1"},
}

// TestKcatRoundTrip writes keyed, keyless and empty-keyed records with
// headers through kcat (librdkafka) with every codec, and reads them back
// with kcat.
func TestKcatRoundTrip(t *testing.T) {
	requireKcat(t)
	addr := startBroker(t)
	for _, c := range kcatCodecs {
		t.Run(c.codec+"/acks="+c.acks, func(t *testing.T) {
			topic := "kcat-" + c.codec
			createTopic(t, addr, topic, 3, nil)
			want := lineSafeRecords(topic, []int32{0, 2}, 12)
			want = append(want, compressibleRecords(2, 20)...)
			kcatProduce(t, addr, topic, want, "-z", c.codec, "-X", "acks="+c.acks)
			diffRecords(t, "kcat", want, kcatConsume(t, addr, topic))

			// kgo sees each batch's codec: kcat must really have
			// compressed, and the broker kept the batches as they came.
			got := kgoConsume(t, addr, topic, len(want))
			diffRecords(t, "kgo", want, got)
			checkBulkCodec(t, c.codec, got)
		})
	}
}

// TestKcatLargeMessage writes a 1 MB message with kcat, raising librdkafka's
// message.max.bytes and the topic's max.message.bytes, and reads it back with
// kcat's default fetch sizes: the broker must return a batch larger than the
// fetch limits when it is the first one (KIP-74).
func TestKcatLargeMessage(t *testing.T) {
	requireKcat(t)
	addr := startBroker(t)
	for _, codec := range []string{"none", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			topic := "kcat-large-" + codec
			createTopic(t, addr, topic, 1, largeTopicConfig)
			want := []record{
				{Key: []byte("before"), Value: []byte("small")},
				largeRecord(topic, 0),
				{Key: []byte("after"), Value: []byte("small")},
			}
			for _, r := range want {
				kcatProduce(t, addr, topic, []record{r}, "-z", codec, "-X", "message.max.bytes=2097152")
			}
			diffRecords(t, "kcat", want, kcatConsume(t, addr, topic))
		})
	}
}

// TestKcatMetadata lists metadata with kcat -L: the topics, their partition
// counts, and this broker as leader, replica and ISR of each partition.
func TestKcatMetadata(t *testing.T) {
	requireKcat(t)
	addr := startBroker(t)
	createTopic(t, addr, "listed", 3, nil)
	createTopic(t, addr, "other", 1, nil)

	out := string(runKcat(t, nil, "-b", addr, "-L"))
	for _, want := range []string{
		"1 brokers:\n",
		"broker 0 at " + addr,
		"topic \"listed\" with 3 partitions:\n",
		"topic \"other\" with 1 partitions:\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kcat -L lacks %q:\n%s", want, out)
		}
	}
	// Besides ours, only the broker's internal topics are listed, as on Kafka.
	var names []string
	for _, m := range regexp.MustCompile(`topic "([^"]+)" with`).FindAllStringSubmatch(out, -1) {
		if !strings.HasPrefix(m[1], "__") {
			names = append(names, m[1])
		}
	}
	if strings.Join(names, ",") != "listed,other" && strings.Join(names, ",") != "other,listed" {
		t.Errorf("kcat -L lists topics %v, want listed and other (plus internal ones)", names)
	}
	out = string(runKcat(t, nil, "-b", addr, "-L", "-t", "listed"))
	parts := regexp.MustCompile(`partition (\d+), leader (-?\d+), replicas: ([0-9,]*), isrs: ([0-9,]*)`).FindAllStringSubmatch(out, -1)
	if len(parts) != 3 {
		t.Fatalf("kcat -L -t listed shows %d partitions, want 3:\n%s", len(parts), out)
	}
	for i, m := range parts {
		if m[1] != strconv.Itoa(i) || m[2] != "0" || m[3] != "0" || m[4] != "0" {
			t.Errorf("partition line %q, want partition %d led by broker 0 with replicas and ISR 0", m[0], i)
		}
	}
	if strings.Contains(out, "\"other\"") || strings.Contains(out, "err") {
		t.Errorf("kcat -L -t listed:\n%s", out)
	}
}
