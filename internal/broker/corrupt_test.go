package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// served is a broker on fsys behind a real listener.
type served struct {
	b    *Broker
	addr string
	srv  *server.Server
	logs *logBuf
}

// logBuf collects a broker's log lines.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func serve(t *testing.T, fsys vfs.FS, dir string) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	b, err := New(Config{FS: fsys, DataDir: dir, AdvertisedHost: "127.0.0.1", AdvertisedPort: int32(ln.Addr().(*net.TCPAddr).Port), Logger: logger})
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	srv := server.New(ln, server.Config{}, b, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	go srv.Serve()
	s := &served{b: b, addr: ln.Addr().String(), srv: srv, logs: logs}
	t.Cleanup(s.stop)
	return s
}

func (s *served) stop() {
	if s.srv != nil {
		s.srv.Close(time.Second)
		s.b.Close()
		s.srv = nil
	}
}

func client(t *testing.T, addr string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordRetries(1), kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond }),
		kgo.RequestRetries(1), kgo.MetadataMinAge(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produceValues(t *testing.T, cl *kgo.Client, topic string, n int) error {
	t.Helper()
	var rs []*kgo.Record
	for i := 0; i < n; i++ {
		rs = append(rs, &kgo.Record{Topic: topic, Value: []byte(strings.Repeat("v", 50))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return cl.ProduceSync(ctx, rs...).FirstErr()
}

// One flipped byte in the first batch of a partition's active segment,
// fsynced and checkpointed by a clean stop: after a restart that partition
// is offline (KAFKA_STORAGE_ERROR to Produce, Fetch and ListOffsets), the
// log says which file and offset, no byte of it changed, and every other
// partition serves. It used to cut the whole segment with a WARN.
func TestCorruptPartitionGoesOfflineAlone(t *testing.T) {
	mem := vfs.NewMem()
	s := serve(t, mem, "/data")
	for _, name := range []string{"bad", "good"} {
		if _, err := s.b.createTopic(name, 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	cl := client(t, s.addr)
	for _, name := range []string{"bad", "good"} {
		if err := produceValues(t, cl, name, 300); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	s.stop()

	seg := "/data/bad-0/00000000000000000000.log"
	b, err := vfs.ReadFile(mem, seg, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 0x10 // inside the first batch's records
	if err := vfs.WriteFileAtomic(mem, seg, b); err != nil {
		t.Fatal(err)
	}
	before := tree(t, mem, "/data/bad-0")

	s = serve(t, mem, "/data")
	if err := s.b.partition("bad", 0).Err(); err == nil {
		t.Fatal("corrupt partition is online")
	}
	if logs := s.logs.String(); !strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, seg) || !strings.Contains(logs, "offset=0") || !strings.Contains(logs, "check-data") {
		t.Fatalf("no ERROR line naming the file, offset and the way back:\n%s", logs)
	}
	cl = client(t, s.addr)
	if err := produceValues(t, cl, "bad", 1); !errors.Is(err, kerr.KafkaStorageError) {
		t.Fatalf("produce to the corrupt partition: %v, want KAFKA_STORAGE_ERROR", err)
	}
	if err := kerr.ErrorForCode(testenv.FetchOnce(t, cl, "bad", 0, 0).ErrorCode); !errors.Is(err, kerr.KafkaStorageError) {
		t.Fatalf("fetch from the corrupt partition: %v, want KAFKA_STORAGE_ERROR", err)
	}
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), "bad")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("bad", 0); !errors.Is(o.Err, kerr.KafkaStorageError) {
		t.Fatalf("list offsets of the corrupt partition: %+v, want KAFKA_STORAGE_ERROR", o)
	}
	if err := produceValues(t, cl, "good", 1); err != nil {
		t.Fatalf("healthy partition refused a produce: %v", err)
	}
	if p := testenv.FetchOnce(t, cl, "good", 0, 0); p.ErrorCode != 0 || len(p.RecordBatches) == 0 {
		t.Fatalf("healthy partition: %d record bytes, %v", len(p.RecordBatches), kerr.ErrorForCode(p.ErrorCode))
	}
	s.stop()
	if after := tree(t, mem, "/data/bad-0"); !maps.Equal(before, after) {
		t.Fatal("files of the corrupt partition changed")
	}
	// The recovery point survives the restart with the partition offline:
	// the next start still calls the damage corruption.
	s = serve(t, mem, "/data")
	if s.b.partition("bad", 0).Err() == nil {
		t.Fatal("corrupt partition came back online after a second restart")
	}
}

// A corrupt batch found by the producer-state replay takes only that
// partition offline; it used to stop the broker from starting.
func TestCorruptBatchInReplayTakesPartitionOffline(t *testing.T) {
	mem := vfs.NewMem()
	s := serve(t, mem, "/data")
	if _, err := s.b.createTopic("bad", 1, map[string]string{"segment.bytes": "4096"}); err != nil {
		t.Fatal(err)
	}
	cl := client(t, s.addr)
	for i := 0; i < 30; i++ {
		if err := produceValues(t, cl, "bad", 10); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	s.stop()
	// No snapshot: replay reads every batch. Damage a closed segment whose
	// index files are intact, so only the replay sees it.
	names, _ := mem.ReadDir("/data/bad-0")
	for _, n := range names {
		if strings.HasSuffix(n, ".snapshot") {
			mem.Remove(filepath.Join("/data/bad-0", n))
		}
	}
	seg := "/data/bad-0/00000000000000000000.log"
	b, err := vfs.ReadFile(mem, seg, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	f, _ := mem.OpenFile(seg, os.O_WRONLY|os.O_TRUNC, 0)
	f.Write(b)
	f.Sync()
	f.Close()

	s = serve(t, mem, "/data")
	p := s.b.partition("bad", 0)
	if p == nil || p.Log().Corruption() == nil || p.Log().Corruption().File != seg {
		t.Fatalf("replay over a corrupt batch: partition %v", p)
	}
}

// Corruption in an internal topic refuses the start with the file named:
// committed offsets or transactions must not be rebuilt around a hole.
func TestCorruptInternalTopicRefusesStart(t *testing.T) {
	mem := vfs.NewMem()
	s := serve(t, mem, "/data")
	if _, err := s.b.createTopic("t", 1, nil); err != nil {
		t.Fatal(err)
	}
	// An idempotent producer reserves producer ids: a record in the log.
	if err := produceValues(t, client(t, s.addr), "t", 1); err != nil {
		t.Fatal(err)
	}
	s.stop()
	seg := "/data/__transaction_state-0/00000000000000000000.log"
	b, err := vfs.ReadFile(mem, seg, 1<<30)
	if err != nil || len(b) < 70 {
		t.Fatal("no transaction state log to damage", err, len(b))
	}
	b[65] ^= 0x10
	if err := vfs.WriteFileAtomic(mem, seg, b); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{FS: mem, DataDir: "/data", AdvertisedHost: "127.0.0.1", AdvertisedPort: 9092, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), seg) || errors.Is(err, cluster.ErrDataDir) {
		t.Fatalf("start over a corrupt internal topic: %v", err)
	}
}
