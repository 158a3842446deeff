package broker_test

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestBytesOutCountsWhatIsSent: a long poll that waits for more than is
// there reads the partition several times; bytes out must count the one
// response sent, not every read.
func TestBytesOutCountsWhatIsSent(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{MetricsListen: "127.0.0.1:0"})
	adm, ctx := admin(t, b.Addr())
	created, err := adm.CreateTopic(ctx, 1, 1, nil, "out")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic("out"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("one record")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis = 300
	req.MinBytes = 1 << 20 // never reached: the poll waits out MaxWait
	req.MaxBytes = 1 << 20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = "out"
	rt.TopicID = created.ID // kgo sends the newest version, which names topics by ID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 1 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	sent := len(resp.Topics[0].Partitions[0].RecordBatches)
	if sent == 0 {
		t.Fatalf("fetch returned no data: %+v", resp.Topics[0].Partitions[0])
	}
	m := regexp.MustCompile(`kafka_server_brokertopicmetrics_bytes_out_total\{topic="out"\} (\S+)`).FindStringSubmatch(scrape(t, b.MetricsAddr()))
	if m == nil {
		t.Fatal("no bytes_out series for topic out")
	}
	if got, _ := strconv.ParseFloat(m[1], 64); got != float64(sent) {
		t.Fatalf("bytes out = %v, but one response of %d record bytes was sent", got, sent)
	}
}
