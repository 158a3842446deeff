package verify_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/verify"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Each commit mode claims the pipeline's input its own way; the history
// must say which, and the group's offsets must agree, while every input
// reaches the output once (no faults).
func TestPipelineClaimsInputByCommitMode(t *testing.T) {
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{"group.initial.rebalance.delay.ms": "0"}})
	cases := []struct {
		name               string
		mode               verify.Mode
		producer, consumer []string
		// offsetCommits: EvCommit events (offsets outside a transaction);
		// txnCommits: EvTxnCommit events; txnOffsets: those carry the
		// offsets; groupCommits: the group ends committed past the input.
		offsetCommits, txnCommits, txnOffsets, groupCommits bool
	}{
		{name: "before", mode: verify.AtMostOnce, offsetCommits: true, groupCommits: true},
		{name: "after", mode: verify.AtLeastOnce, offsetCommits: true, groupCommits: true},
		{name: "auto", mode: verify.AtLeastOnce, consumer: []string{"commit=auto", "auto.commit.interval.ms=100"}, groupCommits: true},
		{name: "none", mode: verify.AtLeastOnce, consumer: []string{"commit=none"}},
		{name: "in transaction", mode: verify.ExactlyOnce, producer: []string{"abort.fraction=0"}, txnCommits: true, txnOffsets: true, groupCommits: true},
		{name: "after, own transaction", mode: verify.ExactlyOnce, producer: []string{"abort.fraction=0"}, consumer: []string{"commit=after"},
			offsetCommits: true, txnCommits: true, groupCommits: true},
	}
	const n = 20
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in, out, group := fmt.Sprintf("pl%d-in", i), fmt.Sprintf("pl%d-out", i), fmt.Sprintf("pl%d", i)
			createTopic(t, b.Addr(), in, 2)
			createTopic(t, b.Addr(), out, 2)
			cl := client(t, []string{b.Addr()}, kgo.RecordPartitioner(kgo.ManualPartitioner()))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for s := 0; s < n; s++ {
				r := &kgo.Record{Topic: in, Partition: int32(s % 2), Value: []byte(verify.InputValue("p0.0", int64(s)))}
				if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}

			profile := verify.DefaultProfile(tc.mode)
			if err := profile.Apply(tc.producer, tc.consumer); err != nil {
				t.Fatal(err)
			}
			spec := verify.WorkerSpec{Role: verify.RolePipeline, Proc: "c0.0", Seed: 1, Brokers: []string{b.Addr()},
				InTopic: in, OutTopic: out, Partitions: 2, Group: group, TransactionalID: group + "-c0", Profile: profile,
				History: filepath.Join(t.TempDir(), "c0.0.jsonl"), TxnTimeout: 10 * time.Second}
			ctlR, ctlW := io.Pipe()
			done := make(chan error, 1)
			go func() { done <- verify.RunWorker(ctx, spec, ctlR, io.Discard) }()

			adm := kadm.NewClient(cl)
			claimed := func() bool {
				offs, err := adm.FetchOffsets(ctx, group)
				if err != nil {
					return false
				}
				for p := int32(0); p < 2; p++ {
					if o, ok := offs.Lookup(in, p); !ok || o.Err != nil || o.At < n/2 {
						return false
					}
				}
				return true
			}
			var final verify.FinalRead
			for {
				var err error
				if final, err = verify.ReadTopic(ctx, cl, out, true); err != nil {
					t.Fatal(err)
				}
				got := len(final.Records[0]) + len(final.Records[1])
				if got >= n && (!tc.groupCommits || claimed()) {
					break
				}
				select {
				case err := <-done:
					t.Fatalf("worker ended early: %v (output holds %d)", err, got)
				case <-ctx.Done():
					t.Fatalf("output holds %d of %d; group claimed %v", got, n, claimed())
				case <-time.After(100 * time.Millisecond):
				}
			}
			ctlW.Write([]byte(verify.CmdStop + "\n"))
			if err := <-done; err != nil {
				t.Fatalf("worker: %v", err)
			}
			if !tc.groupCommits && claimed() {
				t.Fatalf("commit=%s left committed offsets", profile.Consumer.Commit)
			}

			h, err := verify.ReadHistoryFile(spec.History)
			if err != nil {
				t.Fatal(err)
			}
			var offsetCommits, txnCommits, txnOffsets, txnOutputs int
			for _, e := range h {
				switch {
				case e.Type == verify.EvCommit && e.OK:
					offsetCommits++
				case e.Type == verify.EvTxnCommit:
					txnCommits++
					if len(e.Commits[in]) > 0 {
						txnOffsets++
					}
				case e.Type == verify.EvAck && e.Topic == out && e.Txn > 0:
					txnOutputs++
				case e.Type == verify.EvTxnAbort, e.Type == verify.EvTxnUnknown, e.Type == verify.EvFail:
					t.Fatalf("unexpected %+v", e)
				}
			}
			if (offsetCommits > 0) != tc.offsetCommits || (txnCommits > 0) != tc.txnCommits ||
				(txnOffsets > 0) != tc.txnOffsets || (txnOutputs == n) != tc.txnCommits {
				t.Fatalf("history: %d offset commits, %d transaction commits (%d with offsets), %d outputs in transactions",
					offsetCommits, txnCommits, txnOffsets, txnOutputs)
			}

			h = append(h, verify.Event{Proc: "verify", Type: verify.EvRun, Topic: in, Values: []string{out}, Detail: string(tc.mode)})
			fin, err := verify.ReadTopic(ctx, cl, in, true)
			if err != nil {
				t.Fatal(err)
			}
			h = append(append(h, fin.Events("final")...), final.Events("final")...)
			r := verify.Check(h, verify.CheckOptions{})
			if r.InputRecords != n || r.Consumed != n || r.Duplicates != 0 || r.Polled != n || len(r.Violations) != 0 {
				t.Fatalf("check: %+v", r)
			}
		})
	}
}
