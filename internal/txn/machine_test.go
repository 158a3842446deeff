package txn

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/exactly/exactly/internal/transcript"
	"github.com/twmb/franz-go/pkg/kerr"
)

// TestTranscripts runs every testdata/*.txt transcript (datadriven format,
// see internal/transcript) against one Machine per file:
//
//	go test ./internal/txn -run TestTranscripts -rewrite
//
// regenerates the expected outputs; review the diff. Time is in ms after
// the Unix epoch, where the clock starts, so at=, record times and wake
// times are all the same numbers; it moves only with at= (any command).
//
// Commands (txn=, pid=, epoch= name the producer; lists are (a, b)):
//
//	init [txn=ID] [timeout=MS] [pid=N epoch=N]          InitProducerId
//	add txn=ID pid=N epoch=N [parts=(t/p, ...)] [groups=(g, ...)] [tv2] [verify] [produce]
//	end txn=ID pid=N epoch=N commit|abort [tv2]         EndTxn
//	markers-written txn=ID                              the driver wrote the latest marker job
//	tick                                                timeouts and expirations due now
//	describe txn=ID / list [states=(..)] [pids=(..)] [duration=MS] [pattern=RE]
//	seed txn=ID [pid=N] [epoch=N]                       replay a hand-made record
//	restart [compacted]                                 replay the log into a new machine
//
// Each prints the result, then "record:" for every record to persist,
// "markers:" for every marker job and "wake:" for Effects.Wake.
func TestTranscripts(t *testing.T) {
	transcript.Run(t, "testdata", func(t *testing.T) func(*testing.T, *datadriven.TestData) string {
		h := &harness{m: NewMachine(Config{MaxTimeoutMs: 900000, IDExpirationMs: 3600000, PIDBlockSize: 10}),
			clock: transcript.NewClock(time.UnixMilli(0)), jobs: map[string]MarkerJob{}}
		h.cfg = h.m.cfg
		return h.run
	})
}

// harness drives a Machine from transcript commands and keeps the whole
// log it emitted, so "restart" can replay it into a fresh machine.
type harness struct {
	m     *Machine
	cfg   Config
	clock *transcript.Clock
	log   []Record
	jobs  map[string]MarkerJob // latest marker job per transactional id
}

// ms is a time as the transcript shows it: ms after the clock's start.
func (h *harness) ms(t time.Time) int64 { return h.clock.Since(t).Milliseconds() }

func (h *harness) run(t *testing.T, d *datadriven.TestData) string {
	h.clock.Move(t, d)
	now := h.clock.Now()
	var out []string
	effects := func(fx Effects) {
		for _, r := range fx.Records {
			out = append(out, "record: "+r.String())
			h.log = append(h.log, Record{Txn: r.Txn, PIDBlockEnd: r.PIDBlockEnd})
		}
		for _, j := range fx.Markers {
			out = append(out, "markers: "+jobString(j))
			h.jobs[j.TxnID] = j
		}
		if !fx.Wake.IsZero() {
			out = append(out, fmt.Sprintf("wake: %d", h.ms(fx.Wake)))
		}
	}
	switch d.Cmd {
	case "init":
		transcript.Known(t, d, "txn", "timeout", "pid", "epoch")
		req := InitRequest{TimeoutMs: 60000, ProducerID: -1, ProducerEpoch: -1}
		d.MaybeScanArgs(t, "timeout", &req.TimeoutMs)
		d.MaybeScanArgs(t, "pid", &req.ProducerID)
		d.MaybeScanArgs(t, "epoch", &req.ProducerEpoch)
		var id string
		if d.MaybeScanArgs(t, "txn", &id) {
			req.TxnID = &id
		}
		res, fx := h.m.InitProducerID(now, req)
		out = append(out, fmt.Sprintf("%s pid=%d epoch=%d", errName(res.Err), res.ProducerID, res.ProducerEpoch))
		effects(fx)
	case "add":
		transcript.Known(t, d, "txn", "pid", "epoch", "parts", "groups", "verify", "tv2", "produce")
		req := AddRequest{ProducerID: -1, ProducerEpoch: -1, VerifyOnly: d.HasArg("verify"), TV2: d.HasArg("tv2"), Produce: d.HasArg("produce")}
		h.producer(t, d, &req.TxnID, &req.ProducerID, &req.ProducerEpoch)
		req.Partitions = parseTPs(t, d)
		d.MaybeScanArgs(t, "groups", &req.Groups)
		res, fx := h.m.Add(now, req)
		s := errName(res.Err)
		if len(res.Missing) > 0 {
			s += " missing=" + tpsString(res.Missing)
		}
		if len(res.MissingGroups) > 0 {
			s += " missing_groups=" + strings.Join(res.MissingGroups, ",")
		}
		out = append(out, s)
		effects(fx)
	case "end":
		transcript.Known(t, d, "txn", "pid", "epoch", "commit", "abort", "tv2")
		req := EndRequest{ProducerID: -1, ProducerEpoch: -1, Commit: d.HasArg("commit"), TV2: d.HasArg("tv2")}
		h.producer(t, d, &req.TxnID, &req.ProducerID, &req.ProducerEpoch)
		if d.HasArg("commit") == d.HasArg("abort") {
			d.Fatalf(t, "say commit or abort")
		}
		res, fx := h.m.EndTxn(now, req)
		s := fmt.Sprintf("%s pid=%d epoch=%d", errName(res.Err), res.ProducerID, res.ProducerEpoch)
		if res.Pending {
			s += " pending"
		}
		out = append(out, s)
		effects(fx)
	case "markers-written":
		// The driver finished writing the markers of txn's latest job.
		transcript.Known(t, d, "txn")
		var id string
		d.ScanArgs(t, "txn", &id)
		j, ok := h.jobs[id]
		if !ok {
			d.Fatalf(t, "no marker job for %q", id)
		}
		fx := h.m.MarkersWritten(now, j)
		if fx.Empty() {
			out = append(out, "stale job ignored")
		}
		effects(fx)
	case "tick":
		transcript.Known(t, d)
		fx := h.m.Tick(now)
		if fx.Empty() {
			out = append(out, "nothing to do")
		}
		effects(fx)
		if w := h.m.NextWake(); !w.IsZero() {
			out = append(out, fmt.Sprintf("next wake: %d", h.ms(w)))
		}
	case "describe":
		transcript.Known(t, d, "txn")
		var id string
		d.ScanArgs(t, "txn", &id)
		meta, ok := h.m.Get(id)
		if !ok {
			out = append(out, "not found")
		} else {
			out = append(out, meta.String())
		}
	case "list":
		transcript.Known(t, d, "states", "pids", "duration", "pattern")
		var f Filter
		var states []string
		d.MaybeScanArgs(t, "states", &states)
		for _, n := range states {
			st, ok := ParseState(n)
			if !ok {
				d.Fatalf(t, "unknown state %q", n)
			}
			f.States = append(f.States, st)
		}
		d.MaybeScanArgs(t, "pids", &f.ProducerIDs)
		d.MaybeScanArgs(t, "duration", &f.MinDurationMs)
		var pattern string
		if d.MaybeScanArgs(t, "pattern", &pattern) {
			f.Pattern = regexp.MustCompile(pattern)
		}
		for _, meta := range h.m.List(now, f) {
			out = append(out, meta.String())
		}
		if len(out) == 0 {
			out = append(out, "none")
		}
	case "seed":
		// Put an id into a state that takes too many steps to reach (epoch
		// exhaustion), the way a log record would.
		transcript.Known(t, d, "txn", "pid", "epoch")
		var id string
		d.ScanArgs(t, "txn", &id)
		meta, ok := h.m.Get(id)
		if !ok {
			meta = Meta{ID: id, LastProducerID: -1, LastProducerEpoch: -1, NextProducerID: -1, TimeoutMs: 10000, StartMs: -1}
		}
		d.MaybeScanArgs(t, "pid", &meta.ProducerID)
		d.MaybeScanArgs(t, "epoch", &meta.ProducerEpoch)
		h.m.Replay(Record{Txn: &meta})
		h.log = append(h.log, Record{Txn: &meta})
		out = append(out, meta.String())
	case "restart":
		// Replay everything emitted so far (or, with "compacted", only a
		// snapshot of the current state) into a new machine, as the driver
		// does on start, and list the transactions it must finish.
		transcript.Known(t, d, "compacted")
		recs := h.log
		if d.HasArg("compacted") {
			recs = h.m.Snapshot()
			h.log = append([]Record(nil), recs...)
		}
		m := NewMachine(h.cfg)
		for _, r := range recs {
			m.Replay(r)
		}
		h.m = m
		next, end := m.ProducerIDs()
		out = append(out, fmt.Sprintf("replayed %d records: %d ids, next pid %d (reserved < %d)", len(recs), m.Len(), next, end))
		for _, j := range m.Pending() {
			out = append(out, "markers: "+jobString(j))
			h.jobs[j.TxnID] = j
		}
	default:
		d.Fatalf(t, "unknown command %q", d.Cmd)
	}
	return strings.Join(out, "\n")
}

// producer reads the txn=, pid= and epoch= arguments of a request.
func (h *harness) producer(t *testing.T, d *datadriven.TestData, id *string, pid *int64, epoch *int16) {
	t.Helper()
	d.MaybeScanArgs(t, "txn", id)
	d.MaybeScanArgs(t, "pid", pid)
	d.MaybeScanArgs(t, "epoch", epoch)
}

func errName(e *kerr.Error) string {
	if e == nil {
		return "NONE"
	}
	return e.Message
}

// parseTPs reads parts=(topic/partition, ...).
func parseTPs(t *testing.T, d *datadriven.TestData) []TopicPartition {
	t.Helper()
	var parts []string
	d.MaybeScanArgs(t, "parts", &parts)
	var tps []TopicPartition
	for _, p := range parts {
		topic, idx, ok := strings.Cut(p, "/")
		var n int32
		if _, err := fmt.Sscan(idx, &n); !ok || err != nil {
			d.Fatalf(t, "parts: %q is not topic/partition", p)
		}
		tps = append(tps, TopicPartition{Topic: topic, Partition: n})
	}
	return tps
}

func tpsString(tps []TopicPartition) string {
	s := make([]string, len(tps))
	for i, tp := range tps {
		s[i] = tp.String()
	}
	return strings.Join(s, ",")
}

func jobString(j MarkerJob) string {
	kind := "ABORT"
	if j.Commit {
		kind = "COMMIT"
	}
	s := fmt.Sprintf("%s %s pid=%d epoch=%d parts=%s", kind, j.TxnID, j.ProducerID, j.ProducerEpoch, tpsString(j.Partitions))
	if len(j.Groups) > 0 {
		s += " groups=" + strings.Join(j.Groups, ",")
	}
	return s
}
