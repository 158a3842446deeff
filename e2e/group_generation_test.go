package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestGroupGenerationsGrowAcrossRestart: generations handed out after a
// restart are above every one handed out before (the emptied group's
// membership record and the catalog's reservation both carry them), so a
// member still holding a pre-restart generation can never look newer than
// the group's real owners (sticky assignors trust the higher generation).
func TestGroupGenerationsGrowAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	gen := func(addr string) int32 {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup("gg"), kgo.ConsumeTopics("gt"),
			kgo.AllowAutoTopicCreation())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			cl.PollRecords(pctx, 1) // drives the join
			pcancel()
			d, err := adm.DescribeGroups(ctx, "gg")
			_, g := cl.GroupMetadata()
			if err == nil && d["gg"].State == "Stable" && g >= 0 {
				return g
			}
		}
		t.Fatal("group never became stable")
		return 0
	}
	opts := exactly.Options{DataDir: dir, Config: map[string]string{"group.initial.rebalance.delay.ms": "0"}}
	b1, err := exactly.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	before := gen(b1.Addr())
	b1.Close()
	b2, err := exactly.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if after := gen(b2.Addr()); after <= before {
		t.Fatalf("generation %d after restart, not above %d from before it", after, before)
	}
}
