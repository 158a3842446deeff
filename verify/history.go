package verify

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EventType names what an Event records.
type EventType string

// The event types of a history. A process writes its own events in the
// order they happened; Merge interleaves processes by time.
const (
	// EvRun opens a history: the run's topics, mode and seed (Detail holds
	// the mode, Topic the input topic, Values[0] the output topic).
	EvRun EventType = "run"
	// EvStart and EvExit bracket one process instance (Detail: its role,
	// or how it ended).
	EvStart EventType = "start"
	// EvExit is written by the orchestrator when an instance ended.
	EvExit EventType = "exit"
	// EvSend is a record handed to the client (Topic, Partition, Value,
	// Txn when inside a transaction).
	EvSend EventType = "send"
	// EvAck is a record the broker acknowledged at Offset (-1 for acks=0).
	EvAck EventType = "ack"
	// EvFail is a record the client gave up on (Error).
	EvFail EventType = "fail"
	// EvPoll is what one poll returned for one partition (Offsets and
	// Values in order; ReadCommitted tells the isolation level).
	EvPoll EventType = "poll"
	// EvAssign, EvRevoke and EvLost are group rebalance callbacks
	// (Parts: topic to partitions).
	EvAssign EventType = "assign"
	// EvRevoke is a partition revocation.
	EvRevoke EventType = "revoke"
	// EvLost is a partition lost without a clean revoke.
	EvLost EventType = "lost"
	// EvReset is a consumer rewinding to its committed offsets (after an
	// aborted transaction); polls may go backwards across it.
	EvReset EventType = "reset"
	// EvCommit is an offset commit (Commits: topic, partition, next
	// offset); OK false with Error when it failed.
	EvCommit EventType = "commit"
	// EvTxnCommit, EvTxnAbort and EvTxnUnknown are a transaction's outcome
	// with every value produced inside it (Values) and, for a pipeline,
	// the offsets it committed (Commits).
	EvTxnCommit EventType = "txn-commit"
	// EvTxnAbort is a transaction known to be aborted.
	EvTxnAbort EventType = "txn-abort"
	// EvTxnUnknown is a transaction whose outcome the client never learned.
	EvTxnUnknown EventType = "txn-unknown"
	// EvFault is a fault the nemesis injected (Detail: kind; Proc: target)
	// and EvHeal one it undid.
	EvFault EventType = "fault"
	// EvHeal ends a fault window.
	EvHeal EventType = "heal"
	// EvFinal is what the final fresh reader found in one partition.
	EvFinal EventType = "final"
	// EvGroupOffsets holds the pipeline group's committed offsets at the
	// end of the run (Commits).
	EvGroupOffsets EventType = "group-offsets"
	// EvSharePoll is what one share-group poll returned for one partition:
	// Offsets and Values in order, Counts the delivery count the broker
	// gave each record.
	EvSharePoll EventType = "share-poll"
	// EvShareAck is the acknowledgements a share consumer is about to send
	// for one partition (Offsets, Counts, Acks: AckAccept, AckRelease or
	// AckReject), written out before they are sent, so a consumer killed
	// while sending them leaves this trace.
	EvShareAck EventType = "share-ack"
	// EvShareAckResult is the answer to the same instance's latest
	// EvShareAck of Partition: OK when the broker confirmed every
	// acknowledgement, else Error (whether they took effect is unknown).
	EvShareAckResult EventType = "share-ack-result"
	// EvShareOffsets holds the share group's share-partition start offsets
	// at the end of the run (Commits): every record below one has reached
	// a final state (acknowledged or archived).
	EvShareOffsets EventType = "share-offsets"
)

// Share acknowledgement types, as EvShareAck records them.
const (
	AckAccept  = "accept"
	AckRelease = "release"
	AckReject  = "reject"
)

// Event is one line of a history.
type Event struct {
	// Time is when the event happened, in nanoseconds since the Unix epoch.
	Time int64 `json:"t"`
	// Proc is the process instance ("p0.2" is producer slot 0's third
	// incarnation, "c1.0" a pipeline worker, "nemesis", "final").
	Proc string `json:"proc"`
	// Type says what happened.
	Type EventType `json:"type"`
	// Topic is the records' topic.
	Topic string `json:"topic,omitempty"`
	// Partition is the records' partition.
	Partition int32 `json:"partition,omitempty"`
	// Offset is the acknowledged offset of Value.
	Offset int64 `json:"offset,omitempty"`
	// Value is a single record value.
	Value string `json:"value,omitempty"`
	// Offsets are the offsets of Values (polls, final reads).
	Offsets []int64 `json:"offsets,omitempty"`
	// Values are record values: parallel to Offsets, or a transaction's
	// values (Offsets empty).
	Values []string `json:"values,omitempty"`
	// Counts are the delivery counts of Offsets (share polls and acks).
	Counts []int32 `json:"counts,omitempty"`
	// Acks are the acknowledgement types of Offsets (EvShareAck).
	Acks []string `json:"acks,omitempty"`
	// ReadCommitted marks a poll made with isolation level read_committed.
	ReadCommitted bool `json:"rc,omitempty"`
	// Txn numbers a producer's transactions (1, 2, ...); 0 outside one.
	Txn int64 `json:"txn,omitempty"`
	// Parts lists partitions by topic (rebalances).
	Parts map[string][]int32 `json:"parts,omitempty"`
	// Commits lists committed next offsets by topic and partition.
	Commits map[string]map[int32]int64 `json:"commits,omitempty"`
	// OK is false for failed operations.
	OK bool `json:"ok,omitempty"`
	// Error describes a failure.
	Error string `json:"error,omitempty"`
	// Detail carries the fault kind, a role, or other free text.
	Detail string `json:"detail,omitempty"`
}

// History is a run's events in time order.
type History []Event

// Recorder appends events of one process to a JSON-lines file. It is safe
// for concurrent use. Events are buffered and flushed at least every
// FlushInterval, on Flush and on Close, so a SIGKILLed process loses at most
// its last few milliseconds — never a prefix, never a middle: the history
// of a process is always a prefix of what it did.
type Recorder struct {
	mu   sync.Mutex
	proc string
	f    io.WriteCloser
	w    *bufio.Writer
	enc  *json.Encoder
	now  func() time.Time
	stop chan struct{}
	done chan struct{}
	err  error
}

// FlushInterval bounds how long a Recorder holds events in memory.
const FlushInterval = 20 * time.Millisecond

// NewRecorder writes proc's events to w (usually a file opened for append).
func NewRecorder(w io.WriteCloser, proc string) *Recorder {
	r := &Recorder{proc: proc, f: w, w: bufio.NewWriterSize(w, 64<<10), now: time.Now,
		stop: make(chan struct{}), done: make(chan struct{})}
	r.enc = json.NewEncoder(r.w)
	go r.flushLoop()
	return r
}

// CreateRecorder opens (creating or appending to) path for proc's events.
func CreateRecorder(path, proc string) (*Recorder, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return NewRecorder(f, proc), nil
}

func (r *Recorder) flushLoop() {
	defer close(r.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.Flush()
		}
	}
}

// Record stamps e with the time and the recorder's process (unless already
// set) and appends it.
func (r *Recorder) Record(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Time == 0 {
		e.Time = r.now().UnixNano()
	}
	if e.Proc == "" {
		e.Proc = r.proc
	}
	if err := r.enc.Encode(&e); err != nil && r.err == nil {
		r.err = err
	}
}

// Flush writes buffered events to the file.
func (r *Recorder) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.w.Flush(); err != nil && r.err == nil {
		r.err = err
	}
	return r.err
}

// Close flushes and closes the file.
func (r *Recorder) Close() error {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
	err := r.Flush()
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadHistory parses JSON lines. A torn last line (a process killed in the
// middle of a write) is ignored; a malformed line elsewhere is an error.
func ReadHistory(rd io.Reader) (History, error) {
	var h History
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
	var bad error
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(strings.TrimSpace(string(b))) == 0 {
			continue
		}
		if bad != nil {
			return nil, bad
		}
		var e Event
		if err := json.Unmarshal(b, &e); err != nil {
			bad = fmt.Errorf("history line %d: %w", line, err)
			continue
		}
		h = append(h, e)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return h, nil
}

// ReadHistoryFile reads one JSON-lines history file.
func ReadHistoryFile(path string) (History, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := ReadHistory(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return h, nil
}

// Merge interleaves per-process histories by time, keeping each process's
// own order.
func Merge(hs ...History) History {
	var all History
	for _, h := range hs {
		all = append(all, h...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time < all[j].Time })
	return all
}

// ReadHistoryDir reads and merges every *.jsonl file in dir.
func ReadHistoryDir(dir string) (History, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var hs []History
	for _, p := range paths {
		h, err := ReadHistoryFile(p)
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return Merge(hs...), nil
}

// WriteHistory writes h as JSON lines.
func WriteHistory(w io.Writer, h History) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for i := range h {
		if err := enc.Encode(&h[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// InputValue builds the unique value a producer instance writes as its
// seq-th record.
func InputValue(proc string, seq int64) string {
	return proc + "-" + strconv.FormatInt(seq, 10)
}

// OutputValue builds the value a pipeline instance writes for input value
// in as its n-th output: the input value, '@', and a unique write id, so
// every attempt to process a value is distinguishable from every other.
func OutputValue(in, proc string, n int64) string {
	return in + "@" + proc + "-" + strconv.FormatInt(n, 10)
}

// SourceValue returns the input value an output value was made from (the
// value itself for input values).
func SourceValue(v string) string {
	if i := strings.IndexByte(v, '@'); i >= 0 {
		return v[:i]
	}
	return v
}

// parseInputValue splits an input value into its producer instance and
// sequence number.
func parseInputValue(v string) (proc string, seq int64, err error) {
	i := strings.LastIndexByte(v, '-')
	if i <= 0 {
		return "", 0, errors.New("no sequence number")
	}
	seq, err = strconv.ParseInt(v[i+1:], 10, 64)
	return v[:i], seq, err
}
