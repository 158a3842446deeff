package exactly_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kgo"
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
		"num.partitions=zero": "num.partitions",
		"no.such.key=1":       "unknown broker config",
	} {
		k, v, _ := strings.Cut(cfg, "=")
		_, err := exactly.Start(exactly.Options{Config: map[string]string{k: v}})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error mentioning %q", cfg, err, want)
		}
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
