// Package producerstate keeps, per partition, what the broker knows about
// each idempotent or transactional producer: its current epoch, the sequence
// ranges and offsets of its last five batches (so a retried batch is
// answered with its original offsets instead of being appended twice), and
// the first offset of its open transaction (which bounds the last stable
// offset). It also keeps the aborted-transaction index that read_committed
// fetches return.
//
// State is a pure function of the log: Apply is called for every batch in
// offset order, both when appending and when replaying after a restart, so
// a crash can never leave the state and the log disagreeing. Snapshots only
// shorten replay and keep producers whose batches retention has deleted.
package producerstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/exactly/exactly/internal/record"
)

// MaxBatches is how many recent batches per producer are remembered for
// duplicate detection: the producer's max.in.flight.requests limit.
const MaxBatches = 5

// Errors from Check; the broker maps them to Kafka codes.
var (
	ErrOutOfOrderSequence = errors.New("out of order sequence number")
	ErrInvalidEpoch       = errors.New("invalid producer epoch")
	ErrUnknownProducer    = errors.New("unknown producer id")
	ErrInvalidTxnState    = errors.New("invalid transaction state")
	// ErrTooManyProducers refuses a new producer on a partition whose
	// state is full of producers active too recently to forget.
	ErrTooManyProducers = errors.New("too many producers on this partition")
)

// BatchMeta is one remembered batch.
type BatchMeta struct {
	FirstSeq, LastSeq      int32
	BaseOffset, LastOffset int64
}

// Producer is one producer's state on this partition.
type Producer struct {
	ID    int64
	Epoch int16
	// Batches holds the last MaxBatches batches of the current epoch,
	// oldest first.
	Batches []BatchMeta
	// TxnFirstOffset is the first offset of the open transaction, or -1.
	TxnFirstOffset int64
	// LastTimestamp is the max timestamp of the producer's last batch (ms),
	// used for expiration as in Kafka: a timestamp in the log, so expiry
	// after a replay picks the same producers.
	LastTimestamp int64
	// CoordinatorEpoch is the coordinator epoch of the last marker.
	CoordinatorEpoch int32
}

func (p *Producer) lastSeq() (int32, bool) {
	if len(p.Batches) == 0 {
		return 0, false
	}
	return p.Batches[len(p.Batches)-1].LastSeq, true
}

// AbortedTxn is one entry of the aborted-transaction index: the producer
// and the offsets from its transaction's first batch to its ABORT marker.
type AbortedTxn struct {
	ProducerID  int64
	FirstOffset int64
	LastOffset  int64
}

// State is one partition's producer state. It is not safe for concurrent
// use: the partition serializes Check/Apply under its append lock.
type State struct {
	producers map[int64]*Producer
	aborted   []AbortedTxn // in marker (LastOffset) order
	limits    Limits
}

// Limits bound a partition's producer state; zero values mean no bound.
type Limits struct {
	// MaxProducers caps the producers kept. A new producer arriving when
	// full evicts the least recently active one without an open
	// transaction, if that one has been idle at least EvictIdleMs;
	// otherwise Check refuses it (ErrTooManyProducers).
	MaxProducers int
	// EvictIdleMs is how long a producer must have been idle before a new
	// one may evict it: longer than any client retries a batch, so no
	// live producer loses its duplicate detection to an attacker's ids.
	EvictIdleMs int64
	// NowMs, if set, caps a batch's timestamp when it becomes the
	// producer's clock: a client stamping the future would otherwise
	// never expire nor be evicted. Timestamps up to now are kept as they
	// are, so a replay computes the same clocks.
	NowMs func() int64
}

// New returns empty state.
func New() *State { return &State{producers: map[int64]*Producer{}} }

// SetLimits sets the bounds Check and Apply keep from now on.
func (s *State) SetLimits(l Limits) { s.limits = l }

// Len is the number of producers kept.
func (s *State) Len() int { return len(s.producers) }

// full reports whether a new producer needs room made first.
func (s *State) full() bool {
	return s.limits.MaxProducers > 0 && len(s.producers) >= s.limits.MaxProducers
}

// leastRecent is the producer without an open transaction whose last
// batch is oldest (ties: smallest id, so a replay picks the same one), or
// nil if every producer has a transaction open.
func (s *State) leastRecent() *Producer {
	var out *Producer
	for _, p := range s.producers {
		if p.TxnFirstOffset >= 0 {
			continue
		}
		if out == nil || p.LastTimestamp < out.LastTimestamp || (p.LastTimestamp == out.LastTimestamp && p.ID < out.ID) {
			out = p
		}
	}
	return out
}

// Check decides whether a producer's batch may be appended. It returns the
// original batch when h is a retry of one of the last MaxBatches batches
// (the caller answers with its offsets and appends nothing), or an error:
// ErrInvalidEpoch for a stale epoch, ErrOutOfOrderSequence for a gap or a
// new epoch that does not start at sequence 0, ErrUnknownProducer for a
// producer this partition has no state for that does not start at 0,
// ErrInvalidTxnState for a non-transactional batch inside an open
// transaction.
//
// A new producer arriving when the state is full (Limits) is
// ErrTooManyProducers unless the least recently active producer without an
// open transaction has been idle since before nowMs − EvictIdleMs; Apply
// then evicts that one.
func (s *State) Check(h *record.Header, nowMs int64) (*BatchMeta, error) {
	if !h.HasProducerID() {
		return nil, nil
	}
	p, ok := s.producers[h.ProducerID]
	if !ok {
		if h.BaseSequence != 0 {
			return nil, fmt.Errorf("%w: producer %d is unknown to this partition and its batch starts at sequence %d", ErrUnknownProducer, h.ProducerID, h.BaseSequence)
		}
		if s.full() {
			if old := s.leastRecent(); old == nil || nowMs-old.LastTimestamp < s.limits.EvictIdleMs {
				return nil, fmt.Errorf("%w: %d producers, none idle for %d ms without an open transaction", ErrTooManyProducers, len(s.producers), s.limits.EvictIdleMs)
			}
		}
		return nil, nil
	}
	switch {
	case h.ProducerEpoch < p.Epoch:
		return nil, fmt.Errorf("%w: producer %d epoch %d is older than the current %d", ErrInvalidEpoch, h.ProducerID, h.ProducerEpoch, p.Epoch)
	case h.ProducerEpoch > p.Epoch:
		if h.BaseSequence != 0 {
			return nil, fmt.Errorf("%w: producer %d new epoch %d starts at sequence %d, not 0", ErrOutOfOrderSequence, h.ProducerID, h.ProducerEpoch, h.BaseSequence)
		}
		return nil, nil
	}
	lastSeq := h.LastSequence()
	for i := range p.Batches {
		b := &p.Batches[i]
		if b.FirstSeq == h.BaseSequence && b.LastSeq == lastSeq {
			dup := *b
			return &dup, nil
		}
	}
	if p.TxnFirstOffset >= 0 && !h.IsTransactional() {
		return nil, fmt.Errorf("%w: producer %d sent a non-transactional batch inside an open transaction", ErrInvalidTxnState, h.ProducerID)
	}
	if last, ok := p.lastSeq(); ok {
		if h.BaseSequence != record.AddSequence(last, 1) {
			return nil, fmt.Errorf("%w: producer %d epoch %d expected sequence %d, got %d", ErrOutOfOrderSequence, h.ProducerID, h.ProducerEpoch, record.AddSequence(last, 1), h.BaseSequence)
		}
	} else if h.BaseSequence != 0 {
		// Nothing written in this epoch yet (only a marker that bumped it).
		return nil, fmt.Errorf("%w: producer %d epoch %d must start at sequence 0, got %d", ErrOutOfOrderSequence, h.ProducerID, h.ProducerEpoch, h.BaseSequence)
	}
	return nil, nil
}

// Apply records a batch that is now in the log at h.BaseOffset (appended
// or replayed). For control batches, controlType is 0 (abort) or 1
// (commit) and coordinatorEpoch comes from the marker's value. A new
// producer arriving when the state is full evicts the least recently
// active one without an open transaction — the one Check judged idle
// enough, and on replay the same one, whatever the time — and Apply
// returns how many it evicted.
func (s *State) Apply(h *record.Header, controlType int16, coordinatorEpoch int32) (evicted int) {
	if !h.HasProducerID() {
		return 0
	}
	p, ok := s.producers[h.ProducerID]
	if !ok {
		if s.full() {
			if old := s.leastRecent(); old != nil {
				delete(s.producers, old.ID)
				evicted++
			}
		}
		p = &Producer{ID: h.ProducerID, Epoch: h.ProducerEpoch, TxnFirstOffset: -1}
		s.producers[h.ProducerID] = p
	}
	if h.ProducerEpoch > p.Epoch {
		p.Epoch = h.ProducerEpoch
		p.Batches = p.Batches[:0]
	}
	ts := h.MaxTimestamp
	if s.limits.NowMs != nil {
		ts = min(ts, s.limits.NowMs())
	}
	if ts > p.LastTimestamp {
		p.LastTimestamp = ts
	}
	if h.IsControl() {
		if p.TxnFirstOffset >= 0 && controlType == 0 {
			s.aborted = append(s.aborted, AbortedTxn{ProducerID: p.ID, FirstOffset: p.TxnFirstOffset, LastOffset: h.BaseOffset})
		}
		p.TxnFirstOffset = -1
		p.CoordinatorEpoch = coordinatorEpoch
		return evicted
	}
	if h.IsTransactional() && p.TxnFirstOffset < 0 {
		p.TxnFirstOffset = h.BaseOffset
	}
	if len(p.Batches) == MaxBatches {
		copy(p.Batches, p.Batches[1:])
		p.Batches = p.Batches[:MaxBatches-1]
	}
	p.Batches = append(p.Batches, BatchMeta{FirstSeq: h.BaseSequence, LastSeq: h.LastSequence(), BaseOffset: h.BaseOffset, LastOffset: h.LastOffset()})
	return evicted
}

// FirstUnstableOffset is the smallest first offset of an open transaction,
// or -1 if none is open.
func (s *State) FirstUnstableOffset() int64 {
	first := int64(-1)
	for _, p := range s.producers {
		if p.TxnFirstOffset >= 0 && (first < 0 || p.TxnFirstOffset < first) {
			first = p.TxnFirstOffset
		}
	}
	return first
}

// OpenTxn returns the first offset of producer id's open transaction, or -1.
func (s *State) OpenTxn(id int64) int64 {
	if p, ok := s.producers[id]; ok {
		return p.TxnFirstOffset
	}
	return -1
}

// Epoch returns producer id's current epoch, if the state holds it.
func (s *State) Epoch(id int64) (int16, bool) {
	if p, ok := s.producers[id]; ok {
		return p.Epoch, true
	}
	return 0, false
}

// Known reports whether the state holds producer id.
func (s *State) Known(id int64) bool {
	_, ok := s.producers[id]
	return ok
}

// Aborted returns the aborted-transaction index (shared; do not modify).
func (s *State) Aborted() []AbortedTxn { return s.aborted }

// Producers returns copies of every producer's state, by id.
func (s *State) Producers() []Producer {
	out := make([]Producer, 0, len(s.producers))
	for _, p := range s.producers {
		c := *p
		c.Batches = append([]BatchMeta(nil), p.Batches...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// DropAborted removes the aborted-index entry of producerID's transaction
// whose ABORT marker is at markerOffset, and reports whether there was one.
// The log cleaner calls it once no record of that transaction is left, so
// that the marker itself can go afterwards: a reader given the entry
// without its marker would skip the producer's later records.
func (s *State) DropAborted(producerID, markerOffset int64) bool {
	for i, a := range s.aborted {
		if a.ProducerID == producerID && a.LastOffset == markerOffset {
			s.aborted = append(s.aborted[:i:i], s.aborted[i+1:]...)
			return true
		}
	}
	return false
}

// TrimBefore drops aborted-index entries that end below the log start.
func (s *State) TrimBefore(logStart int64) {
	i := 0
	for i < len(s.aborted) && s.aborted[i].LastOffset < logStart {
		i++
	}
	if i > 0 {
		s.aborted = append([]AbortedTxn(nil), s.aborted[i:]...)
	}
}

// Expire forgets producers idle since before cutoff (ms) with no open
// transaction: Kafka's producer.id.expiration.ms. A producer with an open
// transaction is never expired, or its transaction could never be bounded.
// It returns how many were forgotten.
func (s *State) Expire(cutoff int64) int {
	n := 0
	for id, p := range s.producers {
		if p.TxnFirstOffset < 0 && p.LastTimestamp < cutoff {
			delete(s.producers, id)
			n++
		}
	}
	return n
}

// AbortedInRange returns the aborted transactions a fetch of [from, to)
// must report, sorted by first offset (clients rely on that order).
func AbortedInRange(aborted []AbortedTxn, from, to int64) []AbortedTxn {
	var out []AbortedTxn
	// Entries are in LastOffset order: skip those that ended before from.
	i := sort.Search(len(aborted), func(i int) bool { return aborted[i].LastOffset >= from })
	for ; i < len(aborted); i++ {
		if a := aborted[i]; a.FirstOffset < to {
			out = append(out, a)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].FirstOffset < out[j].FirstOffset })
	return out
}

// snapshotMagic opens a snapshot; the format is versioned by it.
var snapshotMagic = [8]byte{'E', 'X', 'P', 'S', 'N', 'A', 'P', 1}

// Encode serializes the state as of log offset `offset` (everything below
// it applied).
func (s *State) Encode(offset int64) []byte {
	be := binary.BigEndian
	b := append([]byte(nil), snapshotMagic[:]...)
	b = be.AppendUint64(b, uint64(offset))
	b = be.AppendUint32(b, uint32(len(s.producers)))
	for _, p := range s.Producers() {
		b = be.AppendUint64(b, uint64(p.ID))
		b = be.AppendUint16(b, uint16(p.Epoch))
		b = be.AppendUint64(b, uint64(p.TxnFirstOffset))
		b = be.AppendUint64(b, uint64(p.LastTimestamp))
		b = be.AppendUint32(b, uint32(p.CoordinatorEpoch))
		b = append(b, byte(len(p.Batches)))
		for _, m := range p.Batches {
			b = be.AppendUint32(b, uint32(m.FirstSeq))
			b = be.AppendUint32(b, uint32(m.LastSeq))
			b = be.AppendUint64(b, uint64(m.BaseOffset))
			b = be.AppendUint64(b, uint64(m.LastOffset))
		}
	}
	b = be.AppendUint32(b, uint32(len(s.aborted)))
	for _, a := range s.aborted {
		b = be.AppendUint64(b, uint64(a.ProducerID))
		b = be.AppendUint64(b, uint64(a.FirstOffset))
		b = be.AppendUint64(b, uint64(a.LastOffset))
	}
	return be.AppendUint32(b, crc(b))
}

var errBadSnapshot = errors.New("producer state snapshot: corrupt")

// ErrNewerFormat is returned by Decode for a snapshot written by a newer
// binary in a format this one does not know.
var ErrNewerFormat = errors.New("producer state snapshot: newer format than this binary reads")

// Decode parses a snapshot, returning the state and the offset it covers.
func Decode(b []byte) (*State, int64, error) {
	be := binary.BigEndian
	if len(b) >= 8 && [7]byte(b[:7]) == [7]byte(snapshotMagic[:7]) && b[7] > snapshotMagic[7] {
		return nil, 0, fmt.Errorf("%w: version %d, this binary reads up to %d", ErrNewerFormat, b[7], snapshotMagic[7])
	}
	if len(b) < len(snapshotMagic)+8+4+4+4 || [8]byte(b[:8]) != snapshotMagic {
		return nil, 0, errBadSnapshot
	}
	body, sum := b[:len(b)-4], be.Uint32(b[len(b)-4:])
	if crc(body) != sum {
		return nil, 0, errBadSnapshot
	}
	r := reader{b: body[8:]}
	offset := int64(r.u64())
	s := New()
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		p := &Producer{ID: int64(r.u64()), Epoch: int16(r.u16()), TxnFirstOffset: int64(r.u64()), LastTimestamp: int64(r.u64()), CoordinatorEpoch: int32(r.u32())}
		nb := int(r.u8())
		if nb > MaxBatches {
			return nil, 0, errBadSnapshot
		}
		for i := 0; i < nb; i++ {
			p.Batches = append(p.Batches, BatchMeta{FirstSeq: int32(r.u32()), LastSeq: int32(r.u32()), BaseOffset: int64(r.u64()), LastOffset: int64(r.u64())})
		}
		s.producers[p.ID] = p
	}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		s.aborted = append(s.aborted, AbortedTxn{ProducerID: int64(r.u64()), FirstOffset: int64(r.u64()), LastOffset: int64(r.u64())})
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, 0, errBadSnapshot
	}
	return s, offset, nil
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errBadSnapshot
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
func (r *reader) u8() uint8   { return r.take(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.take(2)) }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }
