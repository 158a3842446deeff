// Package replica replicates a partition with its own raft group
// (quorum.Group): the group's committed entries, applied in order on every
// replica, are the partition's log. An entry is a record batch as the
// leader received it, a transaction marker, a DeleteRecords or a producer
// expiry; each carries the leader's clock, so the producer-state decisions
// taken while applying (duplicates, sequence gaps, expiry, eviction) come
// out the same on every replica, and so does every offset.
package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind is what an entry asks the partition to do.
type Kind byte

// Entry kinds.
const (
	KindBatch         Kind = 1
	KindMarker        Kind = 2
	KindDeleteRecords Kind = 3
	KindExpire        Kind = 4
)

// headerBytes is the kind and the proposer's clock (unix ms, int64 BE).
const headerBytes = 1 + 8

// markerBytes: producer id (8), producer epoch (2), commit (1),
// coordinator epoch (4), first offset (8; -1 for any open transaction).
const markerBytes = 8 + 2 + 1 + 4 + 8

// Marker is a COMMIT or ABORT marker to write.
type Marker struct {
	ProducerID       int64
	ProducerEpoch    int16
	Commit           bool
	CoordinatorEpoch int32
	// FirstOffset, when >= 0, writes the marker only while the producer's
	// open transaction starts there (a marker an administrator asked for).
	FirstOffset int64
}

// Entry is one decoded group entry.
type Entry struct {
	Kind  Kind
	NowMs int64
	// Batch is the record batch (KindBatch); it aliases the entry's data.
	Batch  []byte
	Marker Marker // KindMarker
	Offset int64  // KindDeleteRecords: the new log start offset (-1: the HW)
}

var errMalformed = errors.New("replica: malformed entry")

// appendHeader starts an entry of kind at nowMs in buf.
func appendHeader(buf []byte, kind Kind, nowMs int64) []byte {
	buf = append(buf, byte(kind))
	return binary.BigEndian.AppendUint64(buf, uint64(nowMs))
}

// EncodeBatch is the entry of a record batch.
func EncodeBatch(nowMs int64, batch []byte) []byte {
	b := make([]byte, 0, headerBytes+len(batch))
	b = appendHeader(b, KindBatch, nowMs)
	return append(b, batch...)
}

// EncodeMarker is the entry of a transaction marker.
func EncodeMarker(nowMs int64, m Marker) []byte {
	b := make([]byte, 0, headerBytes+markerBytes)
	b = appendHeader(b, KindMarker, nowMs)
	b = binary.BigEndian.AppendUint64(b, uint64(m.ProducerID))
	b = binary.BigEndian.AppendUint16(b, uint16(m.ProducerEpoch))
	c := byte(0)
	if m.Commit {
		c = 1
	}
	b = append(b, c)
	b = binary.BigEndian.AppendUint32(b, uint32(m.CoordinatorEpoch))
	return binary.BigEndian.AppendUint64(b, uint64(m.FirstOffset))
}

// EncodeDeleteRecords is the entry raising the log start offset.
func EncodeDeleteRecords(nowMs, offset int64) []byte {
	b := appendHeader(make([]byte, 0, headerBytes+8), KindDeleteRecords, nowMs)
	return binary.BigEndian.AppendUint64(b, uint64(offset))
}

// EncodeExpire is the entry expiring idle producers as of nowMs.
func EncodeExpire(nowMs int64) []byte {
	return appendHeader(make([]byte, 0, headerBytes), KindExpire, nowMs)
}

// Decode decodes an entry. Entries come from the group's log, written by
// this code on some replica; a malformed one is refused rather than
// guessed at.
func Decode(data []byte) (Entry, error) {
	if len(data) < headerBytes {
		return Entry{}, fmt.Errorf("%w: %d bytes", errMalformed, len(data))
	}
	e := Entry{Kind: Kind(data[0]), NowMs: int64(binary.BigEndian.Uint64(data[1:9]))}
	body := data[headerBytes:]
	switch e.Kind {
	case KindBatch:
		if len(body) == 0 {
			return Entry{}, fmt.Errorf("%w: empty batch", errMalformed)
		}
		e.Batch = body
	case KindMarker:
		if len(body) != markerBytes {
			return Entry{}, fmt.Errorf("%w: marker of %d bytes", errMalformed, len(body))
		}
		be := binary.BigEndian
		e.Marker = Marker{
			ProducerID:       int64(be.Uint64(body[0:])),
			ProducerEpoch:    int16(be.Uint16(body[8:])),
			CoordinatorEpoch: int32(be.Uint32(body[11:])),
			FirstOffset:      int64(be.Uint64(body[15:])),
		}
		switch body[10] {
		case 0:
		case 1:
			e.Marker.Commit = true
		default:
			return Entry{}, fmt.Errorf("%w: marker commit byte %d", errMalformed, body[10])
		}
	case KindDeleteRecords:
		if len(body) != 8 {
			return Entry{}, fmt.Errorf("%w: delete-records of %d bytes", errMalformed, len(body))
		}
		e.Offset = int64(binary.BigEndian.Uint64(body))
	case KindExpire:
		if len(body) != 0 {
			return Entry{}, fmt.Errorf("%w: expiry with %d bytes", errMalformed, len(body))
		}
	default:
		return Entry{}, fmt.Errorf("%w: kind %d", errMalformed, e.Kind)
	}
	return e, nil
}
