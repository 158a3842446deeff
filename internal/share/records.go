package share

// The __share_group_state record format.
//
// Every record restates one key's whole value, so replaying any suffix
// that starts with a snapshot gives the live state, and a null value is a
// tombstone. Keys and values are JSON:
//
//	key ["p", group, topic id (hex), partition]  value {"spso": N, "runs": [[state, count, n], ...]}
//	key ["c", group]                              value {"share.auto.offset.reset": "earliest", ...}
//	key ["g", group]                              value {} (the share group exists)
//
// A partition value lists the window [SPSO, SPEO) run-length encoded: n
// consecutive offsets with one state and delivery count. Acquired records
// are written as Acquired with the count that the answering ShareFetch
// hands out; replay makes them Available again (or Archived at the
// delivery-count limit), as their locks died with the broker.

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/exactly/exactly/internal/group"
)

// Decoder bounds: a record is never trusted to size an allocation.
const (
	maxRunsPerRecord = 1 << 16
	maxWindow        = 1 << 15 // offsets one record may describe (max.record.locks is at most 10000)
	maxKeyBytes      = 1 << 12
)

type partitionKey struct {
	Group     string
	TopicID   [16]byte
	Partition int32
}

type partitionValue struct {
	SPSO int64      `json:"spso"`
	Runs [][3]int64 `json:"runs"`
}

func encodePartitionKey(k partitionKey) []byte {
	b, _ := json.Marshal([]any{"p", k.Group, hex.EncodeToString(k.TopicID[:]), k.Partition})
	return b
}

// groupKV records that a share group exists (or, tombstone, was deleted):
// empty share groups live until DeleteGroups, as in Kafka.
func groupKV(name string, exists bool) group.KV {
	k, _ := json.Marshal([]any{"g", name})
	kv := group.KV{Key: k}
	if exists {
		kv.Value = []byte("{}")
	}
	return kv
}

func encodeConfigKey(group string) []byte {
	b, _ := json.Marshal([]any{"c", group})
	return b
}

// encodePartition restates p.
func encodePartition(p *Partition) []byte {
	v := partitionValue{SPSO: p.SPSO, Runs: [][3]int64{}}
	for _, r := range p.recs {
		n := len(v.Runs)
		if n > 0 && v.Runs[n-1][0] == int64(r.state) && v.Runs[n-1][1] == int64(r.count) {
			v.Runs[n-1][2]++
			continue
		}
		v.Runs = append(v.Runs, [3]int64{int64(r.state), int64(r.count), 1})
	}
	b, _ := json.Marshal(v)
	return b
}

// decoded is one replayed record.
type decoded struct {
	kind   byte // 'p', 'c' or 'g'
	exists bool // 'g': false for a tombstone
	part   partitionKey
	group  string
	window *Partition        // nil: tombstone
	config map[string]string // nil: tombstone
}

var errBadRecord = errors.New("share: malformed __share_group_state record")

// decodeRecord parses one record; limit is the delivery-count limit
// applied to records that were Acquired. Anything malformed is an error:
// the broker must not guess share state.
func decodeRecord(key, value []byte, limit int) (decoded, error) {
	var d decoded
	if len(key) > maxKeyBytes {
		return d, fmt.Errorf("%w: key of %d bytes", errBadRecord, len(key))
	}
	var k []json.RawMessage
	if err := json.Unmarshal(key, &k); err != nil || len(k) < 2 {
		return d, fmt.Errorf("%w: key %q", errBadRecord, key)
	}
	var kind string
	if err := json.Unmarshal(k[0], &kind); err != nil {
		return d, fmt.Errorf("%w: key %q", errBadRecord, key)
	}
	if err := json.Unmarshal(k[1], &d.group); err != nil {
		return d, fmt.Errorf("%w: key %q", errBadRecord, key)
	}
	switch {
	case kind == "c" && len(k) == 2:
		d.kind = 'c'
		if value == nil {
			return d, nil
		}
		if err := json.Unmarshal(value, &d.config); err != nil || d.config == nil {
			return d, fmt.Errorf("%w: config of group %q", errBadRecord, d.group)
		}
		return d, nil
	case kind == "g" && len(k) == 2:
		d.kind = 'g'
		if value != nil {
			var v map[string]json.RawMessage
			if err := json.Unmarshal(value, &v); err != nil || v == nil {
				return d, fmt.Errorf("%w: group record of %q", errBadRecord, d.group)
			}
			d.exists = true
		}
		return d, nil
	case kind == "p" && len(k) == 4:
		d.kind = 'p'
		d.part.Group = d.group
		var id string
		if err := json.Unmarshal(k[2], &id); err != nil {
			return d, fmt.Errorf("%w: key %q", errBadRecord, key)
		}
		raw, err := hex.DecodeString(id)
		if err != nil || len(raw) != 16 {
			return d, fmt.Errorf("%w: topic id in key %q", errBadRecord, key)
		}
		copy(d.part.TopicID[:], raw)
		if err := json.Unmarshal(k[3], &d.part.Partition); err != nil || d.part.Partition < 0 {
			return d, fmt.Errorf("%w: partition in key %q", errBadRecord, key)
		}
		if value == nil {
			return d, nil
		}
		var v partitionValue
		if err := json.Unmarshal(value, &v); err != nil {
			return d, fmt.Errorf("%w: %v", errBadRecord, err)
		}
		if v.SPSO < 0 || len(v.Runs) > maxRunsPerRecord {
			return d, fmt.Errorf("%w: spso %d, %d runs", errBadRecord, v.SPSO, len(v.Runs))
		}
		total := int64(0)
		for _, r := range v.Runs {
			st, count, n := RecordState(r[0]), r[1], r[2]
			if (st != Available && st != Acquired && st != Acknowledged && st != Archived) ||
				count < 0 || count > 1<<15-1 || n < 1 || n > maxWindow {
				return d, fmt.Errorf("%w: run %v", errBadRecord, r)
			}
			total += n
			if total > maxWindow {
				return d, fmt.Errorf("%w: window of more than %d offsets", errBadRecord, maxWindow)
			}
		}
		p := &Partition{Initialized: true, SPSO: v.SPSO, recs: make([]inflight, 0, total)}
		for _, r := range v.Runs {
			for i := int64(0); i < r[2]; i++ {
				rec := inflight{state: RecordState(r[0]), count: int16(r[1])}
				if rec.state == Acquired {
					p.release(&rec, limit)
				}
				p.recs = append(p.recs, rec)
			}
		}
		p.advance()
		p.ev = events{} // a replay's releases are not live transitions
		d.window = p
		return d, nil
	}
	return d, fmt.Errorf("%w: key %q", errBadRecord, key)
}

// CheckRecord validates one __share_group_state record as replay would
// (exactly check-data).
func CheckRecord(key, value []byte) error {
	_, err := decodeRecord(key, value, 1<<15-1)
	return err
}
