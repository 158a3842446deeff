package broker

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// gauge is the value of a per-partition series of topic "m", partition 0.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["topic"] == "m" && labels["partition"] == "0" {
				if m.GetGauge() != nil {
					return m.GetGauge().GetValue()
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no series %s for m/0", name)
	return 0
}

// The log start offset and the last stable offset are separate series:
// an open transaction holds the LSO below the high watermark, which is
// what shows a hung transaction; the log start stays where it is.
func TestLastStableOffsetMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	b, err := New(Config{FS: vfs.NewMem(), DataDir: "/data", AdvertisedHost: "127.0.0.1", AdvertisedPort: 9092,
		Static: map[string]string{"producer.id.expiration.ms": "1000"}, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.createTopic("m", 1, nil); err != nil {
		t.Fatal(err)
	}
	p := b.partition("m", 0)
	for seq := range int32(3) {
		batch := txnTestBatch(9, 0, seq)
		h, err := record.Validate(batch)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Append(batch, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.WaitDurable(p.LogEndOffset()); err != nil {
		t.Fatal(err)
	}
	if hw, lso, start := gauge(t, reg, "kafka_cluster_partition_high_watermark"), gauge(t, reg, "kafka_log_last_stable_offset"), gauge(t, reg, "kafka_log_log_start_offset"); hw != 3 || lso != 0 || start != 0 {
		t.Fatalf("hw %v lso %v log start %v, want 3, 0 (the open transaction) and 0", hw, lso, start)
	}
	if err := p.WriteTxnMarker(9, 0, true, 0); err != nil {
		t.Fatal(err)
	}
	if lso := gauge(t, reg, "kafka_log_last_stable_offset"); lso != 4 {
		t.Fatalf("lso %v after the commit, want 4", lso)
	}
	// Its transaction ended, the producer expires; the counter shows it.
	b.ExpireProducers(time.Now().Add(time.Hour))
	if n := counter(t, reg, "kafka_log_producer_ids_expired_total"); n != 1 {
		t.Fatalf("kafka_log_producer_ids_expired_total = %v after one expiry, want 1", n)
	}
}

// counter is the value of an unlabelled counter.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}

// errorsCounted is kafka_network_requestmetrics_errors_total for one
// request name and error.
func errorsCounted(t *testing.T, reg *prometheus.Registry, request, errName string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "kafka_network_requestmetrics_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["request"] == request && labels["error"] == errName {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// Errors are counted where every response passes (Handle), not by each
// handler: a group API's top-level error, an error nested per partition
// and an error in a deferred answer all show in the error metric.
func TestEveryAPIsErrorsAreCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := memBroker(t, nil, reg)
	handle := func(req kmsg.Request) kmsg.Response {
		req.SetVersion(apis[req.Key()].hi)
		return handleDirect(b, req)
	}

	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Group, hb.MemberID, hb.Generation = "g", "nobody", 1
	if resp := handle(hb).(*kmsg.HeartbeatResponse); resp.ErrorCode == 0 {
		t.Fatal("heartbeat of an unknown member succeeded")
	}
	lo := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = "missing"
	lt.Partitions = append(lt.Partitions, kmsg.NewListOffsetsRequestTopicPartition())
	lo.Topics = append(lo.Topics, lt)
	handle(lo)

	if n := errorsCounted(t, reg, "Heartbeat", errorName(kerr.UnknownMemberID.Code)) + errorsCounted(t, reg, "Heartbeat", errorName(kerr.GroupIDNotFound.Code)); n != 1 {
		t.Errorf("Heartbeat errors counted: %v, want 1", n)
	}
	if n := errorsCounted(t, reg, "ListOffsets", errorName(kerr.UnknownTopicOrPartition.Code)); n != 1 {
		t.Errorf("ListOffsets UNKNOWN_TOPIC_OR_PARTITION counted: %v, want 1", n)
	}
}
