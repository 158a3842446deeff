package outbox

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Published rows are deleted only up to the committed position, in bounded
// statements, and never after a failed commit; every row is still
// published exactly once.
func TestRelayDeletePublished(t *testing.T) {
	ctx := context.Background()
	b := exactly.NewTestBroker(t)
	db, tbl, schema := pgTable(t)
	for i := range 10 {
		tx, _ := db.Begin()
		if err := tbl.Write(ctx, tx, &Event{AggregateType: "del", AggregateID: "a", Type: "T", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
		tx.Commit()
	}
	count := func() (n int) {
		t.Helper()
		if err := db.QueryRow("SELECT count(*) FROM " + tbl.Name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	cfg := RelayConfig{DB: db, Table: tbl, Name: "test-" + schema, BatchSize: 4, DeletePublished: true, DeleteBatch: 3,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	r, err := NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := publishVisible(t, ctx, r); n != 4 || err != nil {
		t.Fatalf("PublishBatch = %d, %v", n, err)
	}
	if n, err := r.DeletePublished(ctx); n != 4 || err != nil || count() != 6 {
		t.Fatalf("DeletePublished = %d, %v; %d rows left, want 6", n, err, count())
	}
	var minVersion int64
	db.QueryRow("SELECT min(aggregateversion) FROM " + tbl.Name).Scan(&minVersion)
	if minVersion <= r.Position().Version {
		t.Fatalf("row v%d at or below the position %s survived", minVersion, r.Position())
	}
	// A batch whose transaction never commits must not be deleted.
	r.k.crashBeforeCommit = true
	if _, err := publishVisible(t, ctx, r); err == nil {
		t.Fatal("simulated crash did not fail")
	}
	if n, err := r.DeletePublished(ctx); n != 0 || err != nil || count() != 6 {
		t.Fatalf("after an uncommitted batch DeletePublished = %d, %v; %d rows left, want 6", n, err, count())
	}
	r.Close()

	// A new instance deletes what remains after publishing it.
	r, err = NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	deadline := time.Now().Add(20 * time.Second)
	for count() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	<-done
	if n := count(); n != 0 {
		t.Fatalf("%d rows left after Run", n)
	}
	got := readAll(t, b.Addr(), "outbox.event.del", 10)
	var values []string
	for _, rec := range got[0] {
		values = append(values, rec.value)
	}
	if fmt.Sprint(values) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Fatalf("published %v", values)
	}
}

// The relay's order is numeric in readyxid even where the xid gains a
// digit (9 to 10 here, 999999 to 1000000 on a busy cluster): text order
// would take "10" before "4", and the position, compared as a number,
// would then pass every row below 10 without publishing it.
func TestRelayOrderAcrossXIDDigitCount(t *testing.T) {
	ctx := context.Background()
	b := exactly.NewTestBroker(t)
	db, tbl, schema := pgTable(t)
	const rows = 12
	for i := range rows {
		writeCommitted(t, ctx, db, tbl, &Event{AggregateType: "digits", AggregateID: fmt.Sprint("a", i%2), Type: "T", Payload: fmt.Appendf(nil, "%d", i)})
	}
	// Readyxids 4..15 in commit order: older than any running transaction
	// (so past the horizon), keeping each aggregate's order, and crossing
	// from one digit to two.
	if _, err := db.Exec(`UPDATE ` + tbl.Name + ` o SET readyxid = (3 + n.rn)::text::xid8
		FROM (SELECT id, row_number() OVER (ORDER BY txid) AS rn FROM ` + tbl.Name + `) n WHERE o.id = n.id`); err != nil {
		t.Fatal(err)
	}
	cfg := RelayConfig{DB: db, Table: tbl, Name: "test-" + schema, BatchSize: 3,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	r, err := NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	drain(t, ctx, r)
	var values []int
	last := map[string]int{}
	for _, recs := range readAll(t, b.Addr(), "outbox.event.digits", rows) {
		for _, rec := range recs {
			v, _ := strconv.Atoi(rec.value)
			if prev, ok := last[rec.agg]; ok && v < prev {
				t.Errorf("aggregate %s: %d published after %d", rec.agg, v, prev)
			}
			last[rec.agg] = v
			values = append(values, v)
		}
	}
	slices.Sort(values)
	if want := "[0 1 2 3 4 5 6 7 8 9 10 11]"; fmt.Sprint(values) != want {
		t.Fatalf("published %v, want %s each once", values, want)
	}
}

// The start reads the checkpoint topic backwards from its marker only as
// far as its own last checkpoint, skipping other relays' records and its
// own aborted checkpoints; a checkpoint found far back is rewritten so the
// next start reads one chunk.
func TestRelayCheckpointSearchBounded(t *testing.T) {
	ctx := context.Background()
	b := exactly.NewTestBroker(t)
	db, tbl, schema := pgTable(t)
	for i := range 3 {
		tx, _ := db.Begin()
		if err := tbl.Write(ctx, tx, &Event{AggregateType: "cp", AggregateID: "a", Type: "T", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
		tx.Commit()
	}
	topic := "checkpoints-" + schema
	cfg := RelayConfig{DB: db, Table: tbl, Name: "test-" + schema, CheckpointTopic: topic, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	r, err := NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.k.scanned != 0 {
		t.Errorf("first start on an empty topic scanned %d offsets", r.k.scanned)
	}
	if n, err := publishVisible(t, ctx, r); n != 3 || err != nil {
		t.Fatalf("PublishBatch = %d, %v", n, err)
	}
	pos := r.Position()
	r.Close()

	// Noise: 3000 checkpoints of other relays, and an aborted checkpoint
	// of ours claiming a position far ahead.
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range 3000 {
		recs = append(recs, &kgo.Record{Key: fmt.Appendf(nil, "other-%d", i%7), Value: fmt.Appendf(nil, "%d", i)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	zombie, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.DefaultProduceTopic(topic), kgo.TransactionalID("zombie-"+schema))
	if err != nil {
		t.Fatal(err)
	}
	zombie.BeginTransaction()
	if err := zombie.ProduceSync(ctx, &kgo.Record{Key: []byte(cfg.Name), Value: []byte("999999")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := zombie.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	zombie.Close()

	r, err = NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if r.Position() != pos {
		t.Fatalf("recovered position %s, want %s", r.Position(), pos)
	}
	// Doubling chunks: at most twice the distance plus the first chunk.
	if r.k.scanned < 3000 || r.k.scanned > 2*3010+defaultFirstChunk {
		t.Errorf("second start scanned %d offsets back for a checkpoint ~3000 back", r.k.scanned)
	}
	t.Logf("checkpoint ~3000 offsets back: scanned %d", r.k.scanned)
	r.Close()
	r, err = NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Position() != pos || r.k.scanned > defaultFirstChunk {
		t.Fatalf("third start: position %s (want %s) after scanning %d offsets; the rewritten checkpoint should be within %d",
			r.Position(), pos, r.k.scanned, defaultFirstChunk)
	}
}

// The checkpoint topic is compacted and each start deletes its marker: after
// several starts and publishes, and compaction, the topic holds the relay's
// newest checkpoint once and no marker value, and a new start still finds
// the position.
func TestCheckpointTopicCompacted(t *testing.T) {
	ctx := context.Background()
	b := exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{"log.cleaner.backoff.ms": "50"}})
	db, tbl, schema := pgTable(t)
	topic := "checkpoints-" + schema
	cfg := RelayConfig{DB: db, Table: tbl, Name: "test-" + schema, BatchSize: 1, CheckpointTopic: topic, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	adm, err := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	var last Cursor
	for round := range 8 {
		tx, _ := db.Begin()
		if err := tbl.Write(ctx, tx, &Event{AggregateType: "cmp", AggregateID: "a", Type: "T", Payload: fmt.Appendf(nil, "%d", round)}); err != nil {
			t.Fatal(err)
		}
		tx.Commit()
		r, err := NewRelay(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			rcs, err := kadm.NewClient(adm).DescribeTopicConfigs(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			rc, _ := rcs.On(topic, nil)
			policy := ""
			for _, c := range rc.Configs {
				if c.Key == "cleanup.policy" {
					policy = c.MaybeValue()
				}
			}
			if policy != "compact" {
				t.Fatalf("checkpoint topic cleanup.policy = %q, want compact", policy)
			}
			// Small segments and any dirt: let the cleaner work now.
			if _, err := kadm.NewClient(adm).AlterTopicConfigs(ctx, []kadm.AlterConfig{
				{Name: "segment.bytes", Value: kadm.StringPtr("200")},
				{Name: "min.cleanable.dirty.ratio", Value: kadm.StringPtr("0.01")},
			}, topic); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := publishVisible(t, ctx, r); n != 1 || err != nil {
			t.Fatalf("round %d: PublishBatch = %d, %v", round, n, err)
		}
		last = r.Position()
		r.Close()
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		checkpoints, markers := 0, 0
		for _, rec := range testenv.ReadToEnd(t, b.Addr(), topic, true)[0] {
			switch {
			case string(rec.Key) == cfg.Name:
				checkpoints++
			case rec.Value != nil:
				markers++
			}
		}
		if checkpoints == 1 && markers <= 1 { // the newest marker may still sit in the active segment
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after compaction: %d checkpoints, %d markers left", checkpoints, markers)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r, err := NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Position() != last {
		t.Fatalf("position after compaction %v, want %v", r.Position(), last)
	}
}
