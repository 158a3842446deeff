// Package transcript is the plumbing shared by the coordinators' transcript
// tests (internal/txn and internal/group): the walk over testdata files in
// the github.com/cockroachdb/datadriven format, a fake clock that moves only
// when a command says so, and a check that a command names no argument it
// does not take. Each package's test file defines its own commands; only
// tests import this package.
//
// A transcript file is a sequence of commands, each followed by "----" and
// the output it must produce, up to a blank line; lines starting with # are
// comments. Run the tests with -rewrite to regenerate every expected output
// from the code, then review the diff.
package transcript

import (
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
)

// Run runs every file under dir as one subtest named after the file. Each
// file gets fresh state: newFile is called once per file and returns the
// function that runs that file's commands in order.
func Run(t *testing.T, dir string, newFile func(t *testing.T) func(t *testing.T, d *datadriven.TestData) string) {
	datadriven.Walk(t, dir, func(t *testing.T, path string) {
		datadriven.RunTest(t, path, newFile(t))
	})
}

// Clock is a transcript's clock. It starts at a fixed instant and moves only
// through the time arguments every command accepts (see Move), so a
// transcript's output never depends on when it runs.
type Clock struct {
	start, now time.Time
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{start: start, now: start} }

// Now is the clock's current time.
func (c *Clock) Now() time.Time { return c.now }

// Since is how long after the transcript's start t is.
func (c *Clock) Since(t time.Time) time.Duration { return t.Sub(c.start) }

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) { c.now = c.now.Add(d) }

// timeArgs are the arguments Move consumes; every command accepts them.
var timeArgs = []string{"at", "advance"}

// Move applies a command's time arguments before the command runs:
// at=T puts the clock at T after the transcript's start, advance=D moves it
// on by D. T and D are Go durations ("250ms", "3s", "167h59m"); a bare
// number is milliseconds, the unit of Kafka's timeouts. The clock never goes
// back.
func (c *Clock) Move(t testing.TB, d *datadriven.TestData) {
	t.Helper()
	if arg, ok := d.Arg("at"); ok {
		at := c.start.Add(duration(t, d, arg))
		if at.Before(c.now) {
			d.Fatalf(t, "at=%s is before the clock (%s)", arg.Vals[0], c.Since(c.now))
		}
		c.now = at
	}
	if arg, ok := d.Arg("advance"); ok {
		c.Advance(duration(t, d, arg))
	}
}

func duration(t testing.TB, d *datadriven.TestData, arg datadriven.CmdArg) time.Duration {
	t.Helper()
	v := arg.SingleVal(t)
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Duration(ms) * time.Millisecond
	}
	dur, err := time.ParseDuration(v)
	if err != nil || dur < 0 {
		d.Fatalf(t, "%s=%s is not a duration", arg.Key, v)
	}
	return dur
}

// Known fails the test if the command has an argument outside keys (or the
// time arguments), so a misspelt argument cannot silently fall back to its
// default.
func Known(t testing.TB, d *datadriven.TestData, keys ...string) {
	t.Helper()
	for _, a := range d.CmdArgs {
		if !slices.Contains(keys, a.Key) && !slices.Contains(timeArgs, a.Key) {
			d.Fatalf(t, "%s takes no argument %q", d.Cmd, a.Key)
		}
	}
}
