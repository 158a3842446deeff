package cli

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProduceConsumeKeysHeaders(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "events", 1)

	r := mustRun(t, "k1:v1\nk2:v2:with:colons\n:nokey\nk4:\n", "produce", "events", "-b", addr,
		"--key-separator", ":", "--header", "src=test", "--header", "n=a=b")
	if !strings.Contains(r.stderr, "4 records produced to events, 0 failed") {
		t.Errorf("produce summary = %q", r.stderr)
	}

	r = mustRun(t, "", "consume", "events", "-b", addr, "--from-beginning", "--count", "4",
		"--format", `%t %p %o [%k] [%s] %S {%h}\n`)
	want := "events 0 0 [k1] [v1] 2 {src=test,n=a=b}\n" +
		"events 0 1 [k2] [v2:with:colons] 14 {src=test,n=a=b}\n" +
		"events 0 2 [] [nokey] 5 {src=test,n=a=b}\n" +
		"events 0 3 [k4] [] 0 {src=test,n=a=b}\n"
	if r.stdout != want {
		t.Errorf("consume output:\n%s\nwant:\n%s", r.stdout, want)
	}

	// %T is the produce time in milliseconds; the default format is the value.
	r = mustRun(t, "", "consume", "events", "-b", addr, "--from-beginning", "--count", "1", "--format", `%T`)
	ms, err := strconv.ParseInt(r.stdout, 10, 64)
	if err != nil || time.Since(time.UnixMilli(ms)) > time.Minute || time.Since(time.UnixMilli(ms)) < 0 {
		t.Errorf("%%T = %q, want a recent timestamp in ms", r.stdout)
	}
	r = mustRun(t, "", "consume", "events", "-b", addr, "--from-beginning", "--count", "2")
	if r.stdout != "v1\nv2:with:colons\n" {
		t.Errorf("default format output = %q", r.stdout)
	}
}

func TestProduceLinesVerbatim(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "raw", 1)
	// No separator: the whole line is the value, CRLF endings are removed,
	// blank lines are empty records, and a last line needs no newline.
	mustRun(t, "a:b\r\n\nlast", "produce", "raw", "-b", addr)
	r := mustRun(t, "", "consume", "raw", "-b", addr, "--offset", "earliest", "--count", "3", "--format", `<%k|%s>\n`)
	if r.stdout != "<|a:b>\n<|>\n<|last>\n" {
		t.Errorf("consume output = %q", r.stdout)
	}
}

func TestProduceMissingSeparatorFails(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "sep", 1)
	r := wantErr(t, "1 of 2 records failed", "k=v\nnovalue\n", "produce", "sep", "-b", addr, "--key-separator", "=")
	if !strings.Contains(r.stderr, `line 2: key separator "=" not found`) {
		t.Errorf("stderr = %q", r.stderr)
	}
	if !strings.Contains(r.stderr, "1 records produced to sep, 1 failed") {
		t.Errorf("summary = %q", r.stderr)
	}
}

func TestProduceAcksAndCompression(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "ac", 1)
	var want strings.Builder
	for i, tc := range [][]string{
		{"--acks", "0"},
		{"--acks", "1", "--compression", "gzip"},
		{"--acks", "all", "--compression", "snappy"},
		{"--acks", "all", "--idempotent=false", "--compression", "lz4"},
		{"--compression", "zstd"},
	} {
		line := "line-" + strconv.Itoa(i)
		want.WriteString(line + "\n")
		args := append([]string{"produce", "ac", "-b", addr}, tc...)
		r := mustRun(t, line+"\n", args...)
		if !strings.Contains(r.stderr, "1 records produced to ac, 0 failed") {
			t.Errorf("%v: summary = %q", tc, r.stderr)
		}
	}
	r := mustRun(t, "", "consume", "ac", "-b", addr, "--from-beginning", "--count", "5")
	if r.stdout != want.String() {
		t.Errorf("consumed %q, want %q", r.stdout, want.String())
	}
}

func TestProduceFlagErrors(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "f", 1)
	wantErr(t, `invalid --acks "2": must be 0, 1 or all`, "x\n", "produce", "f", "-b", addr, "--acks", "2")
	wantErr(t, "--idempotent requires --acks all", "x\n", "produce", "f", "-b", addr, "--acks", "1", "--idempotent")
	wantErr(t, `invalid --compression "brotli"`, "x\n", "produce", "f", "-b", addr, "--compression", "brotli")
	wantErr(t, `invalid --header "nokv"`, "x\n", "produce", "f", "-b", addr, "--header", "nokv")
	wantErr(t, "unknown flag: --nope", "x\n", "produce", "f", "-b", addr, "--nope")
	wantErr(t, "accepts 1 arg", "x\n", "produce", "-b", addr)
	// Nothing was produced by any of these.
	r := mustRun(t, "", "consume", "f", "-b", addr, "--from-beginning", "--timeout", "300ms")
	if r.stdout != "" {
		t.Errorf("rejected produce commands wrote %q", r.stdout)
	}
}

func TestProduceMissingTopicFails(t *testing.T) {
	addr := startBroker(t)
	r := wantErr(t, "1 of 1 records failed", "x\n", "produce", "missing", "-b", addr, "--delivery-timeout", "10s")
	if !strings.Contains(r.stderr, `topic "missing" does not exist`) {
		t.Errorf("stderr = %q", r.stderr)
	}
}

func TestProduceConsumePartition(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "parts", 3)
	mustRun(t, "a\nb\n", "produce", "parts", "-b", addr, "--partition", "2")
	mustRun(t, "c\n", "produce", "parts", "-b", addr, "--partition", "0")

	r := mustRun(t, "", "consume", "parts", "-b", addr, "--partition", "2", "--from-beginning", "--count", "2", "--format", `%p:%o:%s\n`)
	if r.stdout != "2:0:a\n2:1:b\n" {
		t.Errorf("partition 2 = %q", r.stdout)
	}
	r = mustRun(t, "", "consume", "parts", "-b", addr, "--partition", "2", "--offset", "1", "--count", "1", "--format", `%p:%o:%s\n`)
	if r.stdout != "2:1:b\n" {
		t.Errorf("partition 2 from offset 1 = %q", r.stdout)
	}
	// All partitions.
	r = mustRun(t, "", "consume", "parts", "-b", addr, "--from-beginning", "--count", "3", "--format", `%p:%s\n`)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.Contains(r.stdout, "0:c\n") || !strings.Contains(r.stdout, "2:a\n") || !strings.Contains(r.stdout, "2:b\n") {
		t.Errorf("all partitions = %q", r.stdout)
	}
	wantErr(t, `partition 5 of topic "parts" does not exist (it has 3 partitions)`, "",
		"consume", "parts", "-b", addr, "--partition", "5")
}

func TestConsumeOffsets(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "offs", 1)
	mustRun(t, "r0\nr1\nr2\nr3\nr4\n", "produce", "offs", "-b", addr)

	for _, tc := range []struct {
		offset string
		count  string
		want   string
	}{
		{"2", "2", "2:r2\n3:r3\n"},
		{"earliest", "1", "0:r0\n"},
		{"-2", "2", "3:r3\n4:r4\n"},
		{"0", "5", "0:r0\n1:r1\n2:r2\n3:r3\n4:r4\n"},
	} {
		r := mustRun(t, "", "consume", "offs", "-b", addr, "--offset", tc.offset, "--count", tc.count, "--format", `%o:%s\n`)
		if r.stdout != tc.want {
			t.Errorf("--offset %s --count %s = %q, want %q", tc.offset, tc.count, r.stdout, tc.want)
		}
	}

	// The default and --offset latest start at the end: nothing to print
	// until new records arrive, so --timeout ends the command cleanly.
	for _, args := range [][]string{{}, {"--offset", "latest"}} {
		all := append([]string{"consume", "offs", "-b", addr, "--timeout", "500ms"}, args...)
		r := mustRun(t, "", all...)
		if r.stdout != "" {
			t.Errorf("%v printed %q, want nothing", args, r.stdout)
		}
	}
	// --timeout without --count stops once the backlog is printed.
	r := mustRun(t, "", "consume", "offs", "-b", addr, "--from-beginning", "--timeout", "500ms")
	if r.stdout != "r0\nr1\nr2\nr3\nr4\n" {
		t.Errorf("--from-beginning --timeout = %q", r.stdout)
	}
	r = mustRun(t, "", "consume", "offs", "-b", addr, "--from-beginning", "--count", "2", "--isolation", "read_committed")
	if r.stdout != "r0\nr1\n" {
		t.Errorf("read_committed = %q", r.stdout)
	}
}

func TestConsumeSeesNewRecords(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "live", 1)
	mustRun(t, "old\n", "produce", "live", "-b", addr)

	done := make(chan result, 1)
	go func() { done <- run(t, "", "consume", "live", "-b", addr, "--count", "1", "--timeout", "20s") }()
	// Keep producing until the consumer, which starts at the end, sees one.
	for i := 0; ; i++ {
		mustRun(t, "new\n", "produce", "live", "-b", addr)
		select {
		case r := <-done:
			if r.err != nil || r.stdout != "new\n" {
				t.Fatalf("consume = %q, %v; want new", r.stdout, r.err)
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
		if i == 50 {
			t.Fatal("consumer never printed a new record")
		}
	}
}

func TestConsumeGroupResumesAfterCommit(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "grp", 2)
	mustRun(t, "a\nb\nc\nd\ne\n", "produce", "grp", "-b", addr, "--partition", "0")
	mustRun(t, "f\n", "produce", "grp", "-b", addr, "--partition", "1")

	r := mustRun(t, "", "consume", "grp", "-b", addr, "--group", "g1", "--from-beginning", "--count", "2", "--format", `%p:%s\n`)
	first := r.stdout
	if strings.Count(first, "\n") != 2 {
		t.Fatalf("first run = %q", first)
	}
	// The second run resumes after what the first printed and committed;
	// --from-beginning only applies where the group has no commit.
	r = mustRun(t, "", "consume", "grp", "-b", addr, "--group", "g1", "--from-beginning", "--count", "4", "--format", `%p:%s\n`)
	seen := first + r.stdout
	for _, want := range []string{"0:a\n", "0:b\n", "0:c\n", "0:d\n", "0:e\n", "1:f\n"} {
		if strings.Count(seen, want) != 1 {
			t.Errorf("%q printed %d times over both runs:\nfirst: %q\nsecond: %q", want, strings.Count(seen, want), first, r.stdout)
		}
	}
	// Everything is committed: a third run finds nothing.
	r = mustRun(t, "", "consume", "grp", "-b", addr, "--group", "g1", "--from-beginning", "--timeout", "1s")
	if r.stdout != "" {
		t.Errorf("third run printed %q, want nothing", r.stdout)
	}
	// Another group starts over.
	r = mustRun(t, "", "consume", "grp", "-b", addr, "--group", "g2", "--from-beginning", "--count", "6")
	if strings.Count(r.stdout, "\n") != 6 {
		t.Errorf("new group printed %q", r.stdout)
	}
}

func TestConsumeErrors(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "c", 1)
	wantErr(t, `topic "nowhere" does not exist`, "", "consume", "nowhere", "-b", addr)
	wantErr(t, "--from-beginning and --offset cannot be used together", "", "consume", "c", "-b", addr, "--from-beginning", "--offset", "3")
	wantErr(t, `invalid --offset "soon"`, "", "consume", "c", "-b", addr, "--offset", "soon")
	wantErr(t, `invalid --isolation "dirty"`, "", "consume", "c", "-b", addr, "--isolation", "dirty")
	wantErr(t, "unknown directive %x", "", "consume", "c", "-b", addr, "--format", "%x")
	wantErr(t, "--partition cannot be used with --group", "", "consume", "c", "-b", addr, "--group", "g", "--partition", "0")
	wantErr(t, "invalid --count -1", "", "consume", "c", "-b", addr, "--count", "-1")
	wantErr(t, "unknown flag: --follow", "", "consume", "c", "-b", addr, "--follow")
}

func TestConsumeStopsOnContextCancel(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "stop", 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan result, 1)
	go func() { done <- runCtx(t, ctx, "", "consume", "stop", "-b", addr) }()
	time.Sleep(300 * time.Millisecond)
	cancel()
	select {
	case r := <-done:
		if r.err != nil {
			t.Errorf("consume after cancel: %v", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("consume did not stop after its context was cancelled")
	}
}

func TestConsumeExitsCleanlyOnSIGINT(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "sig", 1)
	mustRun(t, "one\n", "produce", "sig", "-b", addr)

	out := newSignalWriter()
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetArgs([]string{"consume", "sig", "-b", addr, "--from-beginning", "--group", "sg"})
		root.SetIn(strings.NewReader(""))
		root.SetOut(out)
		root.SetErr(out)
		done <- root.Execute()
	}()
	// Once a record is printed the signal handler is installed, so the
	// signal below cannot kill the test binary.
	waitFor(t, out.wrote, 15*time.Second, "the first record")
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("consume after SIGINT: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("consume did not stop on SIGINT")
	}
	if out.String() != "one\n" {
		t.Errorf("output = %q", out.String())
	}
	// The printed record was committed before exiting.
	r := mustRun(t, "", "consume", "sig", "-b", addr, "--group", "sg", "--from-beginning", "--timeout", "1s")
	if r.stdout != "" {
		t.Errorf("group resumed with %q, want nothing", r.stdout)
	}
}

func TestProduceMissingPartitionFails(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "one", 1)
	wantErr(t, `partition 7 of topic "one" does not exist (it has 1 partitions)`, "x\n", "produce", "one", "-b", addr, "--partition", "7")
	wantErr(t, `topic "none" does not exist`, "x\n", "produce", "none", "-b", addr, "--partition", "0")
}

// TestConsumeExitsCleanlyOnSIGINTWithoutGroup covers the signal handling
// alone; TestConsumeExitsCleanlyOnSIGINT adds the commit on exit.
func TestConsumeExitsCleanlyOnSIGINTWithoutGroup(t *testing.T) {
	addr := startBroker(t)
	createTopic(t, addr, "sig", 1)
	mustRun(t, "one\n", "produce", "sig", "-b", addr)

	out := newSignalWriter()
	done := make(chan error, 1)
	go func() {
		root := newRoot()
		root.SetArgs([]string{"consume", "sig", "-b", addr, "--from-beginning"})
		root.SetIn(strings.NewReader(""))
		root.SetOut(out)
		root.SetErr(out)
		done <- root.Execute()
	}()
	waitFor(t, out.wrote, 15*time.Second, "the first record")
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("consume after SIGINT: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("consume did not stop on SIGINT")
	}
	if out.String() != "one\n" {
		t.Errorf("output = %q", out.String())
	}
}
