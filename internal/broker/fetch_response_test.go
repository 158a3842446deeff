package broker

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/server"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/exactly/exactly/internal/vfs"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The streamed encoding (Parts, file sections read back in place) is
// byte-for-byte kmsg's encoding of the same response with its batches
// inline, for every served version and for random shapes: topics with and
// without partitions, errors, aborted transactions, empty and non-empty
// record sets spread over several segments. Tagged fields the encoder does
// not write make it fall back to kmsg's, still equal.
func TestFetchResponsePartsMatchKmsg(t *testing.T) {
	l, err := log.Open(vfs.OS(), filepath.Join(t.TempDir(), "t-0"), log.Config{SegmentBytes: 2048, IndexIntervalBytes: 256, RetentionMs: -1, RetentionBytes: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 60 {
		if _, err := l.Append(testenv.CompressedBatch(0, bytes.Repeat([]byte{byte(i)}, 50+i*7))); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for version := int16(4); version <= 16; version++ {
		for round := range 40 {
			name := fmt.Sprintf("v%d/%d", version, round)
			f := randomFetchResponse(t, rng, l, version, round%10 == 9)
			want := f.FetchResponse
			inline := *want
			inline.Topics = cloneTopics(want.Topics)
			for ti := range f.spans {
				for pi, ss := range f.spans[ti] {
					if len(ss.List) > 0 {
						b, err := ss.Bytes()
						if err != nil {
							t.Fatal(err)
						}
						inline.Topics[ti].Partitions[pi].RecordBatches = b
					}
				}
			}
			expect := inline.AppendTo(nil)
			got := flatten(t, f.Parts())
			if !bytes.Equal(got, expect) {
				t.Fatalf("%s: streamed encoding differs from kmsg's (%d vs %d bytes)", name, len(got), len(expect))
			}
			// And it decodes to the same response.
			back := kmsg.NewPtrFetchResponse()
			back.Version = version
			if err := back.ReadFrom(got); err != nil {
				t.Fatalf("%s: decode: %v", name, err)
			}
			f.Release()
		}
	}
}

// randomFetchResponse builds a response of random shape whose partitions
// carry random spans of l (several may share segments).
func randomFetchResponse(t *testing.T, rng *rand.Rand, l *log.Log, version int16, tagged bool) *fetchResponse {
	t.Helper()
	r := kmsg.NewPtrFetchResponse()
	r.Version = version
	r.ThrottleMillis = rng.Int32N(1000)
	r.ErrorCode = int16(rng.IntN(2))
	r.SessionID = rng.Int32N(3)
	f := &fetchResponse{FetchResponse: r}
	for ti := range rng.IntN(4) {
		st := kmsg.NewFetchResponseTopic()
		st.Topic = fmt.Sprintf("topic-%d-%s", ti, string(bytes.Repeat([]byte{'x'}, rng.IntN(200))))
		st.TopicID = [16]byte{byte(ti), 1, 2, 3}
		var spans []log.Spans
		for pi := range rng.IntN(5) {
			sp := kmsg.NewFetchResponseTopicPartition()
			sp.Partition = int32(pi)
			sp.ErrorCode = int16(rng.IntN(2))
			sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = rng.Int64(), rng.Int64N(1<<40), int64(rng.IntN(10))
			sp.PreferredReadReplica = -1
			if rng.IntN(2) == 0 {
				sp.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{}
				for range rng.IntN(3) {
					a := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
					a.ProducerID, a.FirstOffset = rng.Int64(), rng.Int64()
					sp.AbortedTransactions = append(sp.AbortedTransactions, a)
				}
			}
			var ss log.Spans
			switch rng.IntN(4) {
			case 0:
				sp.RecordBatches = nil // null record set
			case 1:
				sp.RecordBatches = []byte{}
			default:
				sp.RecordBatches = []byte{}
				var err error
				ss, err = l.ReadSpans(l.StartOffset()+rng.Int64N(l.NextOffset()-l.StartOffset()), 1+rng.IntN(8000), l.NextOffset())
				if err != nil {
					t.Fatal(err)
				}
			}
			if tagged && pi == 0 {
				sp.CurrentLeader.LeaderID, sp.CurrentLeader.LeaderEpoch = 1, 7
			}
			st.Partitions = append(st.Partitions, sp)
			spans = append(spans, ss)
		}
		r.Topics = append(r.Topics, st)
		f.spans = append(f.spans, spans)
	}
	return f
}

// flatten concatenates parts, reading file sections from their files.
func flatten(t *testing.T, parts []server.Part) []byte {
	t.Helper()
	var out []byte
	for _, p := range parts {
		if p.Bytes != nil {
			out = append(out, p.Bytes...)
			continue
		}
		b := make([]byte, p.File.Len)
		if _, err := p.File.File.ReadAt(b, p.File.Off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func cloneTopics(ts []kmsg.FetchResponseTopic) []kmsg.FetchResponseTopic {
	out := append([]kmsg.FetchResponseTopic(nil), ts...)
	for i := range out {
		out[i].Partitions = append([]kmsg.FetchResponseTopicPartition(nil), ts[i].Partitions...)
	}
	return out
}
