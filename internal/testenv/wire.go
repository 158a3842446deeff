package testenv

import (
	"encoding/binary"
	"hash/crc32"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// RawConn speaks the Kafka wire protocol directly, so a test can send
// malformed, oversized or abandoned requests.
type RawConn struct {
	t  testing.TB
	NC net.Conn
	// ReadTimeout bounds each ReadFrame; zero means 10 s.
	ReadTimeout time.Duration
}

// DialRaw connects to addr; the connection is closed when the test ends.
func DialRaw(t testing.TB, addr string) *RawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &RawConn{t: t, NC: nc}
}

// Send writes frame (size prefix included) within 5 s or fails the test.
func (c *RawConn) Send(frame []byte) {
	c.t.Helper()
	c.NC.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.NC.Write(frame); err != nil {
		c.t.Fatal(err)
	}
}

// SendExpectingClose writes a frame the broker is expected to reject by
// closing: the broker may close before the whole frame is written, so a
// write error is part of the expected outcome.
func (c *RawConn) SendExpectingClose(frame []byte) {
	c.NC.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.NC.Write(frame)
}

// Frame encodes req at version v with correlation id corr, size prefix
// included.
func Frame(req kmsg.Request, v int16, corr int32) []byte {
	req.SetVersion(v)
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw")).AppendRequest(nil, req, corr)
}

// Request sends req at version v and decodes the response.
func (c *RawConn) Request(req kmsg.Request, v int16) kmsg.Response {
	c.t.Helper()
	c.Send(Frame(req, v, 42))
	return c.ReadResponse(req, v, 42)
}

// ReadResponse reads one response frame for req at version v and checks
// its correlation id.
func (c *RawConn) ReadResponse(req kmsg.Request, v int16, corr int32) kmsg.Response {
	c.t.Helper()
	body := c.ReadFrame()
	if got := int32(binary.BigEndian.Uint32(body)); got != corr {
		c.t.Fatalf("correlation id %d, want %d", got, corr)
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

// ReadFrame reads one response frame (without its size prefix) within
// ReadTimeout (10 s by default).
func (c *RawConn) ReadFrame() []byte {
	c.t.Helper()
	timeout := c.ReadTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	c.NC.SetReadDeadline(time.Now().Add(timeout))
	var size [4]byte
	if _, err := io.ReadFull(c.NC, size[:]); err != nil {
		c.t.Fatalf("reading response: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c.NC, body); err != nil {
		c.t.Fatal(err)
	}
	return body
}

// ExpectClosed asserts the broker closes the connection within 5 s.
func (c *RawConn) ExpectClosed() {
	c.t.Helper()
	c.NC.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.NC.Read(make([]byte, 1)); err == nil {
		c.t.Fatal("connection still open; expected the broker to close it")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatal("connection still open after 5s; expected the broker to close it")
	}
}

// Batch is an uncompressed RecordBatch v2 of one record per value, as a
// non-idempotent producer sends it.
func Batch(values ...string) []byte {
	var recs []byte
	for i, v := range values {
		rec := kmsg.NewRecord()
		rec.OffsetDelta = int32(i)
		rec.Value = []byte(v)
		body := rec.AppendTo(nil)[1:]
		recs = binary.AppendVarint(recs, int64(len(body)))
		recs = append(recs, body...)
	}
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.FirstTimestamp = time.Now().UnixMilli()
	b.MaxTimestamp = b.FirstTimestamp
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = -1, -1, -1
	b.NumRecords = int32(len(values))
	b.LastOffsetDelta = int32(len(values) - 1)
	b.Records = recs
	return SealBatch(b.AppendTo(nil))
}

// KeyedBatch is an uncompressed RecordBatch v2 of one record per key and
// value pair (keys at even positions), as a non-idempotent producer sends
// it to a compacted topic.
func KeyedBatch(keysAndValues ...string) []byte {
	var recs []byte
	for i := 0; i+1 < len(keysAndValues); i += 2 {
		rec := kmsg.NewRecord()
		rec.OffsetDelta = int32(i / 2)
		rec.Key, rec.Value = []byte(keysAndValues[i]), []byte(keysAndValues[i+1])
		body := rec.AppendTo(nil)[1:]
		recs = binary.AppendVarint(recs, int64(len(body)))
		recs = append(recs, body...)
	}
	n := int32(len(keysAndValues) / 2)
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.FirstTimestamp = time.Now().UnixMilli()
	b.MaxTimestamp = b.FirstTimestamp
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = -1, -1, -1
	b.NumRecords = n
	b.LastOffsetDelta = n - 1
	b.Records = recs
	return SealBatch(b.AppendTo(nil))
}

// SealBatch fixes a raw batch's length field and CRC-32C after a test
// edited it.
func SealBatch(raw []byte) []byte {
	binary.BigEndian.PutUint32(raw[8:], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// ProduceRequest is an acks=all Produce of records to one partition.
func ProduceRequest(topic string, partition int32, records []byte) *kmsg.ProduceRequest {
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
