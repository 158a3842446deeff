package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func produceN(t *testing.T, addr, topic string, n, size int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var rs []*kgo.Record
	for i := 0; i < n; i++ {
		v := fmt.Sprintf("%08d", i)
		v += strings.Repeat("x", size-len(v))
		rs = append(rs, &kgo.Record{Key: []byte(strconv.Itoa(i % 7)), Value: []byte(v)})
	}
	if err := cl.ProduceSync(context.Background(), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestRestartKeepsTopicsConfigsAndData: a clean restart on the same data
// directory keeps topic IDs, partition counts, topic and dynamic broker
// configs, and every record at its offset.
func TestRestartKeepsTopicsConfigsAndData(t *testing.T) {
	dir := t.TempDir()
	b1, err := exactly.Start(exactly.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	cl, _ := kgo.NewClient(kgo.SeedBrokers(b1.Addr()))
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	created, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"retention.ms": kadm.StringPtr("123456789")}, "keep")
	if err != nil || created.Err != nil {
		t.Fatal(err, created.Err)
	}
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: kadm.StringPtr("2000000")}}, "keep"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.AlterBrokerConfigs(ctx, []kadm.AlterConfig{{Name: "log.roll.ms", Value: kadm.StringPtr("86400005")}}); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	produceN(t, b1.Addr(), "keep", 500, 100)
	before := testenv.ReadToEnd(t, b1.Addr(), "keep", false)
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}

	b2, err := exactly.Start(exactly.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	cl2, _ := kgo.NewClient(kgo.SeedBrokers(b2.Addr()))
	defer cl2.Close()
	adm2 := kadm.NewClient(cl2)
	md, err := adm2.ListTopics(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	if md["keep"].ID != created.ID || len(md["keep"].Partitions) != 3 {
		t.Fatalf("after restart: id %v partitions %d; before: id %v partitions 3", md["keep"].ID, len(md["keep"].Partitions), created.ID)
	}
	rcs, err := adm2.DescribeTopicConfigs(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"retention.ms": "123456789", "max.message.bytes": "2000000"}
	for _, c := range rcs[0].Configs {
		if w, ok := want[c.Key]; ok {
			if c.MaybeValue() != w || c.Source != 1 {
				t.Errorf("%s = %q (source %v), want %q from the topic", c.Key, c.MaybeValue(), c.Source, w)
			}
			delete(want, c.Key)
		}
	}
	if len(want) > 0 {
		t.Errorf("configs missing after restart: %v", want)
	}
	bcs, err := adm2.DescribeBrokerConfigs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range bcs[0].Configs {
		if c.Key == "log.roll.ms" {
			found = c.MaybeValue() == "86400005"
		}
	}
	if !found {
		t.Error("dynamic broker config log.roll.ms=86400005 lost across restart")
	}
	after := testenv.ReadToEnd(t, b2.Addr(), "keep", false)
	for p := int32(0); p < 3; p++ {
		if len(after[p]) != len(before[p]) {
			t.Fatalf("partition %d: %d records before restart, %d after", p, len(before[p]), len(after[p]))
		}
		for i := range before[p] {
			x, y := before[p][i], after[p][i]
			if x.Offset != y.Offset || string(x.Value) != string(y.Value) || string(x.Key) != string(y.Key) || !x.Timestamp.Equal(y.Timestamp) {
				t.Fatalf("partition %d record %d changed across restart", p, i)
			}
		}
	}
}

// TestRetentionDeletesWholeSegments: size-based retention removes only
// whole old segments, the log start offset lands on a segment boundary, and
// everything after it stays readable.
func TestRetentionDeletesWholeSegments(t *testing.T) {
	dir := t.TempDir()
	b := exactly.NewTestBroker(t, exactly.Options{DataDir: dir, Config: map[string]string{"log.retention.check.interval.ms": "100"}})
	cl, _ := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	const segBytes, retBytes = 16384, 65536
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{
		"segment.bytes":   kadm.StringPtr(strconv.Itoa(segBytes)),
		"retention.bytes": kadm.StringPtr(strconv.Itoa(retBytes)),
	}, "ret"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		produceN(t, b.Addr(), "ret", 20, 1000) // many small batches → many segments
	}
	var start int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		so, err := adm.ListStartOffsets(ctx, "ret")
		if err != nil {
			t.Fatal(err)
		}
		start = so["ret"][0].Offset
		if start > 0 {
			break
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(filepath.Join(dir, "ret-0"))
			var names []string
			for _, e := range entries {
				info, _ := e.Info()
				names = append(names, fmt.Sprintf("%s:%d", e.Name(), info.Size()))
			}
			t.Fatalf("retention never advanced the log start offset; files: %v", names)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let the loop settle
	so, _ := adm.ListStartOffsets(ctx, "ret")
	start = so["ret"][0].Offset

	entries, err := os.ReadDir(filepath.Join(dir, "ret-0"))
	if err != nil {
		t.Fatal(err)
	}
	var bases []int64
	var total int64
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".log") {
			n, _ := strconv.ParseInt(strings.TrimSuffix(e.Name(), ".log"), 10, 64)
			bases = append(bases, n)
			info, _ := e.Info()
			total += info.Size()
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	if len(bases) == 0 || bases[0] != start {
		t.Fatalf("log start offset %d is not the base of the oldest remaining segment (segments %v)", start, bases)
	}
	if total > retBytes+segBytes {
		t.Fatalf("retained %d bytes, more than retention.bytes=%d plus one segment", total, retBytes)
	}
	if total < retBytes-2*segBytes {
		t.Fatalf("retained only %d bytes: retention deleted more than whole segments beyond retention.bytes=%d", total, retBytes)
	}
	got := testenv.ReadToEnd(t, b.Addr(), "ret", false)
	rs := got[0]
	if len(rs) == 0 || rs[0].Offset != start {
		t.Fatalf("first readable offset %v, want log start %d", rs[0].Offset, start)
	}
	for i, r := range rs {
		if r.Offset != start+int64(i) || !strings.HasPrefix(string(r.Value), fmt.Sprintf("%08d", int(r.Offset)%20)) {
			t.Fatalf("record at %d: offset %d value %.8s", i, r.Offset, r.Value)
		}
	}
}
