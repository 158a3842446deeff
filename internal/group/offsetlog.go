package group

// Reading and writing __consumer_offsets batches.

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/exactly/exactly/internal/partition"
	rec "github.com/exactly/exactly/internal/record"
)

// maxBatchBytes caps one appended batch; a snapshot is written as several.
const maxBatchBytes = 512 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeBatch builds an uncompressed RecordBatch v2 (no producer id) of kvs.
func encodeBatch(kvs []KV, ts int64) []byte {
	b := make([]byte, rec.HeaderSize, rec.HeaderSize+64*len(kvs))
	be := binary.BigEndian
	b[16] = 2 // magic
	be.PutUint32(b[23:], uint32(len(kvs)-1))
	be.PutUint64(b[27:], uint64(ts))
	be.PutUint64(b[35:], uint64(ts))
	be.PutUint64(b[43:], ^uint64(0)) // producer id -1
	be.PutUint16(b[51:], ^uint16(0)) // producer epoch -1
	be.PutUint32(b[53:], ^uint32(0)) // base sequence -1
	be.PutUint32(b[57:], uint32(len(kvs)))
	var rb []byte
	for i, kv := range kvs {
		rb = rb[:0]
		rb = append(rb, 0)                     // attributes
		rb = binary.AppendVarint(rb, 0)        // timestamp delta
		rb = binary.AppendVarint(rb, int64(i)) // offset delta
		rb = binary.AppendVarint(rb, int64(len(kv.Key)))
		rb = append(rb, kv.Key...)
		if kv.Value == nil {
			rb = binary.AppendVarint(rb, -1)
		} else {
			rb = binary.AppendVarint(rb, int64(len(kv.Value)))
			rb = append(rb, kv.Value...)
		}
		rb = binary.AppendVarint(rb, 0) // headers
		b = binary.AppendVarint(b, int64(len(rb)))
		b = append(b, rb...)
	}
	be.PutUint32(b[8:], uint32(len(b)-12))
	be.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	return b
}

// appendRecords appends kvs in batches of bounded size and returns the
// offset after the last one.
func appendRecords(p partition.StateLog, kvs []KV, now time.Time) (int64, error) {
	end := p.LogEndOffset()
	for len(kvs) > 0 {
		n, size := 0, 0
		for n < len(kvs) && (n == 0 || size+len(kvs[n].Key)+len(kvs[n].Value)+16 <= maxBatchBytes) {
			size += len(kvs[n].Key) + len(kvs[n].Value) + 16
			n++
		}
		batch := encodeBatch(kvs[:n], now.UnixMilli())
		h, err := rec.ParseHeader(batch)
		if err != nil {
			return 0, fmt.Errorf("group: encoding offsets batch: %w", err)
		}
		res, err := p.Append(batch, h)
		if err != nil {
			return 0, err
		}
		end = res.LastOffset + 1
		kvs = kvs[n:]
	}
	return end, nil
}

// replayPartition feeds every durable record of p, in order, to fn. It
// returns the records fed and the control batches skipped: the coordinator
// writes none, so any there were forged by a client (WriteTxnMarkers before
// it refused internal topics) and carry nothing to replay.
func replayPartition(p partition.StateLog, fn func(key, value []byte) error) (n, skipped int, err error) {
	start, hw := p.LogStartOffset(), p.HighWatermark()
	for off := start; off < hw; {
		data, err := p.Read(off, 4<<20, false)
		if err != nil {
			return n, skipped, fmt.Errorf("group: reading __consumer_offsets at %d: %w", off, err)
		}
		if len(data) == 0 {
			break
		}
		next := off
		_, err = rec.Split(data, func(h rec.Header, batch []byte) error {
			next = h.LastOffset() + 1
			if h.IsControl() {
				skipped++
				return nil
			}
			var ferr error
			perr := rec.ForEach(h, batch, func(r rec.Record) bool {
				if h.BaseOffset+int64(r.OffsetDelta) < start {
					return true
				}
				n++
				ferr = fn(r.Key, r.Value)
				return ferr == nil
			})
			if ferr != nil {
				return fmt.Errorf("offset %d: %w", h.BaseOffset, ferr)
			}
			return perr
		})
		if err != nil {
			return n, skipped, fmt.Errorf("group: replaying __consumer_offsets: %w", err)
		}
		if next <= off {
			break
		}
		off = next
	}
	return n, skipped, nil
}

// AppendKVs appends kvs to a coordinator-owned internal log in batches of
// bounded size (uncompressed, no producer id) and returns the offset after
// the last; the share coordinator writes __share_group_state this way.
func AppendKVs(p partition.StateLog, kvs []KV, now time.Time) (int64, error) {
	return appendRecords(p, kvs, now)
}

// ReplayLog feeds every durable record of a coordinator-owned internal log
// to fn in order (control batches skipped and counted, as for
// __consumer_offsets).
func ReplayLog(p partition.StateLog, fn func(key, value []byte) error) (n, skipped int, err error) {
	return replayPartition(p, fn)
}
