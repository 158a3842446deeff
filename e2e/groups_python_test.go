package e2e

// kafka-python 2.0.2 (Debian's python3-kafka, a client unrelated to the
// broker's own code) reproduces the consumer commit patterns of
// docs/GUARANTEES.md against the broker:
//
//   - auto commit: offsets are committed in the background and on close,
//     independently of processing;
//   - commit after processing (at-least-once): a crash between processing
//     and commit redelivers the processed records;
//   - commit before processing (at-most-once): a crash between commit and
//     processing loses those records for processing — they are never
//     redelivered.
//
// The consumer process "crashes" with os._exit (no close, no final commit,
// no LeaveGroup), so the broker also has to evict it by session timeout
// before the next consumer can take its partitions.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const systemPython = "/usr/bin/python3"

type pyRecord struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Value     string `json:"value"`
}

func requirePython(t *testing.T) {
	t.Helper()
	testenv.SkipShort(t, "kafka-python group suite")
	if err := exec.Command(systemPython, "-I", "-c", "import kafka").Run(); err != nil {
		testenv.MissingTool(t, fmt.Sprintf("kafka-python is not importable by %s (%v)", systemPython, err), "apt-get install python3-kafka")
	}
}

// runPython runs one consumer process and returns the records it processed
// and whether it crashed.
func runPython(t *testing.T, req map[string]any) ([]pyRecord, bool) {
	t.Helper()
	in, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, systemPython, "-I", "testdata/groups_client.py")
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	crashed := false
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		crashed = true
	case err != nil:
		t.Fatalf("kafka-python consumer: %v\n%s", err, stderr.String())
	}
	var out []pyRecord
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var r pyRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("bad output line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out, crashed
}

func pythonSetup(t *testing.T, topic string, n int) string {
	t.Helper()
	requirePython(t)
	b := groupBroker(t, nil)
	createTopic(t, b.Addr(), topic, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < n; i++ {
		if err := cl.ProduceSync(context.Background(), kgo.StringRecord(fmt.Sprintf("r%02d", i))).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	return b.Addr()
}

func committedOffset(t *testing.T, addr, group, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fetched, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := fetched.Lookup(topic, 0)
	if !ok {
		return -1
	}
	return o.At
}

func offsets(rs []pyRecord) []int64 {
	out := make([]int64, len(rs))
	for i, r := range rs {
		out[i] = r.Offset
	}
	return out
}

func span(from, to int64) []int64 {
	var out []int64
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestKafkaPythonAutoCommit(t *testing.T) {
	addr := pythonSetup(t, "py-auto", 20)
	base := map[string]any{"bootstrap": addr, "topic": "py-auto", "group": "auto", "mode": "auto", "idle_ms": 2000}

	// Closing commits what was consumed.
	req := map[string]any{"limit": 8, "batch": 8, "auto_commit_interval_ms": 60000}
	for k, v := range base {
		req[k] = v
	}
	got, _ := runPython(t, req)
	if fmt.Sprint(offsets(got)) != fmt.Sprint(span(0, 8)) {
		t.Fatalf("first consumer processed %v", offsets(got))
	}
	if c := committedOffset(t, addr, "auto", "py-auto"); c != 8 {
		t.Fatalf("committed %d after close, want 8", c)
	}

	// The background commit runs while polling, processing or not: a
	// consumer that dies after it loses nothing and redelivers nothing.
	req = map[string]any{"auto_commit_interval_ms": 200, "crash": "after_processing"}
	for k, v := range base {
		req[k] = v
	}
	got, crashed := runPython(t, req)
	if !crashed || fmt.Sprint(offsets(got)) != fmt.Sprint(span(8, 20)) {
		t.Fatalf("second consumer (crashed=%v) processed %v", crashed, offsets(got))
	}
	if c := committedOffset(t, addr, "auto", "py-auto"); c != 20 {
		t.Fatalf("committed %d after the auto commit interval, want 20", c)
	}

	// A crash before the interval elapses: processed but never committed,
	// so redelivered (the "no guarantee" default's duplicates).
	produceMore(t, addr, "py-auto", 20, 5)
	req = map[string]any{"auto_commit_interval_ms": 60000, "crash": "after_processing", "idle_ms": 1000}
	for k, v := range base {
		if k != "idle_ms" {
			req[k] = v
		}
	}
	got, _ = runPython(t, req)
	if fmt.Sprint(offsets(got)) != fmt.Sprint(span(20, 25)) {
		t.Fatalf("third consumer processed %v", offsets(got))
	}
	got, _ = runPython(t, base)
	if fmt.Sprint(offsets(got)) != fmt.Sprint(span(20, 25)) {
		t.Fatalf("after a crash before the auto commit, redelivered %v, want 20..24 again", offsets(got))
	}
}

func produceMore(t *testing.T, addr, topic string, from, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := from; i < from+n; i++ {
		if err := cl.ProduceSync(context.Background(), kgo.StringRecord(fmt.Sprintf("r%02d", i))).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// At-least-once: commit after processing; a crash in between redelivers.
func TestKafkaPythonCommitAfterProcessing(t *testing.T) {
	addr := pythonSetup(t, "py-alo", 20)
	req := map[string]any{"bootstrap": addr, "topic": "py-alo", "group": "alo", "mode": "after", "batch": 5, "idle_ms": 2000}
	crashReq := map[string]any{"crash": "before_commit"}
	for k, v := range req {
		crashReq[k] = v
	}
	first, crashed := runPython(t, crashReq)
	if !crashed || fmt.Sprint(offsets(first)) != fmt.Sprint(span(0, 5)) {
		t.Fatalf("crashing consumer (crashed=%v) processed %v", crashed, offsets(first))
	}
	if c := committedOffset(t, addr, "alo", "py-alo"); c != -1 {
		t.Fatalf("committed %d though the consumer crashed before committing", c)
	}
	second, _ := runPython(t, req)
	if fmt.Sprint(offsets(second)) != fmt.Sprint(span(0, 20)) {
		t.Fatalf("restarted consumer processed %v, want 0..19 (0..4 redelivered)", offsets(second))
	}
	if c := committedOffset(t, addr, "alo", "py-alo"); c != 20 {
		t.Fatalf("committed %d, want 20", c)
	}
	third, _ := runPython(t, req)
	if len(third) != 0 {
		t.Fatalf("everything was committed, yet redelivered %v", offsets(third))
	}
}

// At-most-once: commit before processing; a crash in between loses the
// batch for processing.
func TestKafkaPythonCommitBeforeProcessing(t *testing.T) {
	addr := pythonSetup(t, "py-amo", 20)
	req := map[string]any{"bootstrap": addr, "topic": "py-amo", "group": "amo", "mode": "before", "batch": 5, "idle_ms": 2000}
	crashReq := map[string]any{"crash": "before_processing"}
	for k, v := range req {
		crashReq[k] = v
	}
	first, crashed := runPython(t, crashReq)
	if !crashed || len(first) != 0 {
		t.Fatalf("crashing consumer (crashed=%v) processed %v", crashed, offsets(first))
	}
	if c := committedOffset(t, addr, "amo", "py-amo"); c != 5 {
		t.Fatalf("committed %d before the crash, want 5", c)
	}
	second, _ := runPython(t, req)
	if fmt.Sprint(offsets(second)) != fmt.Sprint(span(5, 20)) {
		t.Fatalf("restarted consumer processed %v, want 5..19 (0..4 never redelivered)", offsets(second))
	}
}
