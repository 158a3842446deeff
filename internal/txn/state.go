package txn

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// State is where a transactional id is in its life cycle. The names are
// Kafka's: DescribeTransactions and ListTransactions report them, and
// kafka-transactions.sh filters on them.
type State int8

// The states of a transactional id.
const (
	// Empty: the id has a producer id and epoch but no transaction is running.
	Empty State = iota
	// Ongoing: partitions or groups have been added; the transaction is open.
	Ongoing
	// PrepareCommit: the commit decision is durable; markers are being written.
	PrepareCommit
	// PrepareAbort: the abort decision is durable; markers are being written.
	PrepareAbort
	// CompleteCommit: the last transaction committed; no transaction is running.
	CompleteCommit
	// CompleteAbort: the last transaction aborted; no transaction is running.
	CompleteAbort
	// Dead: the id expired and is being forgotten.
	Dead
)

var stateNames = [...]string{"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead"}

// String is the Kafka name of the state.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int8(s))
}

// ParseState parses a Kafka state name, case-insensitively.
func ParseState(name string) (State, bool) {
	for i, n := range stateNames {
		if strings.EqualFold(n, name) {
			return State(i), true
		}
	}
	return 0, false
}

// MarshalText writes the state by name so the log is readable.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state name written by MarshalText.
func (s *State) UnmarshalText(b []byte) error {
	st, ok := ParseState(string(b))
	if !ok {
		return fmt.Errorf("unknown transaction state %q", b)
	}
	*s = st
	return nil
}

// running reports whether a transaction is open or ending.
func (s State) running() bool { return s == Ongoing || s == PrepareCommit || s == PrepareAbort }

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string `json:"t"`
	Partition int32  `json:"p"`
}

// String renders topic/partition.
func (tp TopicPartition) String() string { return fmt.Sprintf("%s/%d", tp.Topic, tp.Partition) }

func compareTP(a, b TopicPartition) int {
	if c := strings.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	switch {
	case a.Partition < b.Partition:
		return -1
	case a.Partition > b.Partition:
		return 1
	}
	return 0
}

// noProducer is Kafka's "no producer id / no epoch" value.
const noProducer = -1

// maxEpoch is the largest producer epoch. An epoch is exhausted at
// maxEpoch-1: clients never get maxEpoch itself, so the coordinator can
// always bump once more to fence or to mark the end of a transaction.
const maxEpoch = math.MaxInt16

func epochExhausted(e int16) bool { return e >= maxEpoch-1 }

// Meta is the durable state of one transactional id. Each transaction log
// record carries a whole Meta, so replay only keeps the last one per id.
type Meta struct {
	ID string `json:"id"`
	// ProducerID and ProducerEpoch are what the current producer must
	// present. While a transaction ends (Prepare*), ProducerEpoch is
	// already the epoch the markers carry.
	ProducerID    int64 `json:"pid"`
	ProducerEpoch int16 `json:"epoch"`
	// LastProducerID is the producer id before the last rotation (epoch
	// exhaustion), so a retry from a producer that missed the answer is
	// recognised; -1 if none.
	LastProducerID int64 `json:"last_pid"`
	// LastProducerEpoch is the epoch the legitimate producer held before
	// the last bump, so its retries are recognised; -1 when the bump
	// fenced a producer that must not come back (a new instance took over).
	LastProducerEpoch int16 `json:"last_epoch"`
	// NextProducerID is set while a transaction ends with the epoch
	// exhausted: the producer id the producer continues with; -1 otherwise.
	NextProducerID int64 `json:"next_pid"`
	TimeoutMs      int32 `json:"timeout_ms"`
	State          State `json:"state"`
	// Partitions and Groups are in the running transaction, sorted.
	Partitions []TopicPartition `json:"partitions,omitempty"`
	Groups     []string         `json:"groups,omitempty"`
	// StartMs is when the running transaction began; -1 if none runs.
	StartMs int64 `json:"start_ms"`
	// UpdateMs is the last change, the clock for id expiration.
	UpdateMs int64 `json:"update_ms"`
	// TimedOut marks an abort the coordinator started because the
	// transaction outlived its timeout, so the producer's next request
	// gets a recoverable error rather than a fatal one.
	TimedOut bool `json:"timed_out,omitempty"`
}

func (m *Meta) clone() *Meta {
	c := *m
	c.Partitions = slices.Clone(m.Partitions)
	c.Groups = slices.Clone(m.Groups)
	return &c
}

func (m *Meta) hasPartition(tp TopicPartition) bool {
	_, ok := slices.BinarySearchFunc(m.Partitions, tp, compareTP)
	return ok
}

func (m *Meta) hasGroup(g string) bool {
	_, ok := slices.BinarySearch(m.Groups, g)
	return ok
}

// addPartitions merges tps into the sorted set and reports whether any was new.
func (m *Meta) addPartitions(tps []TopicPartition) bool {
	added := false
	for _, tp := range tps {
		i, ok := slices.BinarySearchFunc(m.Partitions, tp, compareTP)
		if !ok {
			m.Partitions = slices.Insert(m.Partitions, i, tp)
			added = true
		}
	}
	return added
}

func (m *Meta) addGroups(gs []string) bool {
	added := false
	for _, g := range gs {
		i, ok := slices.BinarySearch(m.Groups, g)
		if !ok {
			m.Groups = slices.Insert(m.Groups, i, g)
			added = true
		}
	}
	return added
}

// MarkerJob is one transaction end to carry out: write a COMMIT or ABORT
// marker to every partition and complete the staged offsets of every group,
// then report back with Machine.MarkersWritten.
type MarkerJob struct {
	TxnID      string
	ProducerID int64
	// ProducerEpoch is the marker's epoch: the transaction's epoch, or the
	// bumped one (KIP-890, coordinator aborts), which also fences any
	// later write from the transaction's producer at its old epoch.
	ProducerEpoch int16
	Commit        bool
	Partitions    []TopicPartition
	Groups        []string
}

// Record is one transaction log entry: the complete state of one
// transactional id (State Dead forgets it), or a producer id reservation.
type Record struct {
	// Txn is the state of one id; nil for a reservation.
	Txn *Meta
	// PIDBlockEnd reserves every producer id below it.
	PIDBlockEnd int64
}

// String renders the record on one line for transcripts and logs.
func (r Record) String() string {
	if r.Txn == nil {
		return fmt.Sprintf("pids<%d", r.PIDBlockEnd)
	}
	return r.Txn.String()
}

// String renders the metadata on one line for transcripts and logs.
func (m *Meta) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "txn %s %s pid=%d epoch=%d", m.ID, m.State, m.ProducerID, m.ProducerEpoch)
	if m.LastProducerID != noProducer {
		fmt.Fprintf(&b, " last_pid=%d", m.LastProducerID)
	}
	if m.LastProducerEpoch != noProducer {
		fmt.Fprintf(&b, " last_epoch=%d", m.LastProducerEpoch)
	}
	if m.NextProducerID != noProducer {
		fmt.Fprintf(&b, " next_pid=%d", m.NextProducerID)
	}
	fmt.Fprintf(&b, " timeout=%d", m.TimeoutMs)
	if len(m.Partitions) > 0 {
		ps := make([]string, len(m.Partitions))
		for i, tp := range m.Partitions {
			ps[i] = tp.String()
		}
		fmt.Fprintf(&b, " parts=%s", strings.Join(ps, ","))
	}
	if len(m.Groups) > 0 {
		fmt.Fprintf(&b, " groups=%s", strings.Join(m.Groups, ","))
	}
	fmt.Fprintf(&b, " start=%d update=%d", m.StartMs, m.UpdateMs)
	if m.TimedOut {
		b.WriteString(" timed_out")
	}
	return b.String()
}
