package txn

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// update rewrites the transcript files with the machine's current output:
// go test ./internal/txn -run TestTranscripts -update, then review the diff.
var update = flag.Bool("update", false, "rewrite testdata transcripts with the current output")

// TestTranscripts runs every testdata/*.txt transcript. Each block is a
// command line, a "----" line, and the expected output up to a blank line.
// Commands drive one Machine; time only moves when a command says at=MS.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runTranscript(t, file)
		})
	}
}

type block struct {
	line     int
	cmd      string
	expected string
}

func parseTranscript(t *testing.T, file string) (blocks []block, comments map[int][]string) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	comments = map[int][]string{}
	sc := bufio.NewScanner(f)
	n := 0
	var pending []string
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			pending = append(pending, line)
			continue
		case strings.TrimSpace(line) == "":
			continue
		}
		b := block{line: n, cmd: line}
		comments[len(blocks)] = pending
		pending = nil
		if !sc.Scan() || sc.Text() != "----" {
			t.Fatalf("%s:%d: command without ---- separator", file, n)
		}
		n++
		var out []string
		for sc.Scan() {
			n++
			if sc.Text() == "" {
				break
			}
			out = append(out, sc.Text())
		}
		b.expected = strings.Join(out, "\n")
		blocks = append(blocks, b)
	}
	comments[len(blocks)] = pending
	return blocks, comments
}

func runTranscript(t *testing.T, file string) {
	blocks, comments := parseTranscript(t, file)
	h := &harness{m: NewMachine(Config{MaxTimeoutMs: 900000, IDExpirationMs: 3600000, PIDBlockSize: 10}), jobs: map[string]MarkerJob{}}
	h.cfg = h.m.cfg
	var rewritten strings.Builder
	failed := false
	for i, b := range blocks {
		got := h.run(t, b.cmd)
		for _, c := range comments[i] {
			rewritten.WriteString(c + "\n")
		}
		fmt.Fprintf(&rewritten, "%s\n----\n%s\n\n", b.cmd, got)
		if got != b.expected && !*update {
			failed = true
			t.Errorf("%s:%d: %s\n--- got:\n%s\n--- want:\n%s", file, b.line, b.cmd, got, b.expected)
		}
	}
	for _, c := range comments[len(blocks)] {
		rewritten.WriteString(c + "\n")
	}
	if *update {
		if err := os.WriteFile(file, []byte(strings.TrimRight(rewritten.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	} else if failed {
		t.Log("run with -update to accept the new output")
	}
}

// harness drives a Machine from transcript commands and keeps the whole
// log it emitted, so "restart" can replay it into a fresh machine.
type harness struct {
	m    *Machine
	cfg  Config
	now  int64
	log  []Record
	jobs map[string]MarkerJob // latest marker job per transactional id
}

func (h *harness) run(t *testing.T, line string) string {
	fields := strings.Fields(line)
	cmd, args := fields[0], map[string]string{}
	var flags []string
	for _, f := range fields[1:] {
		if k, v, ok := strings.Cut(f, "="); ok {
			args[k] = v
		} else {
			flags = append(flags, f)
		}
	}
	has := func(f string) bool {
		for _, x := range flags {
			if x == f {
				return true
			}
		}
		return false
	}
	num := func(k string, def int64) int64 {
		v, ok := args[k]
		if !ok {
			return def
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("%s: %s=%q is not a number", line, k, v)
		}
		return n
	}
	if at, ok := args["at"]; ok {
		n, _ := strconv.ParseInt(at, 10, 64)
		if n < h.now {
			t.Fatalf("%s: time goes backwards (%d < %d)", line, n, h.now)
		}
		h.now = n
	}
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
			out = append(out, fmt.Sprintf("deadline: %d", fx.Wake.UnixMilli()))
		}
	}
	switch cmd {
	case "init":
		req := InitRequest{TimeoutMs: int32(num("timeout", 60000)), ProducerID: num("pid", -1), ProducerEpoch: int16(num("epoch", -1))}
		if id, ok := args["txn"]; ok {
			req.TxnID = &id
		}
		res, fx := h.m.InitProducerID(time.UnixMilli(h.now), req)
		out = append(out, fmt.Sprintf("%s pid=%d epoch=%d", errName(res.Err), res.ProducerID, res.ProducerEpoch))
		effects(fx)
	case "add":
		req := AddRequest{TxnID: args["txn"], ProducerID: num("pid", -1), ProducerEpoch: int16(num("epoch", -1)),
			Partitions: parseTPs(args["parts"]), VerifyOnly: has("verify"), TV2: has("tv2"), Produce: has("produce")}
		if g := args["groups"]; g != "" {
			req.Groups = strings.Split(g, ",")
		}
		res, fx := h.m.Add(time.UnixMilli(h.now), req)
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
		req := EndRequest{TxnID: args["txn"], ProducerID: num("pid", -1), ProducerEpoch: int16(num("epoch", -1)), Commit: has("commit"), TV2: has("tv2")}
		if !has("commit") && !has("abort") {
			t.Fatalf("%s: say commit or abort", line)
		}
		res, fx := h.m.EndTxn(time.UnixMilli(h.now), req)
		s := fmt.Sprintf("%s pid=%d epoch=%d", errName(res.Err), res.ProducerID, res.ProducerEpoch)
		if res.Pending {
			s += " pending"
		}
		out = append(out, s)
		effects(fx)
	case "markers":
		// The driver finished writing the markers of txn's latest job.
		j, ok := h.jobs[args["txn"]]
		if !ok {
			t.Fatalf("%s: no marker job for %q", line, args["txn"])
		}
		fx := h.m.MarkersWritten(time.UnixMilli(h.now), j)
		if fx.Empty() {
			out = append(out, "stale job ignored")
		}
		effects(fx)
	case "tick":
		fx := h.m.Tick(time.UnixMilli(h.now))
		if fx.Empty() {
			out = append(out, "nothing to do")
		}
		effects(fx)
		if w := h.m.NextWake(); !w.IsZero() {
			out = append(out, fmt.Sprintf("next deadline: %d", w.UnixMilli()))
		}
	case "describe":
		meta, ok := h.m.Get(args["txn"])
		if !ok {
			out = append(out, "not found")
		} else {
			out = append(out, meta.String())
		}
	case "list":
		var f Filter
		if s := args["states"]; s != "" {
			for _, n := range strings.Split(s, ",") {
				st, ok := ParseState(n)
				if !ok {
					t.Fatalf("%s: unknown state %q", line, n)
				}
				f.States = append(f.States, st)
			}
		}
		if s := args["pids"]; s != "" {
			for _, n := range strings.Split(s, ",") {
				p, _ := strconv.ParseInt(n, 10, 64)
				f.ProducerIDs = append(f.ProducerIDs, p)
			}
		}
		f.MinDurationMs = num("duration", 0)
		if p := args["pattern"]; p != "" {
			f.Pattern = regexp.MustCompile(p)
		}
		for _, meta := range h.m.List(time.UnixMilli(h.now), f) {
			out = append(out, meta.String())
		}
		if len(out) == 0 {
			out = append(out, "none")
		}
	case "seed":
		// Put an id into a state that takes too many steps to reach (epoch
		// exhaustion), the way a log record would.
		meta, ok := h.m.Get(args["txn"])
		if !ok {
			meta = Meta{ID: args["txn"], LastProducerID: -1, LastProducerEpoch: -1, NextProducerID: -1, TimeoutMs: 10000, StartMs: -1}
		}
		meta.ProducerID = num("pid", meta.ProducerID)
		meta.ProducerEpoch = int16(num("epoch", int64(meta.ProducerEpoch)))
		h.m.Replay(Record{Txn: &meta})
		h.log = append(h.log, Record{Txn: &meta})
		out = append(out, meta.String())
	case "restart":
		// Replay everything emitted so far (or, with "compacted", only a
		// snapshot of the current state) into a new machine, as the driver
		// does on start, and list the transactions it must finish.
		recs := h.log
		if has("compacted") {
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
		t.Fatalf("unknown command %q", cmd)
	}
	return strings.Join(out, "\n")
}

func errName(e *kerr.Error) string {
	if e == nil {
		return "NONE"
	}
	return e.Message
}

func parseTPs(s string) []TopicPartition {
	if s == "" {
		return nil
	}
	var tps []TopicPartition
	for _, p := range strings.Split(s, ",") {
		topic, idx, _ := strings.Cut(p, "/")
		n, _ := strconv.Atoi(idx)
		tps = append(tps, TopicPartition{Topic: topic, Partition: int32(n)})
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
