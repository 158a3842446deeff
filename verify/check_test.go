package verify

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// hist builds hand-written histories.
type hist struct {
	h History
	t int64
}

const (
	tin  = "in"
	tout = "out"
)

func (b *hist) add(e Event) {
	b.t++
	e.Time = b.t
	b.h = append(b.h, e)
}

func newHist(m Mode) *hist {
	b := &hist{}
	b.add(Event{Proc: "verify", Type: EvRun, Topic: tin, Values: []string{tout}, Detail: string(m)})
	return b
}

// write is a producer's send and acknowledgement.
func (b *hist) write(proc, topic string, p int32, o int64, v string, txn int64) {
	b.add(Event{Proc: proc, Type: EvSend, Topic: topic, Partition: p, Value: v, Txn: txn})
	b.add(Event{Proc: proc, Type: EvAck, Topic: topic, Partition: p, Offset: o, Value: v, Txn: txn})
}

func (b *hist) poll(proc string, p int32, rc bool, offs []int64, vals ...string) {
	b.add(Event{Proc: proc, Type: EvPoll, Topic: tin, Partition: p, Offsets: offs, Values: vals, ReadCommitted: rc})
}

func (b *hist) final(topic string, p int32, offs []int64, vals ...string) {
	b.add(Event{Proc: "final", Type: EvFinal, Topic: topic, Partition: p, Offsets: offs, Values: vals})
}

func (b *hist) groupOffsets(next map[int32]int64) {
	b.add(Event{Proc: "verify", Type: EvGroupOffsets, Commits: map[string]map[int32]int64{tin: next}})
}

// clean is a correct run: producer p0.0 writes a, b to partition 0 and c to
// partition 1; pipeline c0.0 copies each once, in order, and commits.
func clean(m Mode) *hist {
	b := newHist(m)
	a, bb, c := InputValue("p0.0", 0), InputValue("p0.0", 1), InputValue("p0.0", 2)
	b.write("p0.0", tin, 0, 0, a, 0)
	b.write("p0.0", tin, 0, 1, bb, 0)
	b.write("p0.0", tin, 1, 0, c, 0)
	b.add(Event{Proc: "c0.0", Type: EvStart})
	b.add(Event{Proc: "c0.0", Type: EvAssign, Parts: map[string][]int32{tin: {0, 1}}})
	b.poll("c0.0", 0, true, []int64{0, 1}, a, bb)
	b.poll("c0.0", 1, true, []int64{0}, c)
	b.write("c0.0", tout, 0, 0, OutputValue(a, "c0.0", 0), 0)
	b.write("c0.0", tout, 0, 1, OutputValue(bb, "c0.0", 1), 0)
	b.write("c0.0", tout, 1, 0, OutputValue(c, "c0.0", 2), 0)
	b.add(Event{Proc: "c0.0", Type: EvCommit, OK: true, Commits: map[string]map[int32]int64{tin: {0: 2, 1: 1}}})
	return b
}

// finish adds the final reads of a clean run.
func (b *hist) finishClean() History {
	a, bb, c := InputValue("p0.0", 0), InputValue("p0.0", 1), InputValue("p0.0", 2)
	b.final(tin, 0, []int64{0, 1}, a, bb)
	b.final(tin, 1, []int64{0}, c)
	b.final(tout, 0, []int64{0, 1}, OutputValue(a, "c0.0", 0), OutputValue(bb, "c0.0", 1))
	b.final(tout, 1, []int64{0}, OutputValue(c, "c0.0", 2))
	b.groupOffsets(map[int32]int64{0: 2, 1: 1})
	return b.h
}

func TestCheckCleanHistoryPassesEveryMode(t *testing.T) {
	for _, m := range Modes {
		r := Check(clean(m).finishClean(), CheckOptions{})
		if !r.OK || len(r.Violations) != 0 {
			t.Fatalf("%s: clean history judged %+v", m, r)
		}
		if r.Mode != m || r.Acked != 3 || r.Attempted != 3 || r.InputRecords != 3 || r.Consumed != 3 || r.Polled != 3 {
			t.Fatalf("%s: counts %+v", m, r)
		}
		for _, a := range Forbidden(ExactlyOnce) {
			if r.Count(a) != 0 {
				t.Fatalf("%s: %s = %d in a clean history", m, a, r.Count(a))
			}
		}
	}
}

// Each case builds a history with one anomaly and says what Check must
// count and which modes it breaks.
func TestCheckFindsEachAnomaly(t *testing.T) {
	a, bb, c := InputValue("p0.0", 0), InputValue("p0.0", 1), InputValue("p0.0", 2)
	oa, ob, oc := OutputValue(a, "c0.0", 0), OutputValue(bb, "c0.0", 1), OutputValue(c, "c0.0", 2)
	cases := []struct {
		name   string
		build  func() History
		counts map[string]int
		breaks []Mode
		extra  func(t *testing.T, r Result)
	}{
		{
			name: "acknowledged write missing from the log",
			build: func() History {
				b := clean(AtLeastOnce)
				d := InputValue("p0.0", 3)
				b.write("p0.0", tin, 1, 1, d, 0) // acked at 1/1, never stored
				return b.finishClean()
			},
			counts: map[string]int{AnomalyLost: 1},
			breaks: []Mode{AtLeastOnce, ExactlyOnce},
			extra: func(t *testing.T, r Result) {
				if r.LostWrites != 1 || r.Acked != 4 {
					t.Fatalf("lost writes %d acked %d", r.LostWrites, r.Acked)
				}
			},
		},
		{
			name: "committed but never processed (commit before processing, then a crash)",
			build: func() History {
				b := clean(AtMostOnce)
				d := InputValue("p0.0", 3)
				b.write("p0.0", tin, 1, 1, d, 0)
				b.poll("c0.0", 1, true, []int64{1}, d)
				b.add(Event{Proc: "c0.0", Type: EvCommit, OK: true, Commits: map[string]map[int32]int64{tin: {1: 2}}})
				b.final(tin, 0, []int64{0, 1}, a, bb)
				b.final(tin, 1, []int64{0, 1}, c, d)
				b.final(tout, 0, []int64{0, 1}, oa, ob)
				b.final(tout, 1, []int64{0}, oc)
				b.groupOffsets(map[int32]int64{0: 2, 1: 2})
				return b.h
			},
			counts: map[string]int{AnomalyLost: 1},
			breaks: []Mode{AtLeastOnce, ExactlyOnce},
			extra: func(t *testing.T, r Result) {
				if r.LostWrites != 0 || r.Unseen != 0 || r.Consumed != 3 {
					t.Fatalf("lost writes %d unseen %d consumed %d", r.LostWrites, r.Unseen, r.Consumed)
				}
			},
		},
		{
			name: "logged but the group never got there (unseen)",
			build: func() History {
				b := clean(AtLeastOnce)
				d := InputValue("p0.0", 3)
				b.write("p0.0", tin, 1, 1, d, 0)
				b.final(tin, 0, []int64{0, 1}, a, bb)
				b.final(tin, 1, []int64{0, 1}, c, d)
				b.final(tout, 0, []int64{0, 1}, oa, ob)
				b.final(tout, 1, []int64{0}, oc)
				b.groupOffsets(map[int32]int64{0: 2, 1: 1})
				return b.h
			},
			counts: map[string]int{},
			breaks: []Mode{AtLeastOnce, ExactlyOnce}, // inconclusive, not violated
			extra: func(t *testing.T, r Result) {
				forbidsLoss := r.Mode != AtMostOnce
				if r.Unseen != 1 || r.Inconclusive != forbidsLoss || len(r.Violations) != 0 || len(r.Examples["unseen"]) != 1 {
					t.Fatalf("unseen %d inconclusive %v violations %v", r.Unseen, r.Inconclusive, r.Violations)
				}
			},
		},
		{
			name: "producer retry stored a value twice",
			build: func() History {
				b := clean(AtLeastOnce)
				b.final(tin, 0, []int64{0, 1, 2}, a, bb, bb)
				b.final(tin, 1, []int64{0}, c)
				b.final(tout, 0, []int64{0, 1, 2}, oa, ob, OutputValue(bb, "c0.0", 3))
				b.final(tout, 1, []int64{0}, oc)
				b.groupOffsets(map[int32]int64{0: 3, 1: 1})
				return b.h
			},
			counts: map[string]int{AnomalyDuplicates: 1},
			breaks: []Mode{AtMostOnce, ExactlyOnce},
		},
		{
			name: "reprocessed after a crash before commit",
			build: func() History {
				b := clean(AtLeastOnce)
				b.add(Event{Proc: "c0.1", Type: EvStart})
				b.poll("c0.1", 1, true, []int64{0}, c)
				b.write("c0.1", tout, 1, 1, OutputValue(c, "c0.1", 0), 0)
				b.final(tin, 0, []int64{0, 1}, a, bb)
				b.final(tin, 1, []int64{0}, c)
				b.final(tout, 0, []int64{0, 1}, oa, ob)
				b.final(tout, 1, []int64{0, 1}, oc, OutputValue(c, "c0.1", 0))
				b.groupOffsets(map[int32]int64{0: 2, 1: 1})
				return b.h
			},
			counts: map[string]int{AnomalyDuplicates: 1},
			breaks: []Mode{AtMostOnce, ExactlyOnce},
		},
		{
			name: "read_committed poll returned an aborted value",
			build: func() History {
				b := clean(ExactlyOnce)
				x := InputValue("p1.0", 0)
				b.write("p1.0", tin, 1, 1, x, 1)
				b.add(Event{Proc: "p1.0", Type: EvTxnAbort, Txn: 1, Values: []string{x}})
				b.poll("c0.0", 1, true, []int64{1}, x)
				return b.finishClean()
			},
			counts: map[string]int{AnomalyAbortedReads: 1},
			breaks: []Mode{ExactlyOnce},
			extra: func(t *testing.T, r Result) {
				if r.Acked != 3 || r.Lost != 0 {
					t.Fatalf("an aborted write counted as acknowledged: acked %d lost %d", r.Acked, r.Lost)
				}
			},
		},
		{
			name: "an aborted value's effect reached the output",
			build: func() History {
				b := clean(ExactlyOnce)
				x := InputValue("p1.0", 0)
				b.write("p1.0", tin, 1, 1, x, 1)
				b.add(Event{Proc: "p1.0", Type: EvTxnAbort, Txn: 1, Values: []string{x}})
				b.poll("c0.0", 1, false, []int64{1}, x) // read_uncommitted: no anomaly by itself
				b.final(tin, 0, []int64{0, 1}, a, bb)
				b.final(tin, 1, []int64{0}, c)
				b.final(tout, 0, []int64{0, 1}, oa, ob)
				b.final(tout, 1, []int64{0, 1}, oc, OutputValue(x, "c0.0", 3))
				b.groupOffsets(map[int32]int64{0: 2, 1: 2})
				return b.h
			},
			counts: map[string]int{AnomalyAbortedReads: 1},
			breaks: []Mode{ExactlyOnce},
		},
		{
			name: "an aborted pipeline write visible to the final reader",
			build: func() History {
				b := clean(ExactlyOnce)
				z := OutputValue(a, "c0.0", 9)
				b.write("c0.0", tout, 0, 2, z, 2)
				b.add(Event{Proc: "c0.0", Type: EvTxnAbort, Txn: 2, Values: []string{z}})
				b.final(tin, 0, []int64{0, 1}, a, bb)
				b.final(tin, 1, []int64{0}, c)
				b.final(tout, 0, []int64{0, 1, 2}, oa, ob, z)
				b.final(tout, 1, []int64{0}, oc)
				b.groupOffsets(map[int32]int64{0: 2, 1: 1})
				return b.h
			},
			counts: map[string]int{AnomalyAbortedReads: 1, AnomalyDuplicates: 1},
			breaks: []Mode{AtMostOnce, ExactlyOnce},
		},
		{
			name: "one producer's values stored out of send order",
			build: func() History {
				b := newHist(ExactlyOnce)
				b.write("p0.0", tin, 0, 1, a, 0) // sent first, stored second
				b.write("p0.0", tin, 0, 0, bb, 0)
				b.poll("c0.0", 0, true, []int64{0, 1}, bb, a)
				b.write("c0.0", tout, 0, 0, OutputValue(bb, "c0.0", 0), 0)
				b.write("c0.0", tout, 0, 1, OutputValue(a, "c0.0", 1), 0)
				b.final(tin, 0, []int64{0, 1}, bb, a)
				b.final(tout, 0, []int64{0, 1}, OutputValue(bb, "c0.0", 0), OutputValue(a, "c0.0", 1))
				b.groupOffsets(map[int32]int64{0: 2})
				return b.h
			},
			// The output follows the input log's order, so only the
			// input counts.
			counts: map[string]int{AnomalyOrderViolations: 1},
			breaks: []Mode{ExactlyOnce},
		},
		{
			name: "output out of input order",
			build: func() History {
				b := newHist(ExactlyOnce)
				b.write("p0.0", tin, 0, 0, a, 0)
				b.write("p0.0", tin, 0, 1, bb, 0)
				b.poll("c0.0", 0, true, []int64{0, 1}, a, bb)
				b.write("c0.0", tout, 0, 0, OutputValue(bb, "c0.0", 0), 0)
				b.write("c0.0", tout, 0, 1, OutputValue(a, "c0.0", 1), 0)
				b.final(tin, 0, []int64{0, 1}, a, bb)
				b.final(tout, 0, []int64{0, 1}, OutputValue(bb, "c0.0", 0), OutputValue(a, "c0.0", 1))
				b.groupOffsets(map[int32]int64{0: 2})
				return b.h
			},
			counts: map[string]int{AnomalyOrderViolations: 1},
			breaks: []Mode{ExactlyOnce},
		},
		{
			name: "one offset, two values",
			build: func() History {
				b := clean(AtMostOnce)
				b.poll("c9.0", 0, true, []int64{1}, "p7.0-0")
				return b.finishClean()
			},
			counts: map[string]int{AnomalyInconsistentOffsets: 1},
			breaks: []Mode{AtMostOnce, AtLeastOnce, ExactlyOnce},
		},
		{
			name: "a poll went backwards without a rebalance",
			build: func() History {
				b := clean(ExactlyOnce)
				b.poll("c0.0", 0, true, []int64{1}, bb)
				return b.finishClean()
			},
			counts: map[string]int{AnomalyNonMonotonicPolls: 1},
			breaks: []Mode{ExactlyOnce},
		},
		{
			name: "a poll skipped a committed record",
			build: func() History {
				b := newHist(ExactlyOnce)
				vs := []string{InputValue("p0.0", 0), InputValue("p0.0", 1), InputValue("p0.0", 2)}
				for i, v := range vs {
					b.write("p0.0", tin, 0, int64(i), v, 0)
				}
				b.poll("c0.0", 0, true, []int64{0}, vs[0])
				b.poll("c0.0", 0, true, []int64{2}, vs[2])
				b.poll("c0.1", 0, true, []int64{0, 2}, vs[0], vs[2])
				var outs []string
				for i, v := range vs {
					outs = append(outs, OutputValue(v, "c0.2", int64(i)))
				}
				b.final(tin, 0, []int64{0, 1, 2}, vs...)
				b.final(tout, 0, []int64{0, 1, 2}, outs...)
				b.groupOffsets(map[int32]int64{0: 3})
				return b.h
			},
			counts: map[string]int{AnomalyPollSkips: 2},
			breaks: []Mode{ExactlyOnce},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.build()
			for _, m := range Modes {
				r := Check(h, CheckOptions{Promise: m})
				for _, an := range Forbidden(ExactlyOnce) {
					if got, want := r.Count(an), tc.counts[an]; got != want {
						t.Errorf("%s: %s = %d, want %d (examples %v)", m, an, got, want, r.Examples)
					}
				}
				broken := false
				for _, bm := range tc.breaks {
					broken = broken || bm == m
				}
				if r.OK == broken {
					t.Errorf("%s: ok=%v violations=%v, want broken=%v", m, r.OK, r.Violations, broken)
				}
				for an, n := range tc.counts {
					if n > 0 && len(r.Examples[an]) == 0 {
						t.Errorf("%s: no example for %s", m, an)
					}
				}
				if tc.extra != nil {
					tc.extra(t, r)
				}
			}
		})
	}
}

func TestCheckRebalanceAndRewindAllowPollsToGoBack(t *testing.T) {
	for _, ev := range []EventType{EvAssign, EvRevoke, EvLost, EvReset} {
		b := clean(ExactlyOnce)
		b.add(Event{Proc: "c0.0", Type: ev})
		b.poll("c0.0", 0, true, []int64{0, 1}, InputValue("p0.0", 0), InputValue("p0.0", 1))
		r := Check(b.finishClean(), CheckOptions{})
		if !r.OK || r.NonMonotonicPolls != 0 {
			t.Fatalf("after %s: %+v", ev, r)
		}
	}
}

func TestCheckTransactionOutcomeDecidesAcknowledgement(t *testing.T) {
	b := newHist(ExactlyOnce)
	x, y, z := InputValue("p0.0", 0), InputValue("p0.0", 1), InputValue("p0.0", 2)
	b.write("p0.0", tin, 0, 0, x, 1)
	b.add(Event{Proc: "p0.0", Type: EvTxnCommit, Txn: 1, Values: []string{x}})
	b.write("p0.0", tin, 0, 2, y, 2)
	b.add(Event{Proc: "p0.0", Type: EvTxnUnknown, Txn: 2, Values: []string{y}})
	b.write("p0.0", tin, 0, 4, z, 3) // killed before the outcome was known
	b.final(tin, 0, []int64{0}, x)
	b.final(tout, 0, []int64{0}, OutputValue(x, "c0.0", 0))
	b.groupOffsets(map[int32]int64{0: 2})
	r := Check(b.h, CheckOptions{})
	if !r.OK || r.Acked != 1 || r.Lost != 0 || r.Attempted != 3 {
		t.Fatalf("%+v", r)
	}
}

func TestReadHistoryIgnoresATornLastLine(t *testing.T) {
	var buf bytes.Buffer
	h := clean(AtLeastOnce).finishClean()
	if err := WriteHistory(&buf, h); err != nil {
		t.Fatal(err)
	}
	full := buf.String()
	got, err := ReadHistory(strings.NewReader(full + `{"t":99,"proc":"p0.0","ty`))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("round trip changed the history")
	}
	if _, err := ReadHistory(strings.NewReader(`{"t":1,"pro` + "\n" + full)); err == nil {
		t.Fatal("a malformed line in the middle was accepted")
	}
}

func TestRecorderFilesMergeByTime(t *testing.T) {
	dir := t.TempDir()
	r1, err := CreateRecorder(filepath.Join(dir, "a.jsonl"), "a")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := CreateRecorder(filepath.Join(dir, "b.jsonl"), "b")
	if err != nil {
		t.Fatal(err)
	}
	r1.Record(Event{Time: 1, Type: EvSend, Value: "a-0"})
	r2.Record(Event{Time: 2, Type: EvSend, Value: "b-0"})
	r1.Record(Event{Time: 3, Type: EvAck, Value: "a-0"})
	r1.Record(Event{Type: EvAck, Value: "a-1"}) // stamped now
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ignored.log"), []byte("not json"), 0o644)
	h, err := ReadHistoryDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range h {
		got = append(got, e.Proc+":"+e.Value)
	}
	if want := []string{"a:a-0", "b:b-0", "a:a-0", "a:a-1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("merged %v, want %v", got, want)
	}
}

func TestValueHelpers(t *testing.T) {
	in := InputValue("p3.2", 41)
	out := OutputValue(in, "c1.0", 7)
	if SourceValue(out) != in || SourceValue(in) != in {
		t.Fatalf("SourceValue(%q) = %q", out, SourceValue(out))
	}
	proc, seq, err := parseInputValue(in)
	if err != nil || proc != "p3.2" || seq != 41 {
		t.Fatalf("parse %q: %q %d %v", in, proc, seq, err)
	}
}

// A poll that went backwards is one non-monotonic poll, not also a skip:
// the two checks walk the same polls and must not both claim it.
func TestCheckBackwardPollIsNotAlsoASkip(t *testing.T) {
	b := newHist(ExactlyOnce)
	vs := []string{InputValue("p0.0", 0), InputValue("p0.0", 1), InputValue("p0.0", 2), InputValue("p0.0", 3)}
	for i, v := range vs {
		b.write("p0.0", tin, 0, int64(i), v, 0)
	}
	b.poll("c0.0", 0, true, []int64{0}, vs[0])
	b.poll("c0.0", 0, true, []int64{3, 1}, vs[3], vs[1]) // back within the poll, and 0 -> 3 jumps two
	var outs []string
	for i, v := range vs {
		outs = append(outs, OutputValue(v, "c0.1", int64(i)))
	}
	b.final(tin, 0, []int64{0, 1, 2, 3}, vs...)
	b.final(tout, 0, []int64{0, 1, 2, 3}, outs...)
	b.groupOffsets(map[int32]int64{0: 4})
	r := Check(b.h, CheckOptions{})
	if r.NonMonotonicPolls != 1 || r.PollSkips != 0 {
		t.Fatalf("non-monotonic %d skips %d, want 1 and 0 (examples %v)", r.NonMonotonicPolls, r.PollSkips, r.Examples)
	}
}

// Examples are a deterministic few: the first ones in value order, capped,
// while the count covers them all.
func TestCheckExamplesAreTheFirstFewInValueOrder(t *testing.T) {
	b := clean(AtLeastOnce)
	var want []string
	for i := 12; i >= 3; i-- { // acknowledged at 1/1.., never stored, acked in reverse order
		d := InputValue("p0.0", int64(i))
		b.write("p0.0", tin, 1, int64(i), d, 0)
	}
	for _, i := range []int{10, 11, 12, 3, 4} { // sorted as strings
		want = append(want, InputValue("p0.0", int64(i))+" acknowledged at in/1@"+strconv.Itoa(i)+" is not in the input log")
	}
	r := Check(b.finishClean(), CheckOptions{})
	if r.Lost != 10 || r.LostWrites != 10 {
		t.Fatalf("lost %d lost writes %d, want 10", r.Lost, r.LostWrites)
	}
	if got := r.Examples[AnomalyLost]; !reflect.DeepEqual(got, want) {
		t.Fatalf("examples %q, want %q", got, want)
	}
}
