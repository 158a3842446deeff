package exactly_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestEmbeddedBrokerWithMetrics: the embedding API starts a working broker
// and its metrics endpoint reports Kafka-style series.
func TestEmbeddedBrokerWithMetrics(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{MetricsListen: "127.0.0.1:0"})
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic("m"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + b.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`kafka_server_brokertopicmetrics_messages_in_total{topic="m"} 1`,
		`kafka_log_log_end_offset{partition="0",topic="m"} 1`,
		`kafka_network_requestmetrics_requests_total{request="Produce"}`,
		`kafka_log_log_num_log_segments{partition="0",topic="m"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestStartRejectsBadConfig(t *testing.T) {
	for cfg, want := range map[string]string{
		"num.partitions=zero":                                      "num.partitions",
		"no.such.key=1":                                            "unknown broker config",
		"max.connections.per.ip.overrides=127.0.0.1":               "not host:limit",
		"max.connections.per.ip.overrides=127.0.0.1:-1":            "count ≥ 0",
		"max.connections.per.ip.overrides=no-such-host.invalid:5":  "no-such-host.invalid",
		"max.connections.per.ip.overrides=127.0.0.1:2,127.0.0.1:3": "twice",
	} {
		k, v, _ := strings.Cut(cfg, "=")
		_, err := exactly.Start(exactly.Options{Config: map[string]string{k: v}})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error mentioning %q", cfg, err, want)
		}
	}
}

// TestConnectionLimitOverrides: max.connections.per.ip.overrides gives an
// address (by IP, or by a host name resolved at start) its own limit in
// place of max.connections.per.ip; a connection beyond it is closed at
// once while the ones admitted are served.
func TestConnectionLimitOverrides(t *testing.T) {
	for _, c := range []struct {
		overrides string
		limit     int
	}{{"127.0.0.1:2", 2}, {"localhost:3,10.1.2.3:7", 3}, {"127.0.0.1:0", 0}} {
		t.Run(c.overrides, func(t *testing.T) {
			b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{
				"max.connections.per.ip":           "100",
				"max.connections.per.ip.overrides": c.overrides,
			}})
			var admitted []*testenv.RawConn
			for range c.limit {
				conn := testenv.DialRaw(t, b.Addr())
				conn.Request(kmsg.NewPtrApiVersionsRequest(), 3)
				admitted = append(admitted, conn)
			}
			testenv.DialRaw(t, b.Addr()).ExpectClosed()
			for _, conn := range admitted {
				conn.Request(kmsg.NewPtrApiVersionsRequest(), 3)
			}
		})
	}
}

// TestCloseTwice: closing a NewTestBroker early (to restart on the same
// data directory, say) and again at cleanup is allowed.
func TestCloseTwice(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestLargeProducesKeepTheirBytes: produce requests of 64 KiB and more are
// read into recycled buffers. Several producers at once, each with its own
// byte pattern, must find exactly their own records in the log: a handler
// that kept request bytes past its return would show up as records carrying
// another request's bytes (or failing their CRC).
func TestLargeProducesKeepTheirBytes(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{DataDir: t.TempDir()})
	const producers, perProducer = 4, 400
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < producers; i++ {
		wg.Go(func() {
			topic := fmt.Sprintf("big-%d", i)
			cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic), kgo.AllowAutoTopicCreation(),
				kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerLinger(5*time.Millisecond))
			if err != nil {
				t.Error(err)
				return
			}
			defer cl.Close()
			for n := 0; n < perProducer; n++ {
				cl.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(n)), Value: pattern(i, n)}, func(_ *kgo.Record, err error) {
					if err != nil {
						t.Error(err)
					}
				})
			}
			if err := cl.Flush(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i := 0; i < producers; i++ {
		topic := fmt.Sprintf("big-%d", i)
		cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for seen < perProducer {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			fs := cl.PollFetches(pctx)
			cancel()
			if err := fs.Err(); err != nil {
				t.Fatalf("%s after %d records: %v", topic, seen, err)
			}
			fs.EachRecord(func(r *kgo.Record) {
				n, _ := strconv.Atoi(string(r.Key))
				if !bytes.Equal(r.Value, pattern(i, n)) {
					t.Fatalf("%s record %s holds another request's bytes", topic, r.Key)
				}
				seen++
			})
		}
		cl.Close()
	}
}

// pattern is producer i's n-th value: 8 KiB that name their producer and
// record throughout.
func pattern(i, n int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("p%d-r%06d;", i, n)), 8<<10/12)
}

// TestPartitionLimit: max.broker.partitions refuses CreateTopics and
// CreatePartitions that would take the broker past it, with
// POLICY_VIOLATION and nothing created. It counts every partition held,
// the internal topics' included: the limit is set to theirs plus 5.
func TestPartitionLimit(t *testing.T) {
	dir := t.TempDir()
	internal := internalPartitions(t, dir)
	b := exactly.NewTestBroker(t, exactly.Options{DataDir: dir, Config: map[string]string{"max.broker.partitions": fmt.Sprint(internal + 5)}})
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx := context.Background()
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, "second"); !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("3 more partitions past a limit of 5: %v, want POLICY_VIOLATION", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "second-0")); !os.IsNotExist(err) {
		t.Fatalf("the refused topic left a directory: %v", err)
	}
	resp, err := adm.CreatePartitions(ctx, 3, "first")
	if err == nil {
		err = resp.Error()
	}
	if !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("3 more partitions for an existing topic: %v, want POLICY_VIOLATION", err)
	}
	if r, err := adm.CreateTopic(ctx, 2, 1, nil, "fits"); err != nil {
		t.Fatalf("2 partitions up to the limit exactly: %v %s", err, r.ErrMessage)
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := topics.Names(); !slices.Equal(got, []string{"first", "fits"}) {
		t.Fatalf("topics %v", got)
	}
}

// internalPartitions starts a broker on dir and counts the partitions of
// the topics it creates for itself.
func internalPartitions(t *testing.T, dir string) int {
	t.Helper()
	b, err := exactly.Start(exactly.Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopicsWithInternal(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, td := range topics {
		n += len(td.Partitions)
	}
	return n
}
