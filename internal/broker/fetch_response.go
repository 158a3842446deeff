package broker

import (
	"encoding/binary"

	"github.com/exactly/exactly/internal/log"
	"github.com/exactly/exactly/internal/server"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchResponse is a Fetch answer whose record batches stay in the segment
// files until the connection's writer sends them (server.Streamed): from
// file to socket with sendfile on plaintext listeners, through a small
// buffer on TLS ones, never copied into a response-sized buffer. Every
// partition's RecordBatches is empty while its bytes are in spans.
type fetchResponse struct {
	*kmsg.FetchResponse
	// spans[t][p] are the batches of Topics[t].Partitions[p].
	spans [][]log.Spans
}

// recordBytes is the size of the record batches the response carries.
func (f *fetchResponse) recordBytes() int {
	n := 0
	for _, ps := range f.spans {
		for _, ss := range ps {
			n += int(ss.Len())
		}
	}
	return n
}

// topicBytes is the record bytes of topic t.
func (f *fetchResponse) topicBytes(t int) int {
	n := 0
	for _, ss := range f.spans[t] {
		n += int(ss.Len())
	}
	return n
}

// dropData answers with no topics at all (a throttled fetch) and unpins
// the files.
func (f *fetchResponse) dropData() {
	f.Release()
	f.Topics = nil
}

// Release unpins every span; safe to call more than once.
func (f *fetchResponse) Release() {
	for _, ps := range f.spans {
		for _, ss := range ps {
			ss.Release()
		}
	}
	f.spans = nil
}

// AppendTo encodes the response with its record batches read into it, for
// any caller other than the streaming writer (which uses Parts).
func (f *fetchResponse) AppendTo(dst []byte) []byte {
	f.materialize()
	return f.FetchResponse.AppendTo(dst)
}

// materialize reads every span into its partition's RecordBatches and
// releases the spans. A read error leaves that partition empty: the bytes
// were CRC-checked when the spans were taken, so only an I/O failure of a
// pinned file gets here.
func (f *fetchResponse) materialize() {
	for t, ps := range f.spans {
		for p, ss := range ps {
			if len(ss.List) == 0 {
				continue
			}
			if b, err := ss.Bytes(); err == nil {
				f.Topics[t].Partitions[p].RecordBatches = b
			}
		}
	}
	f.Release()
}

// Parts encodes the response body with each partition's batches as file
// sections. It produces exactly the bytes kmsg's AppendTo would for the
// same response with the batches inline (fetch_response_test.go checks
// this for every version); fields it does not encode itself (tagged
// fields this broker never sets) make it fall back to AppendTo.
func (f *fetchResponse) Parts() []server.Part {
	if !f.plain() {
		return []server.Part{{Bytes: f.AppendTo(nil)}}
	}
	v := f.Version
	flex := v >= 12
	var parts []server.Part
	b := make([]byte, 0, 256)
	if v >= 1 {
		b = binary.BigEndian.AppendUint32(b, uint32(f.ThrottleMillis))
	}
	if v >= 7 {
		b = binary.BigEndian.AppendUint16(b, uint16(f.ErrorCode))
		b = binary.BigEndian.AppendUint32(b, uint32(f.SessionID))
	}
	b = appendArrayLen(b, len(f.Topics), flex)
	for ti := range f.Topics {
		t := &f.Topics[ti]
		if v <= 12 {
			if flex {
				b = binary.AppendUvarint(b, uint64(len(t.Topic))+1)
			} else {
				b = binary.BigEndian.AppendUint16(b, uint16(len(t.Topic)))
			}
			b = append(b, t.Topic...)
		}
		if v >= 13 {
			b = append(b, t.TopicID[:]...)
		}
		b = appendArrayLen(b, len(t.Partitions), flex)
		for pi := range t.Partitions {
			p := &t.Partitions[pi]
			b = binary.BigEndian.AppendUint32(b, uint32(p.Partition))
			b = binary.BigEndian.AppendUint16(b, uint16(p.ErrorCode))
			b = binary.BigEndian.AppendUint64(b, uint64(p.HighWatermark))
			b = binary.BigEndian.AppendUint64(b, uint64(p.LastStableOffset))
			if v >= 5 {
				b = binary.BigEndian.AppendUint64(b, uint64(p.LogStartOffset))
			}
			switch {
			case p.AbortedTransactions == nil && flex:
				b = append(b, 0)
			case p.AbortedTransactions == nil:
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			default:
				b = appendArrayLen(b, len(p.AbortedTransactions), flex)
				for _, a := range p.AbortedTransactions {
					b = binary.BigEndian.AppendUint64(b, uint64(a.ProducerID))
					b = binary.BigEndian.AppendUint64(b, uint64(a.FirstOffset))
					if flex {
						b = append(b, 0) // no tagged fields
					}
				}
			}
			if v >= 11 {
				b = binary.BigEndian.AppendUint32(b, uint32(p.PreferredReadReplica))
			}
			var ss log.Spans
			if ti < len(f.spans) && pi < len(f.spans[ti]) {
				ss = f.spans[ti][pi]
			}
			n := len(p.RecordBatches) + int(ss.Len())
			switch {
			case p.RecordBatches == nil && len(ss.List) == 0 && flex:
				b = append(b, 0)
			case p.RecordBatches == nil && len(ss.List) == 0:
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			case flex:
				b = binary.AppendUvarint(b, uint64(n)+1)
			default:
				b = binary.BigEndian.AppendUint32(b, uint32(n))
			}
			b = append(b, p.RecordBatches...)
			if len(ss.List) > 0 {
				parts = append(parts, server.Part{Bytes: b})
				for _, s := range ss.List {
					parts = append(parts, server.Part{File: server.FileSection{File: s.File(), Off: s.Pos, Len: s.Len}})
				}
				b = make([]byte, 0, 256)
			}
			if flex {
				b = append(b, 0) // partition: no tagged fields
			}
		}
		if flex {
			b = append(b, 0) // topic: no tagged fields
		}
	}
	if flex {
		b = append(b, 0) // response: no tagged fields
	}
	return append(parts, server.Part{Bytes: b})
}

// plain reports whether Parts can encode the response itself: a version
// it knows and none of the tagged fields it leaves out.
func (f *fetchResponse) plain() bool {
	if f.Version < 4 || f.Version > 16 || f.UnknownTags.Len() > 0 || len(f.Brokers) > 0 {
		return false
	}
	def := kmsg.NewFetchResponseTopicPartition()
	for _, t := range f.Topics {
		if t.UnknownTags.Len() > 0 {
			return false
		}
		for _, p := range t.Partitions {
			if p.DivergingEpoch.Epoch != def.DivergingEpoch.Epoch || p.DivergingEpoch.EndOffset != def.DivergingEpoch.EndOffset ||
				p.DivergingEpoch.UnknownTags.Len() > 0 ||
				p.CurrentLeader.LeaderID != def.CurrentLeader.LeaderID || p.CurrentLeader.LeaderEpoch != def.CurrentLeader.LeaderEpoch ||
				p.CurrentLeader.UnknownTags.Len() > 0 ||
				p.SnapshotID.EndOffset != def.SnapshotID.EndOffset || p.SnapshotID.Epoch != def.SnapshotID.Epoch ||
				p.SnapshotID.UnknownTags.Len() > 0 || p.UnknownTags.Len() > 0 {
				return false
			}
			for _, a := range p.AbortedTransactions {
				if a.UnknownTags.Len() > 0 {
					return false
				}
			}
		}
	}
	return true
}

// appendArrayLen appends an array length: int32, or for flexible versions
// an unsigned varint of length+1.
func appendArrayLen(b []byte, n int, flex bool) []byte {
	if flex {
		return binary.AppendUvarint(b, uint64(n)+1)
	}
	return binary.BigEndian.AppendUint32(b, uint32(n))
}
