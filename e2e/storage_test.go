package e2e

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// runExactly runs the binary to completion (at most 30s) and returns its
// exit code and combined output.
func runExactly(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, exactlyBinary(t), args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("exactly %v did not finish within 30s:\n%s", args, out.String())
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// acksAll produces n records with acks=all to one partition and fails the
// test unless every one is acknowledged.
func acksAll(t *testing.T, addr, topic string, partition int32, prefix string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var rs []*kgo.Record
	for i := 0; i < n; i++ {
		rs = append(rs, &kgo.Record{Topic: topic, Partition: partition, Value: []byte(prefix + strconv.Itoa(i))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce to %s/%d: %v", topic, partition, err)
	}
}

// createTopicWith creates a topic with config overrides.
func createTopicWith(t *testing.T, addr, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	res, err := kadm.NewClient(cl).CreateTopic(context.Background(), partitions, 1, configs, topic)
	if err == nil {
		err = res.Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// values returns the values of records, in order.
func values(rs []*kgo.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r.Value)
	}
	return out
}

// TestSecondServeOnSameDataDirRefused: a second `exactly serve` on a data
// directory in use exits non-zero at once, naming the directory and the
// first broker's pid; the first broker is unharmed and loses nothing.
func TestSecondServeOnSameDataDirRefused(t *testing.T) {
	data := t.TempDir()
	addr := freePort(t)
	first := startBroker(t, data, addr)
	createTopicWith(t, addr, "t", 1, nil)
	acksAll(t, addr, "t", 0, "before-", 100)

	code, out := runExactly(t, "serve", "--data-dir", data, "--listen", freePort(t))
	if code == 0 || !strings.Contains(out, data) || !strings.Contains(out, "in use") ||
		!strings.Contains(out, "process "+strconv.Itoa(first.cmd.Process.Pid)) {
		t.Fatalf("second serve exited %d:\n%s\nwant a non-zero exit naming %s and pid %d", code, out, data, first.cmd.Process.Pid)
	}

	acksAll(t, addr, "t", 0, "after-", 100)
	first.stop(t)
	startBroker(t, data, addr)
	got := values(testenv.ReadToEnd(t, addr, "t", false)[0])
	if len(got) != 200 || got[0] != "before-0" || got[99] != "before-99" || got[100] != "after-0" || got[199] != "after-99" {
		t.Fatalf("read back %d records after the refused second broker: %v", len(got), got)
	}
}

// snapshotTree maps every path below dir to its contents ("/" for
// directories).
func snapshotTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		if d.IsDir() {
			out[p] = "/"
			return nil
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func writeFiles(t *testing.T, files map[string]string) {
	t.Helper()
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServeNeverTouchesForeignFiles: `exactly serve` refuses a non-empty
// directory it did not create without changing a byte of it, and files and
// partition-shaped directories that appear in its own data directory
// survive restarts.
func TestServeNeverTouchesForeignFiles(t *testing.T) {
	home := t.TempDir()
	writeFiles(t, map[string]string{
		filepath.Join(home, "photos-2023", "img-1.jpg"): "jpeg",
		filepath.Join(home, "project-2", "main.go"):     "package main",
		filepath.Join(home, "notes.txt"):                "notes",
	})
	before := snapshotTree(t, home)
	code, out := runExactly(t, "serve", "--data-dir", home, "--listen", freePort(t))
	if code == 0 || !strings.Contains(out, home) || !strings.Contains(out, "meta.properties") {
		t.Fatalf("serve on a foreign directory exited %d:\n%s", code, out)
	}
	if after := snapshotTree(t, home); !maps.Equal(before, after) {
		t.Fatalf("refused directory changed:\nbefore %v\nafter  %v", before, after)
	}

	data := t.TempDir()
	addr := freePort(t)
	p := startBroker(t, data, addr)
	createTopicWith(t, addr, "t", 1, nil)
	acksAll(t, addr, "t", 0, "v", 10)
	p.stop(t)
	foreign := map[string]string{
		filepath.Join(data, "photos-2023", "img-1.jpg"):        "jpeg",
		filepath.Join(data, "t-7", "00000000000000000000.log"): "not ours",
		filepath.Join(data, "notes.txt"):                       "notes",
	}
	writeFiles(t, foreign)
	p = startBroker(t, data, addr)
	if got := values(testenv.ReadToEnd(t, addr, "t", false)[0]); len(got) != 10 {
		t.Fatalf("%d records after restart, want 10", len(got))
	}
	p.stop(t)
	after := snapshotTree(t, data)
	for path, want := range foreign {
		if after[path] != want {
			t.Fatalf("%s is %q after a restart, want %q", path, after[path], want)
		}
	}
}

// impatient is a client that gives up on a retriable error after one retry,
// so a partition's error reaches the test.
func impatient(t *testing.T, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordRetries(1), kgo.RequestRetries(1), kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond }),
		kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// produceErr produces one record to topic/partition and returns the error.
func produceErr(cl *kgo.Client, topic string, partition int32) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: partition, Value: []byte("x")}).FirstErr()
}

// segments lists a partition directory's segment files, oldest first.
func segments(t *testing.T, dir string) []string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no segments in %s: %v", dir, err)
	}
	return logs // Glob sorts; names are zero-padded offsets
}

func flip(t *testing.T, file string, pos int64) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[pos] ^= 0x08
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptionTakesOnePartitionOffline: one flipped byte in fsynced data
// of one partition, then a restart. In the first batch of the active
// segment it is found at start; in the middle of a closed segment, by the
// first read over it. Either way that partition answers
// KAFKA_STORAGE_ERROR to Fetch and Produce, the broker log names the file,
// check-data exits 1 naming it, its files stay untouched, and the other
// partition keeps serving. check-data --truncate-corrupt then brings it
// back with the records before the damage.
func TestCorruptionTakesOnePartitionOffline(t *testing.T) {
	for _, where := range []string{"first batch of the active segment", "middle of a closed segment"} {
		t.Run(strings.ReplaceAll(where, " ", "_"), func(t *testing.T) {
			data := t.TempDir()
			addr := freePort(t)
			p := startBroker(t, data, addr)
			seg := kadm.StringPtr("1024")
			createTopicWith(t, addr, "bad", 1, map[string]*string{"segment.bytes": seg})
			createTopicWith(t, addr, "good", 1, map[string]*string{"segment.bytes": seg})
			for i := 0; i < 3; i++ {
				acksAll(t, addr, "bad", 0, "b", 100)
				acksAll(t, addr, "good", 0, "g", 100)
			}
			p.stop(t)
			if code, out := runExactly(t, "check-data", "--data-dir", data); code != 0 || !strings.Contains(out, "no damage found") {
				t.Fatalf("check-data on a clean directory exited %d:\n%s", code, out)
			}

			logs := segments(t, filepath.Join(data, "bad-0"))
			if len(logs) < 3 {
				t.Fatalf("want at least 3 segments, have %d", len(logs))
			}
			damaged, pos := logs[len(logs)-1], int64(70)
			if where == "middle of a closed segment" {
				damaged = logs[1]
				st, _ := os.Stat(damaged)
				pos = st.Size() / 2
			}
			flip(t, damaged, pos)
			before := snapshotTree(t, filepath.Join(data, "bad-0"))

			p = startBroker(t, data, addr, "--log-level", "info")
			cl := impatient(t, addr)
			if err := kerr.ErrorForCode(testenv.FetchOnce(t, cl, "bad", 0, 0).ErrorCode); !errors.Is(err, kerr.KafkaStorageError) {
				t.Fatalf("fetch from the damaged partition: %v, want KAFKA_STORAGE_ERROR", err)
			}
			if err := produceErr(cl, "bad", 0); !errors.Is(err, kerr.KafkaStorageError) {
				t.Fatalf("produce to the damaged partition: %v, want KAFKA_STORAGE_ERROR", err)
			}
			if err := produceErr(cl, "good", 0); err != nil {
				t.Fatalf("produce to the healthy partition: %v", err)
			}
			if got := testenv.ReadToEnd(t, addr, "good", false)[0]; len(got) != 301 {
				t.Fatalf("healthy partition serves %d records, want 301", len(got))
			}
			p.stop(t)
			logText, _ := os.ReadFile(p.log.Name())
			if !strings.Contains(string(logText), "level=ERROR") || !strings.Contains(string(logText), damaged) {
				t.Fatalf("broker log has no ERROR naming %s:\n%s", damaged, logText)
			}
			if after := snapshotTree(t, filepath.Join(data, "bad-0")); !maps.Equal(before, after) {
				t.Fatal("files of the damaged partition changed")
			}
			code, out := runExactly(t, "check-data", "--data-dir", data)
			if code != 1 || !strings.Contains(out, "bad-0: DAMAGED") || !strings.Contains(out, damaged) || !strings.Contains(out, "good-0: ok") {
				t.Fatalf("check-data exited %d:\n%s", code, out)
			}

			if code, out := runExactly(t, "check-data", "--data-dir", data, "--truncate-corrupt", "bad-0"); code != 0 {
				t.Fatalf("truncate exited %d:\n%s", code, out)
			}
			if code, out := runExactly(t, "check-data", "--data-dir", data); code != 0 {
				t.Fatalf("check-data after the truncation exited %d:\n%s", code, out)
			}
			startBroker(t, data, addr)
			kept := values(testenv.ReadToEnd(t, addr, "bad", false)[0])
			if len(kept) == 0 && where != "first batch of the active segment" || len(kept) >= 300 {
				t.Fatalf("after truncation the partition holds %d records", len(kept))
			}
			for i, v := range kept {
				if v != "b"+strconv.Itoa(i%100) {
					t.Fatalf("record %d is %q after truncation", i, v)
				}
			}
			if err := produceErr(impatient(t, addr), "bad", 0); err != nil {
				t.Fatalf("produce after truncation: %v", err)
			}
		})
	}
}

// TestTornTailAfterSIGKILLIsNotCorruption: a broker killed while writing
// leaves at most a torn tail above its recovery point: check-data calls it
// a note (exit 0), and the next start cuts it and serves every
// acknowledged record.
func TestTornTailAfterSIGKILLIsNotCorruption(t *testing.T) {
	data := t.TempDir()
	addr := freePort(t)
	p := startBroker(t, data, addr, "--set", "log.flush.offset.checkpoint.interval.ms=50")
	createTopicWith(t, addr, "t", 1, nil)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RecordRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	for i := 0; i < 20000; i++ {
		cl.Produce(context.Background(), &kgo.Record{Topic: "t", Value: bytes.Repeat([]byte{'x'}, 200)}, func(_ *kgo.Record, err error) {
			if err == nil {
				acked.Add(1)
			}
		})
		if i == 10000 {
			p.kill()
		}
	}
	cl.Close()
	if code, out := runExactly(t, "check-data", "--data-dir", data); code != 0 {
		t.Fatalf("check-data after SIGKILL exited %d:\n%s", code, out)
	}
	startBroker(t, data, addr)
	if got := int64(len(testenv.ReadToEnd(t, addr, "t", false)[0])); got < acked.Load() {
		t.Fatalf("%d records after restart, %d were acknowledged", got, acked.Load())
	}
}
