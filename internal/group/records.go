package group

// On-disk records of __consumer_offsets.
//
// Plain offset commits use Kafka's own schema (OffsetCommitKey version 1,
// OffsetCommitValue version 3, a null value as tombstone), and so does
// classic group membership (GroupMetadataKey version 2, GroupMetadataValue
// version 3: generation, protocol, leader, members with their subscription
// and assignment; null when the group is deleted), so the topic reads like
// Kafka's to anyone who decodes it. Transactional staging has no
// Kafka equivalent in this shape (Kafka writes transactional batches plus
// control markers per offsets partition; here a transaction completes per
// group), so it uses key versions Kafka never wrote:
//
//	key 1000 txn offset:  int16 1000, int64 producer id, string group, string topic, int32 partition
//	  value:              int16 producer epoch, int64 offset, int32 leader epoch, string metadata, int64 commit ms
//	                      (null: the staged offset is dropped)
//	key 1001 txn marker:  int16 1001, int64 producer id, string group
//	  value:              int8 1 commit / 0 abort
//	key 1002 KIP-848 group: int16 1002, string group
//	  value:              JSON consumerState (null: nobody in the group)
//
// Strings are int16 length + bytes. Every record restates a key's whole
// value, so replaying any suffix of the log that starts at a snapshot gives
// the same state as replaying all of it.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	keyOffsetV0  = 0
	keyOffsetV1  = 1
	keyGroupMeta = 2 // Kafka's group metadata: classic membership
	keyTxnOffset = 1000
	keyTxnMarker = 1001
)

// ErrBadRecord is returned for bytes in __consumer_offsets that do not
// decode; replay stops there rather than guess.
var ErrBadRecord = errors.New("group: undecodable __consumer_offsets record")

type recKind uint8

const (
	recOffset recKind = iota + 1
	recTxnOffset
	recTxnMarker
	recGroupMeta     // classic group membership as of its last completed rebalance
	recConsumerGroup // a KIP-848 group's whole membership state (consumer_persist.go)
	recSkip          // a record kind this broker does not use (KIP-848 group records)
)

// record is one decoded __consumer_offsets record.
type record struct {
	kind      recKind
	group     string
	topic     string
	partition int32
	pid       int64
	delete    bool // tombstone (recOffset, recTxnOffset)
	epoch     int16
	val       Offset
	commit    bool                     // recTxnMarker
	meta      *kmsg.GroupMetadataValue // recGroupMeta (nil with delete)
	cstate    []byte                   // recConsumerGroup: JSON consumerState (nil with delete)
}

// Offset is one committed (or staged) offset with what Kafka stores with it.
type Offset struct {
	Offset      int64
	LeaderEpoch int32
	Metadata    string
	// CommitTime is when the commit was accepted, in Unix milliseconds;
	// offset expiry counts from it.
	CommitTime int64
}

// KV is one record's key and value as stored (Value nil = tombstone).
type KV struct {
	Key, Value []byte
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func (r *record) encode() KV {
	switch r.kind {
	case recOffset:
		k := kmsg.OffsetCommitKey{Version: keyOffsetV1, Group: r.group, Topic: r.topic, Partition: r.partition}
		kv := KV{Key: k.AppendTo(nil)}
		if !r.delete {
			v := kmsg.OffsetCommitValue{Version: 3, Offset: r.val.Offset, LeaderEpoch: r.val.LeaderEpoch,
				Metadata: r.val.Metadata, CommitTimestamp: r.val.CommitTime}
			kv.Value = v.AppendTo(nil)
		}
		return kv
	case recTxnOffset:
		k := binary.BigEndian.AppendUint16(nil, keyTxnOffset)
		k = binary.BigEndian.AppendUint64(k, uint64(r.pid))
		k = appendString(k, r.group)
		k = appendString(k, r.topic)
		k = binary.BigEndian.AppendUint32(k, uint32(r.partition))
		kv := KV{Key: k}
		if !r.delete {
			v := binary.BigEndian.AppendUint16(nil, uint16(r.epoch))
			v = binary.BigEndian.AppendUint64(v, uint64(r.val.Offset))
			v = binary.BigEndian.AppendUint32(v, uint32(r.val.LeaderEpoch))
			v = appendString(v, r.val.Metadata)
			v = binary.BigEndian.AppendUint64(v, uint64(r.val.CommitTime))
			kv.Value = v
		}
		return kv
	case recTxnMarker:
		k := binary.BigEndian.AppendUint16(nil, keyTxnMarker)
		k = binary.BigEndian.AppendUint64(k, uint64(r.pid))
		k = appendString(k, r.group)
		v := []byte{0}
		if r.commit {
			v[0] = 1
		}
		return KV{Key: k, Value: v}
	case recGroupMeta:
		k := kmsg.GroupMetadataKey{Version: keyGroupMeta, Group: r.group}
		kv := KV{Key: k.AppendTo(nil)}
		if !r.delete {
			kv.Value = r.meta.AppendTo(nil)
		}
		return kv
	case recConsumerGroup:
		kv := KV{Key: consumerGroupKey(r.group)}
		if !r.delete {
			kv.Value = r.cstate
		}
		return kv
	}
	panic(fmt.Sprintf("group: encoding record kind %d", r.kind))
}

// reader decodes big-endian fields, remembering the first failure.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n < 0 || len(r.b) < n {
		r.bad = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) str() string {
	n := int(int16(r.u16()))
	return string(r.take(n))
}

func (r *reader) done() bool { return !r.bad && len(r.b) == 0 }

// decodeRecord parses one stored record. Kafka record kinds this broker does
// not use (KIP-848 records another broker might have written) decode as
// recSkip; anything malformed is ErrBadRecord.
func decodeRecord(key, value []byte) (record, error) {
	if len(key) < 2 {
		return record{}, fmt.Errorf("%w: key of %d bytes", ErrBadRecord, len(key))
	}
	switch ver := int16(binary.BigEndian.Uint16(key)); ver {
	case keyOffsetV0, keyOffsetV1:
		var k kmsg.OffsetCommitKey
		if err := k.ReadFrom(key); err != nil {
			return record{}, fmt.Errorf("%w: offset key: %v", ErrBadRecord, err)
		}
		r := record{kind: recOffset, group: k.Group, topic: k.Topic, partition: k.Partition}
		if value == nil {
			r.delete = true
			return r, nil
		}
		var v kmsg.OffsetCommitValue
		if err := v.ReadFrom(value); err != nil {
			return record{}, fmt.Errorf("%w: offset value: %v", ErrBadRecord, err)
		}
		le := v.LeaderEpoch
		if v.Version < 3 {
			le = -1
		}
		r.val = Offset{Offset: v.Offset, LeaderEpoch: le, Metadata: v.Metadata, CommitTime: v.CommitTimestamp}
		return r, nil
	case keyTxnOffset:
		rd := reader{b: key[2:]}
		r := record{kind: recTxnOffset, pid: int64(rd.u64()), group: rd.str(), topic: rd.str(), partition: int32(rd.u32())}
		if !rd.done() {
			return record{}, fmt.Errorf("%w: txn offset key", ErrBadRecord)
		}
		if value == nil {
			r.delete = true
			return r, nil
		}
		vd := reader{b: value}
		r.epoch = int16(vd.u16())
		r.val = Offset{Offset: int64(vd.u64()), LeaderEpoch: int32(vd.u32()), Metadata: vd.str(), CommitTime: int64(vd.u64())}
		if !vd.done() {
			return record{}, fmt.Errorf("%w: txn offset value", ErrBadRecord)
		}
		return r, nil
	case keyTxnMarker:
		rd := reader{b: key[2:]}
		r := record{kind: recTxnMarker, pid: int64(rd.u64()), group: rd.str()}
		if !rd.done() || len(value) != 1 || value[0] > 1 {
			return record{}, fmt.Errorf("%w: txn marker", ErrBadRecord)
		}
		r.commit = value[0] == 1
		return r, nil
	case keyGroupMeta:
		var k kmsg.GroupMetadataKey
		if err := k.ReadFrom(key); err != nil {
			return record{}, fmt.Errorf("%w: group metadata key: %v", ErrBadRecord, err)
		}
		r := record{kind: recGroupMeta, group: k.Group}
		if value == nil {
			r.delete = true
			return r, nil
		}
		v := kmsg.NewGroupMetadataValue()
		if err := v.ReadFrom(value); err != nil {
			return record{}, fmt.Errorf("%w: group metadata value: %v", ErrBadRecord, err)
		}
		r.meta = &v
		return r, nil
	case keyConsumerGroup:
		rd := reader{b: key[2:]}
		r := record{kind: recConsumerGroup, group: rd.str()}
		if !rd.done() {
			return record{}, fmt.Errorf("%w: consumer group key", ErrBadRecord)
		}
		if value == nil {
			r.delete = true
			return r, nil
		}
		var st consumerState
		if err := json.Unmarshal(value, &st); err != nil {
			return record{}, fmt.Errorf("%w: consumer group %s: %v", ErrBadRecord, r.group, err)
		}
		r.cstate = value
		return r, nil
	default:
		if ver > keyGroupMeta && ver < keyTxnOffset {
			return record{kind: recSkip}, nil
		}
		return record{}, fmt.Errorf("%w: key version %d", ErrBadRecord, ver)
	}
}

// CheckRecord reports whether a stored __consumer_offsets record decodes
// (for offline verification).
func CheckRecord(key, value []byte) error {
	_, err := decodeRecord(key, value)
	return err
}
