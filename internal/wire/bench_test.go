package wire

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// benchRequests are a large Produce (1 MiB of records in 4 partitions, and
// 64 partitions of 16 KiB) and a typical consumer Fetch (5 topics × 20
// partitions).
func benchRequests() map[string]kmsg.Request {
	produce := func(parts, size int) kmsg.Request {
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = "orders"
		for p := range parts {
			rp := kmsg.NewProduceRequestTopicPartition()
			rp.Partition = int32(p)
			rp.Records = make([]byte, size)
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		req.SetVersion(9)
		return req
	}
	fetch := kmsg.NewPtrFetchRequest()
	fetch.MaxWaitMillis, fetch.MinBytes, fetch.IsolationLevel = 500, 1, 1
	for i := range 5 {
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = fmt.Sprintf("topic-%d", i)
		for p := range 20 {
			fp := kmsg.NewFetchRequestTopicPartition()
			fp.Partition, fp.FetchOffset, fp.PartitionMaxBytes = int32(p), 123456, 1<<20
			ft.Partitions = append(ft.Partitions, fp)
		}
		fetch.Topics = append(fetch.Topics, ft)
	}
	fetch.SetVersion(12)
	return map[string]kmsg.Request{
		"produce-4x256KiB": produce(4, 256<<10),
		"produce-64x16KiB": produce(64, 16<<10),
		"fetch-5x20":       fetch,
	}
}

// BenchmarkCheckCounts measures CheckCounts next to the kmsg decode it
// guards: it skips record bytes, so its cost follows the field count.
func BenchmarkCheckCounts(b *testing.B) {
	for name, req := range benchRequests() {
		body := req.AppendTo(nil)
		key, version := req.Key(), req.GetVersion()
		if err := CheckCounts(key, version, body); err != nil {
			b.Fatal(err)
		}
		b.Run(name+"/check", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if err := CheckCounts(key, version, body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/decode", func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				msg := kmsg.RequestForKey(key)
				msg.SetVersion(version)
				if err := msg.ReadFrom(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
