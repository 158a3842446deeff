package hostile

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Helpers of the network tests (network_*_test.go).

// startMetricsBroker is startBroker with Prometheus metrics served, for
// tests that read the broker's own account of its connections and
// request bytes.
func startMetricsBroker(t *testing.T, cfg map[string]string) *exactly.Broker {
	t.Helper()
	b, err := exactly.Start(exactly.Options{DataDir: t.TempDir(), Config: cfg, MetricsListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// metric scrapes one sample from the broker's /metrics: series is the
// name with its labels as exposed, e.g. `x_total{reason="a"}`. A series
// not exposed yet reads 0.
func metric(t *testing.T, b *exactly.Broker, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + b.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// Series the network tests read.
const (
	metricConnCount   = "kafka_server_socket_server_metrics_connection_count"
	metricConnCreated = "kafka_server_socket_server_metrics_connection_creation_total"
	metricPoolUsed    = "kafka_network_socketserver_memory_pool_used_bytes"
)

// metricRejected is the rejected-connections series for one limit.
func metricRejected(reason string) string {
	return fmt.Sprintf("kafka_server_socket_server_metrics_connection_rejected_total{reason=%q}", reason)
}

// openFDs counts this process's open file descriptors: the broker's
// sockets and files plus the test's own.
func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("counting file descriptors: %v", err)
	}
	return len(fds)
}

// sampler records the peak of a measurement taken every 100 ms while an
// attack runs.
type sampler struct {
	stop    chan struct{}
	done    chan struct{}
	peak    uint64
	stopped sync.Once
}

func sample(measure func() uint64) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			s.peak = max(s.peak, measure())
			select {
			case <-s.stop:
				s.peak = max(s.peak, measure())
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return s
}

// end stops sampling and returns the peak; it may be called again (from
// a cleanup that stops a sampler a failed test left running).
func (s *sampler) end() uint64 {
	s.stopped.Do(func() { close(s.stop) })
	<-s.done
	return s.peak
}

// apiVersionsAnswered reports whether c still gets an answer to
// ApiVersions (false: the broker closed the connection).
func apiVersionsAnswered(c *testenv.RawConn) bool {
	c.NC.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.NC.Write(testenv.Frame(kmsg.NewPtrApiVersionsRequest(), 3, 1)); err != nil {
		return false
	}
	var size [4]byte
	if _, err := io.ReadFull(c.NC, size[:]); err != nil {
		return false
	}
	// Drain the rest so the connection can be probed again.
	_, err := io.ReadFull(c.NC, make([]byte, binary.BigEndian.Uint32(size[:])))
	c.NC.SetDeadline(time.Time{})
	return err == nil
}
