package txn

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/exactly/exactly/internal/record"
)

// Record keys: what a record describes.
const (
	keyTxn  = 't' // followed by the transactional id
	keyPIDs = 'p' // the producer id reservation
)

// recordVersion is the value format version; readers reject newer ones
// rather than misread them.
const recordVersion = 1

type pidValue struct {
	V   int   `json:"v"`
	End int64 `json:"end"`
}

type txnValue struct {
	V int `json:"v"`
	*Meta
}

func encodeRecord(r Record) (key, value []byte, err error) {
	if r.Txn == nil {
		value, err = json.Marshal(pidValue{V: recordVersion, End: r.PIDBlockEnd})
		return []byte{keyPIDs}, value, err
	}
	value, err = json.Marshal(txnValue{V: recordVersion, Meta: r.Txn})
	return append([]byte{keyTxn}, r.Txn.ID...), value, err
}

func decodeRecord(key, value []byte) (Record, error) {
	if len(key) == 0 {
		return Record{}, errors.New("transaction log record without a key")
	}
	switch key[0] {
	case keyPIDs:
		var v pidValue
		if err := json.Unmarshal(value, &v); err != nil {
			return Record{}, fmt.Errorf("producer id record: %w", err)
		}
		if v.V != recordVersion {
			return Record{}, fmt.Errorf("producer id record version %d is not supported", v.V)
		}
		return Record{PIDBlockEnd: v.End}, nil
	case keyTxn:
		v := txnValue{Meta: &Meta{}}
		if err := json.Unmarshal(value, &v); err != nil {
			return Record{}, fmt.Errorf("transaction record %q: %w", key[1:], err)
		}
		if v.V != recordVersion {
			return Record{}, fmt.Errorf("transaction record version %d is not supported", v.V)
		}
		if v.Meta.ID != string(key[1:]) {
			return Record{}, fmt.Errorf("transaction record key %q holds id %q", key[1:], v.Meta.ID)
		}
		return Record{Txn: v.Meta}, nil
	}
	return Record{}, fmt.Errorf("unknown transaction log record key %q", key)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// EncodeBatch packs records into one uncompressed RecordBatch v2 (no
// producer id: the coordinator's own writes need no idempotence, the
// single writer and the mutex order them), so the log package stores,
// recovers and indexes them like any other batch.
func EncodeBatch(recs []Record, timestampMs int64) ([]byte, error) {
	if len(recs) == 0 {
		return nil, errors.New("empty transaction log batch")
	}
	b := make([]byte, record.HeaderSize, record.HeaderSize+128*len(recs))
	var rec []byte
	for i, r := range recs {
		key, value, err := encodeRecord(r)
		if err != nil {
			return nil, err
		}
		rec = rec[:0]
		rec = append(rec, 0)                     // attributes
		rec = binary.AppendVarint(rec, 0)        // timestamp delta
		rec = binary.AppendVarint(rec, int64(i)) // offset delta
		rec = binary.AppendVarint(rec, int64(len(key)))
		rec = append(rec, key...)
		rec = binary.AppendVarint(rec, int64(len(value)))
		rec = append(rec, value...)
		rec = binary.AppendVarint(rec, 0) // headers
		b = binary.AppendVarint(b, int64(len(rec)))
		b = append(b, rec...)
	}
	be := binary.BigEndian
	be.PutUint64(b[0:], 0)                    // base offset: stamped by the log
	be.PutUint32(b[8:], uint32(len(b)-12))    // batch length
	be.PutUint32(b[12:], 0)                   // partition leader epoch
	b[16] = 2                                 // magic
	be.PutUint16(b[21:], 0)                   // attributes
	be.PutUint32(b[23:], uint32(len(recs)-1)) // last offset delta
	be.PutUint64(b[27:], uint64(timestampMs)) // first timestamp
	be.PutUint64(b[35:], uint64(timestampMs)) // max timestamp
	be.PutUint64(b[43:], ^uint64(0))          // producer id -1
	be.PutUint16(b[51:], ^uint16(0))          // producer epoch -1
	be.PutUint32(b[53:], ^uint32(0))          // base sequence -1
	be.PutUint32(b[57:], uint32(len(recs)))   // record count
	be.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	return b, nil
}

// DecodeBatches calls fn for every record in a run of batches read from
// the log.
func DecodeBatches(data []byte, fn func(offset int64, r Record) error) error {
	_, err := record.Split(data, func(h record.Header, batch []byte) error {
		var derr error
		ferr := record.ForEach(h, batch, func(rec record.Record) bool {
			var r Record
			r, derr = decodeRecord(rec.Key, rec.Value)
			if derr == nil {
				derr = fn(h.BaseOffset+int64(rec.OffsetDelta), r)
			}
			return derr == nil
		})
		if ferr != nil {
			return ferr
		}
		return derr
	})
	return err
}
