package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestFsyncFailureTakesPartitionOffline: when fsync fails on one partition
// the producer gets KAFKA_STORAGE_ERROR (never a success), the partition
// stays offline (the fsync is not retried), and other partitions go on.
func TestFsyncFailureTakesPartitionOffline(t *testing.T) {
	faulty := vfs.NewFaulty(vfs.NewMem())
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	b, err := New(Config{FS: faulty, DataDir: "/data", AdvertisedHost: "127.0.0.1", AdvertisedPort: int32(port), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(ln, server.Config{}, b, logger, nil)
	go srv.Serve()
	defer func() { srv.Close(time.Second); b.Close() }()

	for _, name := range []string{"bad", "good"} {
		if _, err := b.createTopic(name, 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	faulty.FailPath(vfs.OpSync, func(name string) bool { return strings.Contains(name, "/bad-0/") }, errors.New("injected EIO"))

	cl, err := kgo.NewClient(kgo.SeedBrokers(ln.Addr().String()), kgo.RecordRetries(1), kgo.DisableIdempotentWrite(),
		kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond }), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		err := cl.ProduceSync(ctx, &kgo.Record{Topic: "bad", Value: []byte("x")}).FirstErr()
		if !errors.Is(err, kerr.KafkaStorageError) {
			t.Fatalf("produce %d to the failing partition: %v, want KAFKA_STORAGE_ERROR", i, err)
		}
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "good", Value: []byte("y")}).FirstErr(); err != nil {
		t.Fatalf("healthy partition affected: %v", err)
	}
	if hw := b.partition("bad", 0).HighWatermark(); hw != 0 {
		t.Fatalf("a record that was never fsynced became visible: hw %d", hw)
	}
}
