package txn

import (
	"regexp"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Config holds the coordinator's settings (Kafka broker keys).
type Config struct {
	// MaxTimeoutMs is transaction.max.timeout.ms: InitProducerId with a
	// longer transaction timeout gets INVALID_TRANSACTION_TIMEOUT.
	MaxTimeoutMs int32
	// IDExpirationMs is transactional.id.expiration.ms: an id with no
	// running transaction and no change for this long is forgotten.
	IDExpirationMs int64
	// PIDBlockSize is how many producer ids one durable reservation covers.
	PIDBlockSize int64
}

// DefaultConfig returns Kafka's defaults.
func DefaultConfig() Config {
	return Config{MaxTimeoutMs: 900000, IDExpirationMs: 7 * 24 * 3600 * 1000, PIDBlockSize: 1000}
}

// firstProducerID is where allocation starts on an empty log. Not 0, so a
// zero value that leaked from a bug never looks like a real producer.
const firstProducerID = 1

// Machine is the coordinator's pure state machine. It is not safe for
// concurrent use; the Driver serializes calls. Every method that changes
// state returns Effects the caller must carry out, in order: append
// Effects.Records durably, then (and only then) reveal the result and start
// Effects.Markers.
type Machine struct {
	cfg     Config
	txns    map[string]*Meta
	nextPID int64 // next producer id to hand out
	pidEnd  int64 // ids below pidEnd are reserved by a record already emitted
}

// NewMachine returns a machine with no state; Replay the log into it.
func NewMachine(cfg Config) *Machine {
	if cfg.PIDBlockSize <= 0 {
		cfg.PIDBlockSize = DefaultConfig().PIDBlockSize
	}
	return &Machine{cfg: cfg, txns: map[string]*Meta{}, nextPID: firstProducerID, pidEnd: firstProducerID}
}

// SetConfig replaces the settings (e.g. after a dynamic config change).
func (m *Machine) SetConfig(cfg Config) {
	if cfg.PIDBlockSize <= 0 {
		cfg.PIDBlockSize = m.cfg.PIDBlockSize
	}
	m.cfg = cfg
}

// Effects is what the caller must do after a state change.
type Effects struct {
	// Records must be appended to the transaction log, in order, and be
	// durable before any result of this or a later call is revealed.
	Records []Record
	// Markers are transaction ends to carry out once Records are durable.
	Markers []MarkerJob
	// Wake is the earliest time at which Tick has work because of this
	// change; zero means none. The caller's timer must fire by then (it
	// keeps the earlier of Wake and what it was already waiting for).
	Wake time.Time
}

// Empty reports whether there is nothing to do.
func (fx *Effects) Empty() bool { return len(fx.Records) == 0 && len(fx.Markers) == 0 }

func (m *Machine) put(fx *Effects, t *Meta) {
	fx.Records = append(fx.Records, Record{Txn: t.clone()})
	fx.Wake = earliest(fx.Wake, m.wake(t))
}

// wake is when Tick must next look at t; zero for a transaction that is
// ending (MarkersWritten, not time, moves it on). The state is kept in ms
// because that is what the log records and Kafka reports.
func (m *Machine) wake(t *Meta) time.Time {
	switch t.State {
	case Ongoing:
		return time.UnixMilli(t.StartMs + int64(t.TimeoutMs))
	case Empty, CompleteCommit, CompleteAbort:
		return time.UnixMilli(t.UpdateMs + m.cfg.IDExpirationMs)
	}
	return time.Time{}
}

// earliest is the earlier of two wake times, where zero means none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (m *Machine) allocPID(fx *Effects) int64 {
	if m.nextPID >= m.pidEnd {
		m.pidEnd = m.nextPID + m.cfg.PIDBlockSize
		fx.Records = append(fx.Records, Record{PIDBlockEnd: m.pidEnd})
	}
	id := m.nextPID
	m.nextPID++
	return id
}

// InitRequest is an InitProducerId request.
type InitRequest struct {
	// TxnID is nil for an idempotent (non-transactional) producer.
	TxnID     *string
	TimeoutMs int32
	// ProducerID and ProducerEpoch are the producer's current ones (KIP-360),
	// -1 for a producer starting fresh.
	ProducerID    int64
	ProducerEpoch int16
}

// InitResult is the answer to InitProducerId.
type InitResult struct {
	Err           *kerr.Error
	ProducerID    int64
	ProducerEpoch int16
}

// InitProducerID hands out a producer id and epoch. For a transactional id
// it bumps the epoch (fencing every earlier producer of the id), aborting a
// running transaction first — answered with CONCURRENT_TRANSACTIONS, so the
// client retries once the abort is done — and moves to a fresh producer id
// when the epoch is exhausted.
func (m *Machine) InitProducerID(now time.Time, r InitRequest) (InitResult, Effects) {
	nowMs := now.UnixMilli()
	var fx Effects
	fail := func(e *kerr.Error) (InitResult, Effects) {
		return InitResult{Err: e, ProducerID: noProducer, ProducerEpoch: noProducer}, fx
	}
	if r.TxnID == nil {
		return InitResult{ProducerID: m.allocPID(&fx)}, fx
	}
	id := *r.TxnID
	if id == "" {
		return fail(kerr.InvalidRequest)
	}
	if r.TimeoutMs <= 0 || r.TimeoutMs > m.cfg.MaxTimeoutMs {
		return fail(kerr.InvalidTransactionTimeout)
	}
	expected := r.ProducerID != noProducer || r.ProducerEpoch != noProducer
	if expected && (r.ProducerID < 0 || r.ProducerEpoch < 0) {
		return fail(kerr.InvalidRequest)
	}
	t := m.txns[id]
	if t == nil {
		// A new id, or one that expired: whatever the producer presents,
		// it starts over with a new producer id (this is how a producer
		// recovers from UNKNOWN_PRODUCER_ID).
		t = &Meta{ID: id, ProducerID: m.allocPID(&fx), LastProducerID: noProducer, LastProducerEpoch: noProducer,
			NextProducerID: noProducer, TimeoutMs: r.TimeoutMs, State: Empty, StartMs: -1, UpdateMs: nowMs}
		m.txns[id] = t
		m.put(&fx, t)
		return InitResult{ProducerID: t.ProducerID, ProducerEpoch: t.ProducerEpoch}, fx
	}
	// A producer presenting another id is fenced, except one retrying a
	// call that moved the id to a fresh producer id after exhausting the
	// epochs of the old one.
	rotatedRetry := expected && r.ProducerID != t.ProducerID && r.ProducerID == t.LastProducerID && epochExhausted(r.ProducerEpoch)
	if expected && r.ProducerID != t.ProducerID && !rotatedRetry {
		return fail(kerr.ProducerFenced)
	}
	switch t.State {
	case PrepareCommit, PrepareAbort:
		return fail(kerr.ConcurrentTransactions)
	case Ongoing:
		if rotatedRetry {
			return fail(kerr.ProducerFenced)
		}
		// The producer presenting the current epoch is the transaction's
		// own producer recovering (KIP-360): it may retry with that epoch.
		// Anyone else is a new instance taking over: the old one must
		// never be recognised again.
		own := expected && r.ProducerEpoch == t.ProducerEpoch
		m.fenceAbort(nowMs, t, own, false, &fx)
		return fail(kerr.ConcurrentTransactions)
	}
	switch {
	case rotatedRetry:
		if r.ProducerEpoch != t.LastProducerEpoch {
			return fail(kerr.ProducerFenced)
		}
		// A retry of the call that rotated: answer what it would have got.
	case !expected || r.ProducerEpoch == t.ProducerEpoch:
		last := int16(noProducer)
		if expected {
			// The producer presenting the current epoch keeps it
			// recognisable for its retries; a new instance does not.
			last = t.ProducerEpoch
		}
		if epochExhausted(t.ProducerEpoch) {
			m.rotate(t, last, &fx)
		} else {
			t.LastProducerEpoch = last
			t.ProducerEpoch++
		}
	case r.ProducerEpoch == t.LastProducerEpoch:
		// A retry of a call that already bumped: no second bump, so the
		// producer ends up where the first answer would have put it —
		// unless the bump was the coordinator's own (a timeout) and used
		// the last epoch, which no client may hold.
		if t.ProducerEpoch >= maxEpoch {
			m.rotate(t, r.ProducerEpoch, &fx)
		}
	default:
		return fail(kerr.ProducerFenced)
	}
	t.State = Empty
	t.Partitions, t.Groups = nil, nil
	t.StartMs = -1
	t.UpdateMs = nowMs
	t.TimeoutMs = r.TimeoutMs
	t.TimedOut = false
	m.put(&fx, t)
	return InitResult{ProducerID: t.ProducerID, ProducerEpoch: t.ProducerEpoch}, fx
}

// AddRequest adds partitions and consumer groups to a transaction
// (AddPartitionsToTxn, AddOffsetsToTxn, the implicit add of Produce v12 and
// TxnOffsetCommit v5) or, with VerifyOnly, checks that they are in it.
type AddRequest struct {
	TxnID         string
	ProducerID    int64
	ProducerEpoch int16
	Partitions    []TopicPartition
	Groups        []string
	// VerifyOnly checks membership without adding (server-side
	// verification of produce and offset commits from older clients).
	VerifyOnly bool
	// TV2 marks a KIP-890 transaction version 2 client, which can recover
	// from TRANSACTION_ABORTABLE.
	TV2 bool
	// Produce marks a check made for a produce request, which reports a
	// stale epoch as INVALID_PRODUCER_EPOCH rather than PRODUCER_FENCED.
	Produce bool
}

// AddResult is the answer to Add. Err applies to every partition and
// group; otherwise Missing and MissingGroups (VerifyOnly) are those not in
// the transaction.
type AddResult struct {
	Err           *kerr.Error
	Missing       []TopicPartition
	MissingGroups []string
}

// Add adds partitions and groups to the transaction of r.TxnID, starting
// one if none runs, or verifies that they are in it.
func (m *Machine) Add(now time.Time, r AddRequest) (AddResult, Effects) {
	nowMs := now.UnixMilli()
	var fx Effects
	fail := func(e *kerr.Error) (AddResult, Effects) { return AddResult{Err: e}, fx }
	if r.TxnID == "" {
		return fail(kerr.InvalidRequest)
	}
	t := m.txns[r.TxnID]
	if t != nil && r.TV2 && m.timedOutRetry(t, r.ProducerID, r.ProducerEpoch) {
		// The coordinator aborted this transaction on timeout: the
		// producer aborts too (EndTxn at its epoch is then a retry) and
		// carries on with the epoch that answer hands back.
		return fail(kerr.TransactionAbortable)
	}
	if t == nil || t.ProducerID != r.ProducerID {
		return fail(kerr.InvalidProducerIDMapping)
	}
	if t.ProducerEpoch != r.ProducerEpoch {
		switch {
		case r.Produce:
			return fail(kerr.InvalidProducerEpoch)
		}
		return fail(kerr.ProducerFenced)
	}
	if t.State == PrepareCommit || t.State == PrepareAbort {
		return fail(kerr.ConcurrentTransactions)
	}
	if r.VerifyOnly {
		var res AddResult
		for _, tp := range r.Partitions {
			if t.State != Ongoing || !t.hasPartition(tp) {
				res.Missing = append(res.Missing, tp)
			}
		}
		for _, g := range r.Groups {
			if t.State != Ongoing || !t.hasGroup(g) {
				res.MissingGroups = append(res.MissingGroups, g)
			}
		}
		return res, fx
	}
	if t.State != Ongoing {
		// Empty or Complete*: the first add begins a transaction.
		t.State = Ongoing
		t.Partitions, t.Groups = nil, nil
		t.StartMs = nowMs
		t.TimedOut = false
	} else if !containsAll(t, r.Partitions, r.Groups) {
		// Adding to a running transaction: fall through to record it.
	} else {
		return AddResult{}, fx // already in: nothing to persist
	}
	t.addPartitions(r.Partitions)
	t.addGroups(r.Groups)
	t.UpdateMs = nowMs
	m.put(&fx, t)
	return AddResult{}, fx
}

func containsAll(t *Meta, tps []TopicPartition, groups []string) bool {
	for _, tp := range tps {
		if !t.hasPartition(tp) {
			return false
		}
	}
	for _, g := range groups {
		if !t.hasGroup(g) {
			return false
		}
	}
	return true
}

// timedOutRetry reports whether (pid, epoch) is the producer whose
// transaction the coordinator aborted on timeout, at its old epoch.
func (m *Machine) timedOutRetry(t *Meta, pid int64, epoch int16) bool {
	if !t.TimedOut || t.LastProducerEpoch == noProducer || epoch != t.LastProducerEpoch {
		return false
	}
	switch t.State {
	case PrepareAbort:
		return pid == t.ProducerID
	case CompleteAbort:
		// After an abort that exhausted the epoch, the producer still
		// holds the producer id it had before the rotation.
		return pid == t.ProducerID || (pid == t.LastProducerID && t.ProducerEpoch == 0)
	}
	return false
}

// EndRequest is an EndTxn request.
type EndRequest struct {
	TxnID         string
	ProducerID    int64
	ProducerEpoch int16
	Commit        bool
	// TV2 is KIP-890 transaction version 2 (EndTxn v5+): the epoch is
	// bumped by every end and returned to the producer.
	TV2 bool
}

// EndResult is the answer to EndTxn. ProducerID and ProducerEpoch are what
// the producer continues with (TV2); Pending means markers are being
// written and the caller may wait for MarkersWritten before answering.
type EndResult struct {
	Err           *kerr.Error
	ProducerID    int64
	ProducerEpoch int16
	Pending       bool
}

// EndTxn commits or aborts the running transaction of r.TxnID: it
// persists PrepareCommit/PrepareAbort and hands back the marker job, or
// completes at once when nothing was added.
func (m *Machine) EndTxn(now time.Time, r EndRequest) (EndResult, Effects) {
	nowMs := now.UnixMilli()
	var fx Effects
	fail := func(e *kerr.Error) (EndResult, Effects) {
		return EndResult{Err: e, ProducerID: noProducer, ProducerEpoch: noProducer}, fx
	}
	if r.TxnID == "" {
		return fail(kerr.InvalidRequest)
	}
	t := m.txns[r.TxnID]
	if t == nil {
		return fail(kerr.InvalidProducerIDMapping)
	}
	if !r.TV2 {
		return m.endTV1(nowMs, t, r)
	}
	complete := t.State == CompleteCommit || t.State == CompleteAbort
	// A retry of an end whose answer the producer missed: the epoch was
	// bumped past the request's (and, if exhausted, the id rotated).
	retryOnRotation := complete && t.LastProducerID != noProducer && r.ProducerID == t.LastProducerID &&
		r.ProducerID != t.ProducerID && t.ProducerEpoch == 0 && r.ProducerEpoch == t.LastProducerEpoch
	if r.ProducerID != t.ProducerID && !retryOnRotation {
		return fail(kerr.InvalidProducerIDMapping)
	}
	retry := retryOnRotation || (r.ProducerID == t.ProducerID && t.LastProducerEpoch != noProducer &&
		r.ProducerEpoch == t.LastProducerEpoch && t.ProducerEpoch == r.ProducerEpoch+1)
	current := r.ProducerID == t.ProducerID && r.ProducerEpoch == t.ProducerEpoch
	var valid bool
	switch t.State {
	case Ongoing, Empty:
		valid = current
	case PrepareCommit, PrepareAbort:
		valid = retry
	default:
		valid = retry || current
	}
	if !valid {
		return fail(kerr.ProducerFenced)
	}
	ok := func() (EndResult, Effects) {
		return EndResult{ProducerID: t.ProducerID, ProducerEpoch: t.ProducerEpoch}, fx
	}
	switch t.State {
	case Ongoing:
		m.bump(t, &fx)
		t.TimedOut = false
		return m.prepare(nowMs, t, r.Commit, &fx)
	case Empty:
		if r.Commit {
			return fail(kerr.InvalidTxnState)
		}
		// TV2 lets a producer abort a transaction it is unsure it began;
		// the bump still fences anything it may have sent.
		m.bump(t, &fx)
		t.TimedOut = false
		return m.prepare(nowMs, t, false, &fx)
	case CompleteCommit:
		switch {
		case r.Commit && retry:
			return ok()
		case r.Commit || retry:
			return fail(kerr.InvalidTxnState)
		}
		m.bump(t, &fx)
		return m.prepare(nowMs, t, false, &fx)
	case CompleteAbort:
		switch {
		case !r.Commit && retry:
			return ok()
		case r.Commit && retry && t.TimedOut:
			return fail(kerr.TransactionAbortable)
		case r.Commit:
			return fail(kerr.InvalidTxnState)
		}
		m.bump(t, &fx)
		t.TimedOut = false
		return m.prepare(nowMs, t, false, &fx)
	case PrepareCommit:
		if r.Commit {
			return fail(kerr.ConcurrentTransactions)
		}
		return fail(kerr.InvalidTxnState)
	default: // PrepareAbort
		if !r.Commit {
			return fail(kerr.ConcurrentTransactions)
		}
		if t.TimedOut {
			return fail(kerr.TransactionAbortable)
		}
		return fail(kerr.InvalidTxnState)
	}
}

// endTV1 is EndTxn before KIP-890 v2: the epoch stays, so a request can
// only be told apart from a retry by the state.
func (m *Machine) endTV1(nowMs int64, t *Meta, r EndRequest) (EndResult, Effects) {
	var fx Effects
	fail := func(e *kerr.Error) (EndResult, Effects) {
		return EndResult{Err: e, ProducerID: noProducer, ProducerEpoch: noProducer}, fx
	}
	if r.ProducerID != t.ProducerID {
		return fail(kerr.InvalidProducerIDMapping)
	}
	if r.ProducerEpoch != t.ProducerEpoch {
		if m.timedOutRetry(t, r.ProducerID, r.ProducerEpoch) {
			// KIP-588: the producer recovers from a timeout by
			// re-initializing at its epoch, which it does only after
			// INVALID_PRODUCER_EPOCH; PRODUCER_FENCED would be fatal.
			return fail(kerr.InvalidProducerEpoch)
		}
		return fail(kerr.ProducerFenced)
	}
	ok := EndResult{ProducerID: noProducer, ProducerEpoch: noProducer}
	switch {
	case t.State == Ongoing:
		return m.prepare(nowMs, t, r.Commit, &fx)
	case t.State == CompleteCommit && r.Commit, t.State == CompleteAbort && !r.Commit:
		return ok, fx
	case t.State == PrepareCommit && r.Commit, t.State == PrepareAbort && !r.Commit:
		return fail(kerr.ConcurrentTransactions)
	}
	return fail(kerr.InvalidTxnState)
}

// rotate moves the id to a fresh producer id at epoch 0; last is the epoch
// under which the old producer id may still retry (-1: never).
func (m *Machine) rotate(t *Meta, last int16, fx *Effects) {
	t.LastProducerID = t.ProducerID
	t.LastProducerEpoch = last
	t.ProducerID = m.allocPID(fx)
	t.ProducerEpoch = 0
}

// bump raises the epoch for the end of a TV2 transaction, moving to a new
// producer id at completion when the epoch is exhausted.
func (m *Machine) bump(t *Meta, fx *Effects) {
	if epochExhausted(t.ProducerEpoch) {
		t.NextProducerID = m.allocPID(fx)
	}
	t.LastProducerEpoch = t.ProducerEpoch
	t.ProducerEpoch++
}

// fenceAbort aborts a running transaction on the coordinator's own
// initiative (timeout, a new producer instance), bumping the epoch so the
// transaction's producer can add nothing more. own keeps the old epoch
// recognisable as the legitimate producer's.
func (m *Machine) fenceAbort(nowMs int64, t *Meta, own, timedOut bool, fx *Effects) {
	old := t.ProducerEpoch
	if epochExhausted(old) {
		// The fence uses the last epoch; the producer must continue
		// under a new producer id once the abort completes.
		t.NextProducerID = m.allocPID(fx)
	}
	if t.ProducerEpoch < maxEpoch {
		t.ProducerEpoch++
	}
	t.LastProducerEpoch = noProducer
	if own {
		t.LastProducerEpoch = old
	}
	t.TimedOut = timedOut
	m.prepare(nowMs, t, false, fx)
}

// prepare records the decision and hands back the marker job, or completes
// at once when there is nothing to mark.
func (m *Machine) prepare(nowMs int64, t *Meta, commit bool, fx *Effects) (EndResult, Effects) {
	t.State = PrepareAbort
	if commit {
		t.State = PrepareCommit
	}
	t.UpdateMs = nowMs
	if len(t.Partitions) == 0 && len(t.Groups) == 0 {
		m.finish(nowMs, t, fx)
		return EndResult{ProducerID: t.ProducerID, ProducerEpoch: t.ProducerEpoch}, *fx
	}
	m.put(fx, t)
	fx.Markers = append(fx.Markers, MarkerJob{TxnID: t.ID, ProducerID: t.ProducerID, ProducerEpoch: t.ProducerEpoch,
		Commit: commit, Partitions: slices.Clone(t.Partitions), Groups: slices.Clone(t.Groups)})
	pid, epoch := t.ProducerID, t.ProducerEpoch
	if t.NextProducerID != noProducer {
		pid, epoch = t.NextProducerID, 0
	}
	return EndResult{ProducerID: pid, ProducerEpoch: epoch, Pending: true}, *fx
}

// MarkersWritten completes the transaction job ended, if it is still the
// one running; a stale job (already completed, e.g. before a restart) is
// ignored.
func (m *Machine) MarkersWritten(now time.Time, job MarkerJob) Effects {
	var fx Effects
	t := m.txns[job.TxnID]
	want := PrepareAbort
	if job.Commit {
		want = PrepareCommit
	}
	if t == nil || t.State != want || t.ProducerID != job.ProducerID || t.ProducerEpoch != job.ProducerEpoch {
		return fx
	}
	m.finish(now.UnixMilli(), t, &fx)
	return fx
}

// finish moves a Prepare* transaction to Complete*.
func (m *Machine) finish(nowMs int64, t *Meta, fx *Effects) {
	if t.State == PrepareCommit {
		t.State = CompleteCommit
	} else {
		t.State = CompleteAbort
	}
	if t.NextProducerID != noProducer {
		// The epoch ran out: the producer continues with the new id.
		// LastProducerEpoch stays the last epoch it used, so a retry
		// from it is still recognised.
		t.LastProducerID = t.ProducerID
		t.ProducerID = t.NextProducerID
		t.NextProducerID = noProducer
		t.ProducerEpoch = 0
	}
	t.Partitions, t.Groups = nil, nil
	t.UpdateMs = nowMs
	m.put(fx, t)
}

// Tick aborts transactions that outlived their timeout and forgets ids
// idle longer than transactional.id.expiration.ms.
func (m *Machine) Tick(now time.Time) Effects {
	nowMs := now.UnixMilli()
	var fx Effects
	for _, id := range m.sortedIDs() {
		t := m.txns[id]
		switch t.State {
		case Ongoing:
			if nowMs >= t.StartMs+int64(t.TimeoutMs) {
				m.fenceAbort(nowMs, t, true, true, &fx)
			}
		case Empty, CompleteCommit, CompleteAbort:
			if nowMs >= t.UpdateMs+m.cfg.IDExpirationMs {
				t.State = Dead
				t.UpdateMs = nowMs
				m.put(&fx, t)
				delete(m.txns, id)
			}
		}
	}
	return fx
}

// NextWake is the earliest time Tick has work; zero means none.
func (m *Machine) NextWake() time.Time {
	var w time.Time
	for _, t := range m.txns {
		w = earliest(w, m.wake(t))
	}
	return w
}

func (m *Machine) sortedIDs() []string {
	ids := make([]string, 0, len(m.txns))
	for id := range m.txns {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Get returns a copy of one id's state.
func (m *Machine) Get(id string) (Meta, bool) {
	t := m.txns[id]
	if t == nil {
		return Meta{}, false
	}
	return *t.clone(), true
}

// Filter selects transactional ids for List; zero values select all.
type Filter struct {
	States      []State
	ProducerIDs []int64
	// MinDurationMs > 0 keeps only transactions running at least that long.
	MinDurationMs int64
	// Pattern keeps only ids it matches.
	Pattern *regexp.Regexp
}

// List returns copies of the ids the filter selects, sorted by id.
func (m *Machine) List(now time.Time, f Filter) []Meta {
	nowMs := now.UnixMilli()
	var out []Meta
	for _, id := range m.sortedIDs() {
		t := m.txns[id]
		if len(f.States) > 0 && !slices.Contains(f.States, t.State) {
			continue
		}
		if len(f.ProducerIDs) > 0 && !slices.Contains(f.ProducerIDs, t.ProducerID) {
			continue
		}
		if f.MinDurationMs > 0 && (!t.State.running() || nowMs-t.StartMs < f.MinDurationMs) {
			continue
		}
		if f.Pattern != nil && !f.Pattern.MatchString(id) {
			continue
		}
		out = append(out, *t.clone())
	}
	return out
}

// Len is the number of transactional ids known.
func (m *Machine) Len() int { return len(m.txns) }

// Pending returns the marker jobs of transactions that are ending, so a
// restarted coordinator finishes them.
func (m *Machine) Pending() []MarkerJob {
	var jobs []MarkerJob
	for _, id := range m.sortedIDs() {
		t := m.txns[id]
		if t.State == PrepareCommit || t.State == PrepareAbort {
			jobs = append(jobs, MarkerJob{TxnID: t.ID, ProducerID: t.ProducerID, ProducerEpoch: t.ProducerEpoch,
				Commit: t.State == PrepareCommit, Partitions: slices.Clone(t.Partitions), Groups: slices.Clone(t.Groups)})
		}
	}
	return jobs
}

// Replay applies one record read back from the transaction log.
func (m *Machine) Replay(r Record) {
	if r.Txn == nil {
		if r.PIDBlockEnd > m.pidEnd {
			m.pidEnd = r.PIDBlockEnd
		}
		// Ids of the last block may have been handed out before a crash:
		// never hand them out again.
		m.nextPID = m.pidEnd
		return
	}
	t := r.Txn.clone()
	if t.State == Dead {
		delete(m.txns, t.ID)
		return
	}
	m.txns[t.ID] = t
}

// Snapshot returns records that rebuild the whole current state: the
// producer id reservation and every live id.
func (m *Machine) Snapshot() []Record {
	recs := []Record{{PIDBlockEnd: m.pidEnd}}
	for _, id := range m.sortedIDs() {
		recs = append(recs, Record{Txn: m.txns[id].clone()})
	}
	return recs
}

// ProducerIDs reports the next producer id and the reservation end.
func (m *Machine) ProducerIDs() (next, end int64) { return m.nextPID, m.pidEnd }
