package e2e

// SIGKILL crash tests for transactions: whatever point a transaction had
// reached when the broker died, after a restart read_committed readers see
// it whole or not at all, and no partition's LSO stays behind its high
// watermark past the transaction timeout.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const txnTopicPartitions = 3

// txnRead reads every partition up to its read_committed (LSO) or
// read_uncommitted (HW) end and returns the data records' values.
func txnRead(t *testing.T, addr, topic string, committed bool) []string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(cl)
	var ends kadm.ListedOffsets
	if committed {
		ends, err = adm.ListCommittedOffsets(ctx, topic)
	} else {
		ends, err = adm.ListEndOffsets(ctx, topic)
	}
	if err != nil {
		t.Fatal(err)
	}
	iso := kgo.ReadUncommitted()
	if committed {
		iso = kgo.ReadCommitted()
	}
	rd, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(iso),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	pos := map[int32]int64{}
	var out []string
	for {
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			if pos[o.Partition] < o.Offset {
				done = false
			}
		})
		if done {
			return out
		}
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s: positions %v, ends %v", topic, pos, ends)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				out = append(out, string(r.Value))
			}
			pos[r.Partition] = r.Offset + 1
		})
	}
}

// waitStable waits until every partition's LSO equals its high watermark.
func waitStable(t *testing.T, addr, topic string, within time.Duration) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		hw, err1 := adm.ListEndOffsets(ctx, topic)
		lso, err2 := adm.ListCommittedOffsets(ctx, topic)
		cancel()
		stuck := err1 != nil || err2 != nil
		if !stuck {
			hw.Each(func(o kadm.ListedOffset) {
				if l, _ := lso.Lookup(topic, o.Partition); l.Offset != o.Offset {
					stuck = true
				}
			})
		}
		if !stuck {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: LSO still behind the high watermark %v after %v (hw %v, lso %v, errors %v %v)", topic, within, within, hw, lso, err1, err2)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func txnState(t *testing.T, addr, id string) string {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsg.NewPtrDescribeTransactionsRequest()
	req.TransactionalIDs = []string{id}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.TransactionStates[0].State
}

// txnProduce begins a transaction and produces n records spread over every
// partition, waiting for each acknowledgement.
func txnProduce(t *testing.T, cl *kgo.Client, topic, prefix string, n int) {
	t.Helper()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r := &kgo.Record{Topic: topic, Partition: int32(i % txnTopicPartitions), Value: fmt.Appendf(nil, "%s%d", prefix, i)}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatalf("produce %s%d: %v", prefix, i, err)
		}
	}
}

func txnProducer(t *testing.T, addr, id string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.TransactionalID(id), kgo.TransactionTimeout(3*time.Second),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequestRetries(2), kgo.RetryTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func countPrefix(vals []string, prefix string) int {
	n := 0
	for _, v := range vals {
		if len(v) >= len(prefix) && v[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}

// TestTxnSIGKILL kills the broker at three points of a transaction: after
// its records were produced (no end requested), after the commit decision
// is durable but before any marker, and after the first of several
// markers. A committed transaction before each crash must stay whole.
func TestTxnSIGKILL(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failpoint string // EXACTLY_TXN_FAILPOINT for the first run; "" kills from outside after the produce
		// wantCommitted: the crashed transaction's records are visible
		// after the restart (the decision was durable) or not at all.
		wantCommitted bool
	}{
		{"after-produce", "", false},
		{"after-prepare", "prepared", true},
		{"mid-markers", "marker-written", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, addr := t.TempDir(), freePort(t)
			const n = 30
			// A committed transaction before any failpoint is armed.
			p := startBroker(t, dir, addr)
			admin, err := kgo.NewClient(kgo.SeedBrokers(addr))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kadm.NewClient(admin).CreateTopic(context.Background(), txnTopicPartitions, 1, nil, "crash"); err != nil {
				t.Fatal(err)
			}
			admin.Close()
			cl := txnProducer(t, addr, "crash-"+tc.name)
			txnProduce(t, cl, "crash", "before-", n)
			if err := cl.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
			cl.Close()
			p.stop(t)

			if tc.failpoint != "" {
				t.Setenv("EXACTLY_TXN_FAILPOINT", tc.failpoint)
			}
			p = startBroker(t, dir, addr)
			cl = txnProducer(t, addr, "crash-"+tc.name)
			txnProduce(t, cl, "crash", "crashed-", n)
			if tc.failpoint == "" {
				p.kill()
			} else {
				// The broker kills itself inside EndTxn; the commit's
				// outcome is unknown to the client.
				cl.EndTransaction(context.Background(), kgo.TryCommit)
				if err := p.cmd.Wait(); err == nil {
					t.Fatal("the broker exited cleanly instead of at the failpoint")
				}
			}
			cl.Close()
			if tc.failpoint != "" {
				t.Setenv("EXACTLY_TXN_FAILPOINT", "")
			}

			p = startBroker(t, dir, addr)
			// Prepared transactions finish at once; an open one is aborted
			// by its 3s timeout.
			waitStable(t, addr, "crash", 15*time.Second)
			got := txnRead(t, addr, "crash", true)
			if c := countPrefix(got, "before-"); c != n {
				t.Fatalf("the transaction committed before the crash has %d of %d records", c, n)
			}
			want := 0
			if tc.wantCommitted {
				want = n
			}
			if c := countPrefix(got, "crashed-"); c != want {
				t.Fatalf("read_committed sees %d of the crashed transaction's %d records, want %d (all or nothing)", c, n, want)
			}
			wantState := "CompleteAbort"
			if tc.wantCommitted {
				wantState = "CompleteCommit"
			}
			// Markers land (the data turns stable) before the coordinator
			// records completion, so completion is awaited, within a bound.
			deadline := time.Now().Add(10 * time.Second)
			for st := txnState(t, addr, "crash-"+tc.name); st != wantState; st = txnState(t, addr, "crash-"+tc.name) {
				if time.Now().After(deadline) {
					t.Fatalf("10s after restart the transaction is %s, want %s", st, wantState)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The producer carries on.
			cl = txnProducer(t, addr, "crash-"+tc.name)
			defer cl.Close()
			txnProduce(t, cl, "crash", "after-", 6)
			if err := cl.EndTransaction(context.Background(), kgo.TryCommit); err != nil {
				t.Fatal(err)
			}
			if c := countPrefix(txnRead(t, addr, "crash", true), "after-"); c != 6 {
				t.Fatalf("the transaction after the restart has %d of 6 records", c)
			}
			waitStable(t, addr, "crash", 5*time.Second)
		})
	}
}
