package e2e

import (
	"bytes"
	"context"
	"github.com/exactly/exactly/internal/testenv"
	"strings"
	"testing"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func produceCode(t *testing.T, c *testenv.RawConn, req *kmsg.ProduceRequest) (int16, string) {
	t.Helper()
	resp := c.Request(req, 9).(*kmsg.ProduceResponse)
	p := resp.Topics[0].Partitions[0]
	msg := ""
	if p.ErrorMessage != nil {
		msg = *p.ErrorMessage
	}
	return p.ErrorCode, msg
}

// TestBadInputGetsKafkaErrors sends malformed and invalid requests and
// checks each gets the answer a Kafka broker gives, while a well-behaved
// client keeps working throughout.
func TestBadInputGetsKafkaErrors(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{
		"socket.request.max.bytes": "2097152", "auto.create.topics.enable": "false",
	}})
	good, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic("ok"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	ctx := context.Background()
	create := kmsg.NewPtrCreateTopicsRequest()
	ct := kmsg.NewCreateTopicsRequestTopic()
	ct.Topic, ct.NumPartitions, ct.ReplicationFactor = "ok", 1, 1
	create.Topics = append(create.Topics, ct)
	if resp := testenv.DialRaw(t, b.Addr()).Request(create, 7).(*kmsg.CreateTopicsResponse); resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("create: %v", kerr.ErrorForCode(resp.Topics[0].ErrorCode))
	}
	stillServing := func(step string) {
		t.Helper()
		if err := good.ProduceSync(ctx, &kgo.Record{Value: []byte(step)}).FirstErr(); err != nil {
			t.Fatalf("after %s a normal client fails: %v", step, err)
		}
	}

	t.Run("oversized frame closes connection", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		c.Send([]byte{0x7f, 0xff, 0xff, 0xff})
		c.ExpectClosed()
		stillServing("oversized frame")
	})
	t.Run("garbage bytes close connection", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		c.Send(append([]byte{0, 0, 0, 20}, bytes.Repeat([]byte{0xff}, 20)...))
		c.ExpectClosed()
		stillServing("garbage")
	})
	t.Run("unknown api key closes connection", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		c.Send([]byte{0, 0, 0, 10, 0x0f, 0xff, 0, 0, 0, 0, 0, 1, 0xff, 0xff})
		c.ExpectClosed()
		stillServing("unknown api key")
	})
	t.Run("unsupported produce version closes connection", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		req := testenv.ProduceRequest("ok", 0, testenv.Batch("v"))
		req.SetVersion(2)
		c.Send(kmsg.NewRequestFormatter().AppendRequest(nil, req, 1))
		c.ExpectClosed()
		stillServing("old produce version")
	})
	t.Run("ApiVersions above served answers v0 UNSUPPORTED_VERSION", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		// Key 18, version 99, correlation 5, null client id, then a v3-style body.
		c.Send([]byte{0, 0, 0, 12, 0, 18, 0, 99, 0, 0, 0, 5, 0xff, 0xff, 0, 0})
		body := c.ReadFrame()
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.Version = 0
		if err := resp.ReadFrom(body[4:]); err != nil {
			t.Fatal(err)
		}
		if resp.ErrorCode != kerr.UnsupportedVersion.Code || len(resp.ApiKeys) == 0 {
			t.Fatalf("code %d with %d keys", resp.ErrorCode, len(resp.ApiKeys))
		}
	})
	t.Run("produce errors", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		bad := testenv.Batch("crc")
		bad[len(bad)-1] ^= 0xff
		magic := testenv.Batch("magic")
		magic[16] = 1
		huge := make([]byte, 3<<20)
		cases := []struct {
			name  string
			req   *kmsg.ProduceRequest
			want  *kerr.Error
			close bool
		}{
			{"bad crc", testenv.ProduceRequest("ok", 0, bad), kerr.CorruptMessage, false},
			{"wrong magic", testenv.ProduceRequest("ok", 0, magic), kerr.UnsupportedForMessageFormat, false},
			{"two batches", testenv.ProduceRequest("ok", 0, append(testenv.Batch("a"), testenv.Batch("b")...)), kerr.InvalidRecord, false},
			{"truncated", testenv.ProduceRequest("ok", 0, testenv.Batch("t")[:40]), kerr.CorruptMessage, false},
			{"unknown topic", testenv.ProduceRequest("nope", 0, testenv.Batch("x")), kerr.UnknownTopicOrPartition, false},
			{"unknown partition", testenv.ProduceRequest("ok", 7, testenv.Batch("x")), kerr.UnknownTopicOrPartition, false},
		}
		for _, tc := range cases {
			code, msg := produceCode(t, c, tc.req)
			if code != tc.want.Code {
				t.Errorf("%s: got %v (%s), want %v", tc.name, kerr.ErrorForCode(code), msg, tc.want)
			}
		}
		acks := testenv.ProduceRequest("ok", 0, testenv.Batch("acks"))
		acks.Acks = 2
		if code, _ := produceCode(t, c, acks); code != kerr.InvalidRequiredAcks.Code {
			t.Errorf("acks=2: got %v", kerr.ErrorForCode(code))
		}
		// Over max.message.bytes (default ~1 MB) but under the frame limit is
		// MESSAGE_TOO_LARGE; over socket.request.max.bytes closes.
		big := testenv.Batch(string(huge[:2<<20+100]))
		big2 := testenv.ProduceRequest("ok", 0, big)
		c2 := testenv.DialRaw(t, b.Addr())
		big2.SetVersion(9)
		c2.SendExpectingClose(kmsg.NewRequestFormatter().AppendRequest(nil, big2, 1))
		c2.ExpectClosed()
		stillServing("bad produce requests")
	})
	t.Run("message too large", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		code, _ := produceCode(t, c, testenv.ProduceRequest("ok", 0, testenv.Batch(strings.Repeat("x", 1048588))))
		if code != kerr.MessageTooLarge.Code {
			t.Fatalf("got %v", kerr.ErrorForCode(code))
		}
	})
	t.Run("invalid topic names", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		for _, name := range []string{"", "..", "bad/name", strings.Repeat("a", 250), "sp ace"} {
			req := kmsg.NewPtrCreateTopicsRequest()
			ct := kmsg.NewCreateTopicsRequestTopic()
			ct.Topic, ct.NumPartitions, ct.ReplicationFactor = name, 1, 1
			req.Topics = append(req.Topics, ct)
			resp := c.Request(req, 7).(*kmsg.CreateTopicsResponse)
			if resp.Topics[0].ErrorCode != kerr.InvalidTopicException.Code {
				t.Errorf("create %q: got %v", name, kerr.ErrorForCode(resp.Topics[0].ErrorCode))
			}
		}
		md := kmsg.NewPtrMetadataRequest()
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr("missing")
		md.Topics = append(md.Topics, mt)
		resp := c.Request(md, 12).(*kmsg.MetadataResponse)
		if resp.Topics[0].ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Errorf("metadata for a missing topic with auto-create off: %v", kerr.ErrorForCode(resp.Topics[0].ErrorCode))
		}
	})
	t.Run("create topic errors", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		cases := []struct {
			mut  func(*kmsg.CreateTopicsRequestTopic)
			want *kerr.Error
		}{
			{func(t *kmsg.CreateTopicsRequestTopic) { t.Topic = "ok" }, kerr.TopicAlreadyExists},
			{func(t *kmsg.CreateTopicsRequestTopic) { t.ReplicationFactor = 3 }, kerr.InvalidReplicationFactor},
			{func(t *kmsg.CreateTopicsRequestTopic) { t.NumPartitions = 0 }, kerr.InvalidPartitions},
			{func(t *kmsg.CreateTopicsRequestTopic) {
				t.Configs = []kmsg.CreateTopicsRequestTopicConfig{{Name: "retention.ms", Value: kmsg.StringPtr("soon")}}
			}, kerr.InvalidConfig},
			{func(t *kmsg.CreateTopicsRequestTopic) {
				t.Configs = []kmsg.CreateTopicsRequestTopicConfig{{Name: "no.such.key", Value: kmsg.StringPtr("1")}}
			}, kerr.InvalidConfig},
		}
		for i, tc := range cases {
			req := kmsg.NewPtrCreateTopicsRequest()
			ct := kmsg.NewCreateTopicsRequestTopic()
			ct.Topic, ct.NumPartitions, ct.ReplicationFactor = "new-topic", 1, 1
			tc.mut(&ct)
			req.Topics = append(req.Topics, ct)
			resp := c.Request(req, 7).(*kmsg.CreateTopicsResponse)
			if resp.Topics[0].ErrorCode != tc.want.Code {
				t.Errorf("case %d: got %v, want %v", i, kerr.ErrorForCode(resp.Topics[0].ErrorCode), tc.want)
			}
		}
	})
	t.Run("fetch out of range", func(t *testing.T) {
		c := testenv.DialRaw(t, b.Addr())
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes = 10, 1<<20
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = "ok"
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.FetchOffset, fp.PartitionMaxBytes = 1_000_000, 1<<20
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
		resp := c.Request(req, 11).(*kmsg.FetchResponse)
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.OffsetOutOfRange.Code {
			t.Fatalf("got %v", kerr.ErrorForCode(code))
		}
	})
	stillServing("all bad input")
}
