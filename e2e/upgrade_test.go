package e2e

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// copyDir copies the tree at src into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeFromDataDirOfMain: a data directory written by the binary as
// of commit 5065c80 (testdata/datadir-5065c80.md) opens with this one:
// adopted (meta.properties written with its cluster id), every record,
// transaction outcome and committed group offset as it was, and it keeps
// working across a restart. The same directory marked with a newer format
// is refused by `exactly serve`, naming the file and the versions.
func TestUpgradeFromDataDirOfMain(t *testing.T) {
	data := t.TempDir()
	copyDir(t, filepath.Join("testdata", "datadir-5065c80"), data)
	var cat struct {
		ClusterID string `json:"cluster_id"`
	}
	b, err := os.ReadFile(filepath.Join(data, "cluster.json"))
	if err != nil || json.Unmarshal(b, &cat) != nil || cat.ClusterID == "" {
		t.Fatal("golden catalog unreadable", err)
	}

	for round := 0; round < 2; round++ {
		br, err := exactly.Start(exactly.Options{DataDir: data})
		if err != nil {
			t.Fatalf("round %d: opening the old data directory: %v", round, err)
		}
		if br.ClusterID() != cat.ClusterID {
			t.Fatalf("cluster id %s, the directory says %s", br.ClusterID(), cat.ClusterID)
		}
		got := readCommitted(t, br.Addr(), "orders", map[int32]int{0: 105 + round, 1: 100})
		p0, p1 := values(got[0]), values(got[1])
		if len(p0) != 105+round || len(p1) != 100 || p0[0] != "order-000" || p1[99] != "order-199" ||
			p0[100] != "txn-true-0" || p0[104] != "txn-true-4" {
			t.Fatalf("round %d: partition 0 %d records %v, partition 1 %d records", round, len(p0), p0[len(p0)-6:], len(p1))
		}
		for _, v := range p0 {
			if strings.HasPrefix(v, "txn-false") {
				t.Fatalf("aborted record %q read committed", v)
			}
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(br.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		offs, err := kadm.NewClient(cl).FetchOffsets(ctx, "golden-group")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if o0, _ := offs.Lookup("orders", 0); o0.At != 42 {
			t.Fatalf("committed offset of partition 0: %+v, want 42", o0)
		}
		if o1, _ := offs.Lookup("orders", 1); o1.At != 17 {
			t.Fatalf("committed offset of partition 1: %+v, want 17", o1)
		}
		cl.Close()
		if round == 0 {
			acksAll(t, br.Addr(), "orders", 0, "new-", 1)
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
	}
	meta, err := os.ReadFile(filepath.Join(data, "meta.properties"))
	if err != nil || !strings.Contains(string(meta), "cluster.id="+cat.ClusterID+"\n") {
		t.Fatalf("meta.properties after adoption: %q, %v", meta, err)
	}
	if _, err := os.Stat(filepath.Join(data, "orders-0", "partition.metadata")); err != nil {
		t.Fatalf("partition marker not written: %v", err)
	}

	newer := strings.Replace(string(meta), "exactly.format.version=1", "exactly.format.version=2", 1)
	if err := os.WriteFile(filepath.Join(data, "meta.properties"), []byte(newer), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runExactly(t, "serve", "--data-dir", data, "--listen", freePort(t))
	if code == 0 || !strings.Contains(out, filepath.Join(data, "meta.properties")) || !strings.Contains(out, "exactly.format.version=2") || !strings.Contains(out, "up to 1") {
		t.Fatalf("serve on a newer format exited %d:\n%s", code, out)
	}
}

// readCommitted consumes topic read_committed from the start until each
// partition delivered want records (20s at most).
func readCommitted(t *testing.T, addr, topic string, want map[int32]int) map[int32][]*kgo.Record {
	t.Helper()
	offsets := map[string]map[int32]kgo.Offset{topic: {}}
	for p := range want {
		offsets[topic][p] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(offsets), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := map[int32][]*kgo.Record{}
	done := func() bool {
		for p, n := range want {
			if len(out[p]) < n {
				return false
			}
		}
		return true
	}
	for !done() && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachError(func(tp string, p int32, err error) {
			if ctx.Err() == nil {
				t.Fatalf("fetch %s/%d: %v", tp, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { out[r.Partition] = append(out[r.Partition], r) })
	}
	return out
}
