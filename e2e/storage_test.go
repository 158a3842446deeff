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
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
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
	got := values(readAll(t, addr, "t", 1)[0])
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
	if got := values(readAll(t, addr, "t", 1)[0]); len(got) != 10 {
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
