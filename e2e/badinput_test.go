package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawConn speaks the wire protocol directly so tests can send what no
// well-behaved client would.
type rawConn struct {
	t  *testing.T
	nc net.Conn
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc}
}

func (c *rawConn) send(frame []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(frame); err != nil {
		c.t.Fatal(err)
	}
}

// sendExpectingClose writes a frame the broker is expected to reject by
// closing: the broker may close before the whole frame is written, so a
// write error is part of the expected outcome.
func (c *rawConn) sendExpectingClose(frame []byte) {
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.nc.Write(frame)
}

// request sends req at version v and decodes the response.
func (c *rawConn) request(req kmsg.Request, v int16) kmsg.Response {
	c.t.Helper()
	req.SetVersion(v)
	c.send(kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw")).AppendRequest(nil, req, 42))
	body := c.readFrame()
	if binary.BigEndian.Uint32(body) != 42 {
		c.t.Fatalf("correlation id %d", binary.BigEndian.Uint32(body))
	}
	body = body[4:]
	resp := req.ResponseKind()
	resp.SetVersion(v)
	if resp.IsFlexible() && req.Key() != 18 {
		body = body[1:] // empty header tags
	}
	if err := resp.ReadFrom(body); err != nil {
		c.t.Fatalf("decoding %T: %v", resp, err)
	}
	return resp
}

func (c *rawConn) readFrame() []byte {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(c.nc, size[:]); err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c.nc, body); err != nil {
		c.t.Fatal(err)
	}
	return body
}

// expectClosed asserts the broker closed the connection.
func (c *rawConn) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Read(make([]byte, 1)); err == nil {
		c.t.Fatal("connection still open; expected the broker to close it")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatal("connection still open after 5s; expected the broker to close it")
	}
}

// validBatch is an uncompressed v2 batch of one record, as a producer
// sends it.
func validBatch(value string) []byte {
	rec := kmsg.NewRecord()
	rec.Value = []byte(value)
	body := rec.AppendTo(nil)[1:]
	recs := binary.AppendVarint(nil, int64(len(body)))
	recs = append(recs, body...)
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.FirstTimestamp = time.Now().UnixMilli()
	b.MaxTimestamp = b.FirstTimestamp
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = -1, -1, -1
	b.NumRecords = 1
	b.Records = recs
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

func produceReq(topic string, partition int32, records []byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Acks = -1
	req.TimeoutMillis = 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition = partition
	rp.Records = records
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

func produceCode(t *testing.T, c *rawConn, req *kmsg.ProduceRequest) (int16, string) {
	t.Helper()
	resp := c.request(req, 9).(*kmsg.ProduceResponse)
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
	if resp := dialRaw(t, b.Addr()).request(create, 7).(*kmsg.CreateTopicsResponse); resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("create: %v", kerr.ErrorForCode(resp.Topics[0].ErrorCode))
	}
	stillServing := func(step string) {
		t.Helper()
		if err := good.ProduceSync(ctx, &kgo.Record{Value: []byte(step)}).FirstErr(); err != nil {
			t.Fatalf("after %s a normal client fails: %v", step, err)
		}
	}

	t.Run("oversized frame closes connection", func(t *testing.T) {
		c := dialRaw(t, b.Addr())
		c.send([]byte{0x7f, 0xff, 0xff, 0xff})
		c.expectClosed()
		stillServing("oversized frame")
	})
	t.Run("garbage bytes close connection", func(t *testing.T) {
		c := dialRaw(t, b.Addr())
		c.send(append([]byte{0, 0, 0, 20}, bytes.Repeat([]byte{0xff}, 20)...))
		c.expectClosed()
		stillServing("garbage")
	})
	t.Run("unknown api key closes connection", func(t *testing.T) {
		c := dialRaw(t, b.Addr())
		c.send([]byte{0, 0, 0, 10, 0x0f, 0xff, 0, 0, 0, 0, 0, 1, 0xff, 0xff})
		c.expectClosed()
		stillServing("unknown api key")
	})
	t.Run("unsupported produce version closes connection", func(t *testing.T) {
		c := dialRaw(t, b.Addr())
		req := produceReq("ok", 0, validBatch("v"))
		req.SetVersion(2)
		c.send(kmsg.NewRequestFormatter().AppendRequest(nil, req, 1))
		c.expectClosed()
		stillServing("old produce version")
	})
	t.Run("ApiVersions above served answers v0 UNSUPPORTED_VERSION", func(t *testing.T) {
		c := dialRaw(t, b.Addr())
		// Key 18, version 99, correlation 5, null client id, then a v3-style body.
		c.send([]byte{0, 0, 0, 12, 0, 18, 0, 99, 0, 0, 0, 5, 0xff, 0xff, 0, 0})
		body := c.readFrame()
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
		c := dialRaw(t, b.Addr())
		bad := validBatch("crc")
		bad[len(bad)-1] ^= 0xff
		magic := validBatch("magic")
		magic[16] = 1
		huge := make([]byte, 3<<20)
		cases := []struct {
			name  string
			req   *kmsg.ProduceRequest
			want  *kerr.Error
			close bool
		}{
			{"bad crc", produceReq("ok", 0, bad), kerr.CorruptMessage, false},
			{"wrong magic", produceReq("ok", 0, magic), kerr.UnsupportedForMessageFormat, false},
			{"two batches", produceReq("ok", 0, append(validBatch("a"), validBatch("b")...)), kerr.InvalidRecord, false},
			{"truncated", produceReq("ok", 0, validBatch("t")[:40]), kerr.CorruptMessage, false},
			{"unknown topic", produceReq("nope", 0, validBatch("x")), kerr.UnknownTopicOrPartition, false},
			{"unknown partition", produceReq("ok", 7, validBatch("x")), kerr.UnknownTopicOrPartition, false},
		}
		for _, tc := range cases {
			code, msg := produceCode(t, c, tc.req)
			if code != tc.want.Code {
				t.Errorf("%s: got %v (%s), want %v", tc.name, kerr.ErrorForCode(code), msg, tc.want)
			}
		}
		acks := produceReq("ok", 0, validBatch("acks"))
		acks.Acks = 2
		if code, _ := produceCode(t, c, acks); code != kerr.InvalidRequiredAcks.Code {
			t.Errorf("acks=2: got %v", kerr.ErrorForCode(code))
		}
		// Over max.message.bytes (default ~1 MB) but under the frame limit is
		// MESSAGE_TOO_LARGE; over socket.request.max.bytes closes.
		big := validBatch(string(huge[:2<<20+100]))
		big2 := produceReq("ok", 0, big)
		c2 := dialRaw(t, b.Addr())
		big2.SetVersion(9)
		c2.sendExpectingClose(kmsg.NewRequestFormatter().AppendRequest(nil, big2, 1))
		c2.expectClosed()
		stillServing("bad produce requests")
	})
	t.Run("message too large", func(t *testing.T) {
		c := dialRaw(t, b.Addr())
		code, _ := produceCode(t, c, produceReq("ok", 0, validBatch(strings.Repeat("x", 1048588))))
		if code != kerr.MessageTooLarge.Code {
			t.Fatalf("got %v", kerr.ErrorForCode(code))
		}
	})
	t.Run("invalid topic names", func(t *testing.T) {
		c := dialRaw(t, b.Addr())
		for _, name := range []string{"", "..", "bad/name", strings.Repeat("a", 250), "sp ace"} {
			req := kmsg.NewPtrCreateTopicsRequest()
			ct := kmsg.NewCreateTopicsRequestTopic()
			ct.Topic, ct.NumPartitions, ct.ReplicationFactor = name, 1, 1
			req.Topics = append(req.Topics, ct)
			resp := c.request(req, 7).(*kmsg.CreateTopicsResponse)
			if resp.Topics[0].ErrorCode != kerr.InvalidTopicException.Code {
				t.Errorf("create %q: got %v", name, kerr.ErrorForCode(resp.Topics[0].ErrorCode))
			}
		}
		md := kmsg.NewPtrMetadataRequest()
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr("missing")
		md.Topics = append(md.Topics, mt)
		resp := c.request(md, 12).(*kmsg.MetadataResponse)
		if resp.Topics[0].ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Errorf("metadata for a missing topic with auto-create off: %v", kerr.ErrorForCode(resp.Topics[0].ErrorCode))
		}
	})
	t.Run("create topic errors", func(t *testing.T) {
		c := dialRaw(t, b.Addr())
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
			resp := c.request(req, 7).(*kmsg.CreateTopicsResponse)
			if resp.Topics[0].ErrorCode != tc.want.Code {
				t.Errorf("case %d: got %v, want %v", i, kerr.ErrorForCode(resp.Topics[0].ErrorCode), tc.want)
			}
		}
	})
	t.Run("fetch out of range", func(t *testing.T) {
		c := dialRaw(t, b.Addr())
		req := kmsg.NewPtrFetchRequest()
		req.MaxWaitMillis, req.MaxBytes = 10, 1<<20
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = "ok"
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.FetchOffset, fp.PartitionMaxBytes = 1_000_000, 1<<20
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
		resp := c.request(req, 11).(*kmsg.FetchResponse)
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.OffsetOutOfRange.Code {
			t.Fatalf("got %v", kerr.ErrorForCode(code))
		}
	})
	stillServing("all bad input")
}
