package broker

import (
	"testing"
	"time"

	"github.com/exactly/exactly/internal/record"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// series is the value of the series name whose labels include want
// (counter or gauge); ok is false when there is none.
func series(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue(), true
			}
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

// TestShareGroupMetrics: the share-group series count acquisitions,
// redeliveries, acknowledgements by type, lock expiries and records
// archived at the delivery-count limit, and show each group's in-flight
// records by state.
func TestShareGroupMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := memBroker(t, map[string]string{"group.share.delivery.count.limit": "2", "group.share.min.record.lock.duration.ms": "1000",
		"group.share.record.lock.duration.ms": "1000"}, reg)
	if _, err := b.createTopic("m", 1, nil); err != nil {
		t.Fatal(err)
	}
	batch := testenv.Batch("0", "1", "2", "3", "4", "5")
	h, err := record.Validate(batch)
	if err != nil {
		t.Fatal(err)
	}
	p := b.partition("m", 0)
	if _, err := p.Append(batch, h); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitDurable(6); err != nil {
		t.Fatal(err)
	}
	topic, _ := b.catalog.Topic("m")
	handle := func(req kmsg.Request) kmsg.Response { return handleDirect(b, req) }
	// The group, reading from offset 0.
	alter := kmsg.NewPtrAlterShareGroupOffsetsRequest()
	alter.GroupID = "workers"
	alter.Topics = []kmsg.AlterShareGroupOffsetsRequestTopic{{Topic: "m", Partitions: []kmsg.AlterShareGroupOffsetsRequestTopicPartition{{Partition: 0, StartOffset: 0}}}}
	if resp := handle(alter).(*kmsg.AlterShareGroupOffsetsResponse); resp.ErrorCode != 0 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("AlterShareGroupOffsets: %+v", resp)
	}
	fetch := func(epoch int32) []kmsg.ShareFetchResponseTopicPartitionAcquiredRecord {
		req := kmsg.NewPtrShareFetchRequest()
		req.Version = 2
		req.GroupID, req.MemberID, req.ShareSessionEpoch, req.MaxRecords = kmsg.StringPtr("workers"), kmsg.StringPtr("a"), epoch, 100
		rt := kmsg.NewShareFetchRequestTopic()
		rt.TopicID = topic.ID
		rt.Partitions = append(rt.Partitions, kmsg.NewShareFetchRequestTopicPartition())
		req.Topics = append(req.Topics, rt)
		resp := handle(req).(*kmsg.ShareFetchResponse)
		if resp.ErrorCode != 0 || len(resp.Topics) != 1 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
			t.Fatalf("ShareFetch: %+v", resp)
		}
		return resp.Topics[0].Partitions[0].AcquiredRecords
	}
	ack := func(epoch int32, batches ...kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch) {
		req := kmsg.NewPtrShareAcknowledgeRequest()
		req.Version = 2
		req.GroupID, req.MemberID, req.ShareSessionEpoch = kmsg.StringPtr("workers"), kmsg.StringPtr("a"), epoch
		rt := kmsg.NewShareAcknowledgeRequestTopic()
		rt.TopicID = topic.ID
		rp := kmsg.NewShareAcknowledgeRequestTopicPartition()
		rp.AcknowledgementBatches = batches
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp := handle(req).(*kmsg.ShareAcknowledgeResponse)
		if resp.ErrorCode != 0 || resp.Topics[0].Partitions[0].ErrorCode != 0 {
			t.Fatalf("ShareAcknowledge: %v", kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode))
		}
	}
	type ackBatch = kmsg.ShareAcknowledgeRequestTopicPartitionAcknowledgementBatch
	check := func(when string, want map[string]float64, inFlight map[string]float64) {
		t.Helper()
		for name, v := range want {
			labels := map[string]string{}
			metric := "kafka_server_share_group_metrics_" + name
			if typ, ok := map[string]string{"accept": "accept", "release": "release", "reject": "reject"}[name]; ok {
				metric, labels["ack_type"] = "kafka_server_share_group_metrics_record_acknowledgement_total", typ
			}
			if got, ok := series(t, reg, metric, labels); !ok || got != v {
				t.Errorf("%s: %s %v = %v (present %v), want %v", when, metric, labels, got, ok, v)
			}
		}
		for state, v := range inFlight {
			if got, ok := series(t, reg, "kafka_sharegroup_in_flight_records", map[string]string{"sharegroup": "workers", "state": state}); !ok || got != v {
				t.Errorf("%s: %s in-flight records %v (present %v), want %v", when, state, got, ok, v)
			}
		}
	}

	if got := fetch(0); len(got) != 1 || got[0].FirstOffset != 0 || got[0].LastOffset != 5 {
		t.Fatalf("first fetch acquired %+v, want 0-5", got)
	}
	ack(1, ackBatch{FirstOffset: 0, LastOffset: 2, AcknowledgeTypes: []int8{1, 3, 2}}) // accept 0, reject 1, release 2
	check("after the first acknowledgements",
		map[string]float64{"records_acquired_total": 6, "records_redelivered_total": 0, "accept": 1, "reject": 1, "release": 1,
			"acquisition_lock_timeout_total": 0, "records_archived_total": 0},
		map[string]float64{"available": 1, "acquired": 3, "acknowledged": 0, "archived": 0})

	// 3-5 are never acknowledged: their locks (1 s) expire.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, _ := series(t, reg, "kafka_server_share_group_metrics_acquisition_lock_timeout_total", nil); v == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the acquisition locks of 3-5 did not expire")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := fetch(2); len(got) != 1 || got[0].FirstOffset != 2 || got[0].LastOffset != 5 || got[0].DeliveryCount != 2 {
		t.Fatalf("second fetch acquired %+v, want 2-5 at delivery count 2", got)
	}
	ack(3, ackBatch{FirstOffset: 2, LastOffset: 5, AcknowledgeTypes: []int8{2}}) // released at the limit: archived
	check("after the redeliveries",
		map[string]float64{"records_acquired_total": 10, "records_redelivered_total": 4, "accept": 1, "reject": 1, "release": 5,
			"acquisition_lock_timeout_total": 3, "records_archived_total": 4},
		map[string]float64{"available": 0, "acquired": 0, "acknowledged": 0, "archived": 0})
}
