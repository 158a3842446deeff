package e2e

// High availability of the outbox relay: two `exactly outbox relay`
// processes with one --name form one active instance and one standby.

import (
	"context"
	"database/sql"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestOutboxRelayHA: relay A starts and becomes active; relay B with the
// same name waits as a standby and does not start relaying. A is
// SIGKILLed: B takes over (the take-over time is logged). A restarted
// becomes the standby (no turn-taking). Writers insert throughout; every
// row is published exactly once, versions 1..n per aggregate.
func TestOutboxRelayHA(t *testing.T) {
	for _, mode := range []string{"poll", "cdc"} {
		t.Run(mode, func(t *testing.T) { outboxRelayHA(t, mode) })
	}
}

func outboxRelayHA(t *testing.T, mode string) {
	const writers, aggregates = 3, 8
	ctx := context.Background()
	broker := startBroker(t, t.TempDir(), freePort(t))
	db, err := sql.Open("pgx", testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	schema := outboxSchema(t, db, "e2e_ha_")
	var procs []*childProc
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
	})
	if mode == "cdc" {
		requireLogical(t, db)
	}
	table := schema + ".outbox"
	if code, out := runExactly(t, "outbox", "init", "--dsn", testenv.PostgresDSN(), "--table", table); code != 0 {
		t.Fatalf("exactly outbox init: exit %d\n%s", code, out)
	}
	prefix := "ha." + mode + "."
	topic := prefix + "order"
	{
		cl, err := kgo.NewClient(kgo.SeedBrokers(broker.addr))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := kadm.NewClient(cl).CreateTopic(ctx, 2, 1, nil, topic)
		cl.Close()
		if err != nil || resp.Err != nil {
			t.Fatal(err, resp.Err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	writeErr := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), 5))
			for {
				select {
				case <-stop:
					return
				default:
				}
				aggs := []int{rng.IntN(aggregates), rng.IntN(aggregates)}
				slices.Sort(aggs)
				if err := insertOutboxRows(ctx, db, table, "T", aggs); err != nil {
					writeErr <- err
					return
				}
				time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
			}
		}()
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriters()

	dir := t.TempDir()
	logA, logB := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	args := []string{"--dsn", testenv.PostgresDSN(), "--table", table, "--bootstrap", broker.addr, "--topic-prefix", prefix,
		"--name", schema, "--checkpoint-topic", "ckpt-" + schema, "--poll-interval", "20ms", "--lock-poll", "200ms"}
	if mode == "cdc" {
		args = append(args, "--cdc", "--slot", schema)
	}
	const active, standby = " -> " + "ha.", "standby, waiting"
	start := func(path string) *childProc {
		p := startRelay(t, path, args...)
		procs = append(procs, p)
		return p
	}
	size := func(path string) int { b, _ := os.ReadFile(path); return len(b) }
	a := start(logA)
	logWait(t, logA, 0, active, a)
	b := start(logB)
	logWait(t, logB, 0, standby, b)
	time.Sleep(2 * time.Second)
	if bl, _ := os.ReadFile(logB); strings.Contains(string(bl), active) {
		t.Fatalf("the standby started relaying while the active one runs:\n%s", bl)
	}

	killed := time.Now()
	a.kill()
	logWait(t, logB, 0, active, b)
	takeover := time.Since(killed)

	from := size(logA)
	a2 := start(logA)
	logWait(t, logA, from, standby, a2)
	time.Sleep(2 * time.Second)
	if al, _ := os.ReadFile(logA); strings.Contains(string(al[from:]), active) {
		t.Fatalf("the restarted instance took over from a live active one (turn-taking):\n%s", al[from:])
	}

	stopWriters()
	close(writeErr)
	for err := range writeErr {
		t.Fatal(err)
	}
	want := tableRows(t, db, table)
	bLog := func() string { l, _ := os.ReadFile(logB); return string(l) }
	waitPublished(t, broker.addr, []string{topic}, len(want), b, bLog)
	for _, p := range []*childProc{b, a2} {
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}
	procs = nil
	byAgg := checkPublished(t, broker.addr, []string{topic}, want)
	t.Logf("take-over after SIGKILL of the active relay: %v (lock poll 200ms); %d rows in %d aggregates published exactly once",
		takeover.Round(time.Millisecond), len(want), len(byAgg))
}
