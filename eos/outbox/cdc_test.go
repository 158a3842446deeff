package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// requireLogical fails (never skips: CI must run these tests) unless the
// test PostgreSQL runs with wal_level=logical.
func requireLogical(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", testenv.PostgresDSN(), err, testenv.PostgresHint)
	}
	defer conn.Close(ctx)
	if err := CheckLogical(ctx, conn); err != nil {
		t.Fatalf("%v\nCDC tests need it; .ci/run sets it: psql -h 127.0.0.1 -U postgres -c \"ALTER SYSTEM SET wal_level = logical\" "+
			"&& pg_ctlcluster --skip-systemctl-redirect <version> main restart", err)
	}
}

// dropSlotAtCleanup drops the test's replication slot and publication when
// the test ends: a slot left behind makes PostgreSQL keep WAL forever.
func dropSlotAtCleanup(t *testing.T, db *sql.DB, slot string) {
	t.Helper()
	t.Cleanup(func() {
		for range 50 {
			db.Exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, slot)
			_, err := db.Exec(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond) // the terminated walsender may still hold it
		}
		var n int
		db.QueryRow(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&n)
		if n != 0 {
			t.Errorf("replication slot %s left behind", slot)
		}
		db.Exec(`DROP PUBLICATION IF EXISTS ` + slot)
	})
}

func createTopic(t *testing.T, addr, topic string, partitions int32) {
	t.Helper()
	cl, _ := kgo.NewClient(kgo.SeedBrokers(addr))
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(context.Background(), partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatal(err)
	}
}

// runFor runs the relay's stream for at most d and returns its error (nil
// if it ran until d).
func runFor(r *CDCRelay, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := r.stream(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Concurrent multi-row writer transactions (some rolled back) while the
// CDC relay crashes before a Kafka commit, crashes after a Kafka commit but
// before confirming to PostgreSQL (and is then resent everything since the
// slot's position), and is replaced while a zombie holds an open Kafka
// transaction: every committed row is published exactly once, no
// rolled-back row is, and each aggregate's events arrive in commit order.
func TestCDCRelayExactlyOnceAcrossCrashes(t *testing.T) {
	ctx := context.Background()
	b, db, tbl, schema, slot := cdcFixture(t)
	topic := "outbox.event.order"
	createTopic(t, b.Addr(), topic, 3)
	cfg := CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "test-" + schema, Slot: slot, BatchSize: 10,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	// The slot must exist before the writers start: the stream starts
	// at the slot's creation.
	r, err := NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}

	const writers, perWriter = 6, 30
	var wg sync.WaitGroup
	writeErr := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					writeErr <- err
					return
				}
				// 1 to 3 rows: a transaction is never split. Aggregates in
				// ascending order: each one's counter row stays locked
				// until commit, so writers touching several aggregates take
				// them in one order (or would deadlock and retry).
				aggs := []int{}
				for j := range 1 + i%3 {
					aggs = append(aggs, (w+i+j)%4)
				}
				slices.Sort(aggs)
				for j, a := range aggs {
					e := &Event{AggregateType: "order", AggregateID: fmt.Sprint("agg-", a), Type: "T",
						Payload: fmt.Appendf(nil, "w%d-%d-%d", w, i, j)}
					if err := tbl.Write(ctx, tx, e); err != nil {
						tx.Rollback()
						writeErr <- err
						return
					}
				}
				if i%3 == 0 {
					time.Sleep(3 * time.Millisecond)
				}
				if i%5 == 4 {
					tx.Rollback()
					continue
				}
				if err := tx.Commit(); err != nil {
					writeErr <- err
					return
				}
				// Spread the writes over several relay rounds.
				time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond)
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	zombies, rounds := 0, 0
	for round := 0; ; round++ {
		rounds++
		switch round % 4 {
		case 0: // crash after the Kafka commit, before the confirmation
			r.cfg.hooks.crashAfterCommit = true
			if err := runFor(r, 2*time.Second); err != nil && !errors.Is(err, errCrashAfterCommit) {
				t.Fatal(err)
			}
			r.Close()
		case 1: // crash with a produced, uncommitted Kafka transaction
			r.k.crashBeforeCommit = true
			runFor(r, 2*time.Second)
			r.Close()
		case 2: // zombie: a new instance starts while the old one holds a batch
			r.k.crashBeforeCommit = true
			err := runFor(r, 2*time.Second)
			r2, err2 := NewCDCRelay(ctx, cfg)
			if err2 != nil {
				t.Fatal(err2)
			}
			if err != nil { // it held an open transaction
				zombies++
				if err := r.k.cl.EndTransaction(ctx, kgo.TryCommit); err == nil {
					t.Fatal("zombie CDC relay committed after being fenced")
				}
			}
			r.Close()
			r = r2
			if err := runFor(r, 300*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			r.Close()
		default: // run a while and stop cleanly
			if err := runFor(r, 300*time.Millisecond); err != nil {
				t.Fatal(err)
			}
			r.Close()
		}
		select {
		case <-writersDone:
		default:
			// The next instance is resent everything since the slot's
			// position and must skip what the checkpoint covers.
			cfg.hooks.startFromSlot = round%4 == 0
			if r, err = NewCDCRelay(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			continue
		}
		break
	}
	close(writeErr)
	for err := range writeErr {
		t.Fatal(err)
	}
	if zombies == 0 {
		// The writers can finish before the zombie round (seen in CI):
		// give a zombie one more row to hold.
		writeCommitted(t, ctx, db, tbl, &Event{AggregateType: "order", AggregateID: "agg-0", Type: "T", Payload: []byte("zombie")})
		cfg.hooks.startFromSlot = false
		z, err := NewCDCRelay(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		z.k.crashBeforeCommit = true
		held := runFor(z, 2*time.Second)
		r2, err := NewCDCRelay(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if held != nil {
			zombies++
			if err := z.k.cl.EndTransaction(ctx, kgo.TryCommit); err == nil {
				t.Fatal("zombie CDC relay committed after being fenced")
			}
		}
		z.Close()
		if err := runFor(r2, 300*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		r2.Close()
	}
	if zombies == 0 {
		t.Error("no zombie relay held a batch: the fencing path went untested")
	}

	// Expected: committed rows in aggregate version (= commit) order.
	rows, err := db.Query("SELECT id::text, aggregateid FROM " + tbl.Name + " ORDER BY aggregateversion")
	if err != nil {
		t.Fatal(err)
	}
	wantByAgg := map[string][]string{}
	want := 0
	for rows.Next() {
		var id, agg string
		rows.Scan(&id, &agg)
		wantByAgg[agg] = append(wantByAgg[agg], id)
		want++
	}
	rows.Close()

	// Drain with a final relay that is resent everything since the slot's
	// position (at least the last crash-after-commit's batch).
	cfg.hooks.startFromSlot = true
	r, err = NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	got := readAll(t, b.Addr(), topic, want)
	stop()
	<-done
	skipped := r.skipped.Load()
	r.Close()
	t.Logf("%d rows, %d relay rounds, %d zombies fenced, final relay skipped %d resent transactions", want, rounds, zombies, skipped)

	count := map[string]int{}
	gotByAgg := map[string][]string{}
	aggPart := map[string]int32{}
	for p, recs := range got {
		for _, rec := range recs {
			count[rec.id]++
			gotByAgg[rec.agg] = append(gotByAgg[rec.agg], rec.id)
			if q, ok := aggPart[rec.agg]; ok && q != p {
				t.Errorf("aggregate %s on partitions %d and %d", rec.agg, q, p)
			}
			aggPart[rec.agg] = p
		}
	}
	total := 0
	for id, n := range count {
		total += n
		if n != 1 {
			t.Errorf("event %s published %d times", id, n)
		}
	}
	if total != want {
		t.Errorf("published %d events, want %d", total, want)
	}
	for agg, ids := range wantByAgg {
		if fmt.Sprint(gotByAgg[agg]) != fmt.Sprint(ids) {
			t.Errorf("aggregate %s: order differs from commit order\n got %v\nwant %v", agg, gotByAgg[agg], ids)
		}
	}
}

// After a crash between the Kafka commit and the confirmation, PostgreSQL
// resends the published transactions; the relay must skip exactly those,
// and confirm the checkpoint so PostgreSQL stops resending.
func TestCDCRelaySkipsResentTransactions(t *testing.T) {
	ctx := context.Background()
	b, db, tbl, schema, slot := cdcFixture(t)
	cfg := CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "test-" + schema, Slot: slot, BatchSize: 1000,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	cfg.hooks.crashAfterCommit = true
	r, err := NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	write := func(n int, payload string) {
		t.Helper()
		for i := range n {
			tx, _ := db.Begin()
			if err := tbl.Write(ctx, tx, &Event{AggregateType: "skip", AggregateID: "a", Type: "T", Payload: fmt.Appendf(nil, "%s-%d", payload, i)}); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(5, "first")
	if err := runFor(r, 5*time.Second); !errors.Is(err, errCrashAfterCommit) {
		t.Fatalf("stream: %v, want the simulated crash after commit", err)
	}
	ckpt, first := r.Checkpoint(), r.Published()
	r.Close()
	var flushed string
	db.QueryRow(`SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&flushed)
	t.Logf("checkpoint %s, slot confirmed %s", ckpt, flushed)

	write(3, "second")
	cfg.hooks = cdcHooks{startFromSlot: true}
	r, err = NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Checkpoint() != ckpt {
		t.Fatalf("recovered checkpoint %s, want %s", r.Checkpoint(), ckpt)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.Published() < 8-first && time.Now().Before(deadline) {
		if err := runFor(r, 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	// One row per transaction: the first instance's rows come back as
	// that many resent transactions.
	if r.Published() != 8-first || r.skipped.Load() != first {
		t.Fatalf("published %d, skipped %d resent transactions; want %d and %d", r.Published(), r.skipped.Load(), 8-first, first)
	}
	got := readAll(t, b.Addr(), "outbox.event.skip", 8)
	var values []string
	for _, rec := range got[0] {
		values = append(values, rec.value)
	}
	want := "[first-0 first-1 first-2 first-3 first-4 second-0 second-1 second-2]"
	if fmt.Sprint(values) != want {
		t.Fatalf("published %v, want %s", values, want)
	}
	// The confirmation reached PostgreSQL: the slot is past the checkpoint.
	var behind bool
	if err := db.QueryRow(`SELECT confirmed_flush_lsn < $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
		slot, r.Checkpoint().String()).Scan(&behind); err != nil || behind {
		t.Fatalf("slot confirmed position behind the checkpoint %s (err %v)", r.Checkpoint(), err)
	}
}

// Payload bytes, null payloads and row headers survive the text decoding
// of the replication stream; both bytea output formats decode.
func TestCDCRelayDecodesRows(t *testing.T) {
	ctx := context.Background()
	b, db, tbl, schema, slot := cdcFixture(t)
	r, err := NewCDCRelay(ctx, CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "test-" + schema, Slot: slot,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())},
		Topic: func(e *Event) string { return "decode-" + e.AggregateType }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	bin := []byte{0, 1, 2, '\\', 'x', 0xff, 0x80, '\n'}
	events := []*Event{
		{AggregateType: "x", AggregateID: "a", Type: "Bin", Payload: bin, Headers: map[string]string{"trace": "t-1", "tenant": "ü"}},
		{AggregateType: "x", AggregateID: "a", Type: "Null"},
	}
	tx, _ := db.Begin()
	for _, e := range events {
		if err := tbl.Write(ctx, tx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for r.Published() < 2 {
		if err := runFor(r, 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	cl, _ := kgo.NewClient(kgo.SeedBrokers(b.Addr()), kgo.ConsumeTopics("decode-x"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	defer cl.Close()
	var recs []*kgo.Record
	for len(recs) < 2 {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		fs := cl.PollFetches(pctx)
		timedOut := pctx.Err() != nil
		cancel()
		if timedOut {
			t.Fatalf("read %d records", len(recs))
		}
		recs = append(recs, fs.Records()...)
	}
	hdr := func(r *kgo.Record) string {
		var s []string
		for _, h := range r.Headers {
			s = append(s, h.Key+"="+string(h.Value))
		}
		return strings.Join(s, ",")
	}
	if string(recs[0].Value) != string(bin) || string(recs[0].Key) != "a" ||
		hdr(recs[0]) != "id="+UUIDString(events[0].ID)+",type=Bin,aggregateversion=1,tenant=ü,trace=t-1" {
		t.Errorf("first record: key %q value %q headers %s", recs[0].Key, recs[0].Value, hdr(recs[0]))
	}
	if recs[1].Value != nil || hdr(recs[1]) != "id="+UUIDString(events[1].ID)+",type=Null,aggregateversion=2" {
		t.Errorf("second record: value %q headers %s", recs[1].Value, hdr(recs[1]))
	}

	for in, want := range map[string]string{`\x00015c`: "\x00\x01\\", `\x`: "", `a\\b\001\377`: "a\\b\x01\xff", `plain`: "plain"} {
		got, err := decodeBytea([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("decodeBytea(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := decodeBytea([]byte(`a\9`)); err == nil {
		t.Error("decodeBytea accepted an invalid escape")
	}
}

// An idle relay confirms keepalive positions, so the WAL it pins (Lag)
// drops back near zero after a burst it was not running for.
func TestCDCRelayLag(t *testing.T) {
	ctx := context.Background()
	b, db, tbl, schema, slot := cdcFixture(t)
	cfg := CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "test-" + schema, Slot: slot,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	r, err := NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	// 200 rows with 2 KiB payloads while no relay runs.
	payload := make([]byte, 2048)
	for i := range 200 {
		tx, _ := db.Begin()
		for j := range payload {
			payload[j] = byte(rand.IntN(256))
		}
		if err := tbl.Write(ctx, tx, &Event{AggregateType: "lag", AggregateID: fmt.Sprint(i % 3), Type: "T", Payload: payload}); err != nil {
			t.Fatal(err)
		}
		tx.Commit()
	}
	r, err = NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	behind, err := r.Lag(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if behind < 200*2048 {
		t.Fatalf("lag %d bytes before catching up 400 KiB of rows", behind)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	var lag int64
	for time.Now().Before(deadline) {
		if lag, err = r.Lag(ctx); err != nil {
			t.Fatal(err)
		}
		if r.Published() == 200 && lag < 64<<10 {
			t.Logf("lag %d bytes behind, %d bytes after catching up", behind, lag)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("after catching up: published %d of 200, lag %d bytes (was %d)", r.Published(), lag, behind)
}

// LagSeconds counts from the commit time of the oldest transaction the
// relay holds unpublished: a row held for BatchWait (3 s) reads at least
// 1 s after 1.5 s, and once it is published and the stream is idle the lag
// returns to 0 and stays there (it does not grow with idle time).
func TestCDCRelayLagSeconds(t *testing.T) {
	ctx := context.Background()
	b, db, tbl, schema, slot := cdcFixture(t)
	r, err := NewCDCRelay(ctx, CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "test-" + schema, Slot: slot,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())},
		BatchSize: 1000, BatchWait: 3 * time.Second, StatusInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() { stop(); <-done }()

	write := func() time.Time {
		tx, _ := db.Begin()
		if err := tbl.Write(ctx, tx, &Event{AggregateType: "lag", AggregateID: "a", Type: "T", Payload: []byte("{}")}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	committed := write()
	// Held: the relay waits BatchWait before publishing it.
	time.Sleep(1500*time.Millisecond - time.Since(committed))
	held, err := r.LagSeconds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Published() != 0 {
		t.Skipf("the row was published within 1.5 s despite BatchWait 3s; cannot observe it held")
	}
	if held < 1 {
		t.Fatalf("lag %.3f s while holding a row committed 1.5 s ago", held)
	}
	// Published, then idle: back to 0, and it stays 0.
	deadline := time.Now().Add(30 * time.Second)
	var lag float64
	for {
		if lag, err = r.LagSeconds(ctx); err != nil {
			t.Fatal(err)
		}
		if r.Published() == 1 && lag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the commit: published %d, lag %.3f s", r.Published(), lag)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	if lag, err = r.LagSeconds(ctx); err != nil || lag != 0 {
		t.Fatalf("idle and caught up for 2 s: lag %.3f s, %v", lag, err)
	}
	t.Logf("held row: lag %.3f s; caught up: 0", held)
}

// Setup mistakes are errors at start, with the reason.
func TestCDCRelaySetupErrors(t *testing.T) {
	requireLogical(t)
	ctx := context.Background()
	b := exactly.NewTestBroker(t)
	db, tbl, schema := pgTable(t)
	kafka := []kgo.Opt{kgo.SeedBrokers(b.Addr())}
	_, err := NewCDCRelay(ctx, CDCConfig{DSN: testenv.PostgresDSN(), Table: Table{Name: schema + ".missing"}, Name: "x", Kafka: kafka})
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing table: %v", err)
	}
	pub := "exactly_test_other_" + schema
	if _, err := db.Exec(`CREATE TABLE ` + schema + `.other (id int)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE PUBLICATION ` + pub + ` FOR TABLE ` + schema + `.other`); err != nil {
		t.Fatal(err)
	}
	defer db.Exec(`DROP PUBLICATION ` + pub)
	_, err = NewCDCRelay(ctx, CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "x", Publication: pub, Slot: pub, Kafka: kafka})
	if err == nil || !strings.Contains(err.Error(), "does not publish") {
		t.Errorf("publication without the table: %v", err)
	}
	_, err = NewCDCRelay(ctx, CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "x", Slot: "Bad-Slot", Kafka: kafka})
	if err == nil || !strings.Contains(err.Error(), "slot") {
		t.Errorf("invalid slot name: %v", err)
	}
	if got := DefaultSlot("Orders-EU.1"); got != "exactly_outbox_orders_eu_1" {
		t.Errorf("DefaultSlot = %q", got)
	}
}

// A PostgreSQL transaction larger than MaxTxnBuffer is streamed into one
// open Kafka transaction instead of being held in memory: a crash in the
// middle leaves none of it visible to read_committed readers, and the next
// relay publishes it whole, exactly once, in order, between the
// transactions committed before and after it.
func TestCDCRelayStreamsLargeTransactionInBoundedMemory(t *testing.T) {
	ctx := context.Background()
	b, db, tbl, schema, slot := cdcFixture(t)
	topic := "outbox.event.big"
	createTopic(t, b.Addr(), topic, 1)
	cfg := CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "test-" + schema, Slot: slot, BatchSize: 500, MaxTxnBuffer: 10,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	cfg.hooks.crashWhileStreaming = true
	r, err := NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	write := func(n int, what string) {
		t.Helper()
		tx, _ := db.Begin()
		for i := range n {
			if err := tbl.Write(ctx, tx, &Event{AggregateType: "big", AggregateID: "a", Type: "T", Payload: fmt.Appendf(nil, "%s-%d", what, i)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	write(3, "before")
	write(55, "big")
	write(2, "after")
	if err := runFor(r, 10*time.Second); !errors.Is(err, errCrashWhileStreaming) {
		t.Fatalf("stream: %v, want the simulated crash while streaming", err)
	}
	r.Close()
	// Only the transaction before the big one is committed in Kafka.
	if got := testenv.Flatten(testenv.ReadToEnd(t, b.Addr(), topic, true)); len(got) != 3 {
		t.Fatalf("after a crash mid-transaction read_committed sees %d records, want the 3 committed before it", len(got))
	}
	cfg.hooks = cdcHooks{}
	r, err = NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	deadline := time.Now().Add(20 * time.Second)
	for r.Published() < 57 && time.Now().Before(deadline) {
		if err := runFor(r, 500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, rec := range testenv.Flatten(testenv.ReadToEnd(t, b.Addr(), topic, true)) {
		got = append(got, string(rec.Value))
	}
	var want []string
	for _, p := range []struct {
		what string
		n    int
	}{{"before", 3}, {"big", 55}, {"after", 2}} {
		for i := range p.n {
			want = append(want, fmt.Sprintf("%s-%d", p.what, i))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("published %d records:\n%v\nwant %d in commit order:\n%v", len(got), got, len(want), want)
	}
	if r.streamedTxns.Load() != 1 || r.maxBuffered > cfg.MaxTxnBuffer {
		t.Fatalf("streamed %d transactions, buffered at most %d events; want 1 streamed and at most %d buffered",
			r.streamedTxns.Load(), r.maxBuffered, cfg.MaxTxnBuffer)
	}
}

// Rows already in the table when a CDC relay first starts are published by
// its initial snapshot; a crash after some snapshot chunks resumes after
// the last committed chunk (nothing twice), rows written meanwhile come
// from the stream (nothing lost), and each aggregate stays in version
// order across the snapshot/stream boundary. With no_data, older rows are
// not published.
func TestCDCRelayInitialSnapshotResumes(t *testing.T) {
	ctx := context.Background()
	b, db, tbl, schema, slot := cdcFixture(t)
	topic := "outbox.event.snap"
	createTopic(t, b.Addr(), topic, 2)
	write := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			tx, _ := db.Begin()
			if err := tbl.Write(ctx, tx, &Event{AggregateType: "snap", AggregateID: fmt.Sprint("a", i%3), Type: "T", Payload: fmt.Appendf(nil, "%d", i)}); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0, 45)
	chunks := 0
	cfg := CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "test-" + schema, Slot: slot, BatchSize: 10,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	cfg.hooks.crashInSnapshot = func() bool { chunks++; return chunks == 2 }
	r, err := NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	write(45, 50) // after the slot: the stream's
	if err := runFor(r, 10*time.Second); !errors.Is(err, errCrashInSnapshot) {
		t.Fatalf("stream: %v, want the simulated crash in the snapshot", err)
	}
	r.Close()
	cfg.hooks = cdcHooks{}
	r, err = NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if done, total := r.SnapshotProgress(); total != -1 || done != 0 {
		t.Fatalf("before resuming, snapshot progress %d/%d; want unsized", done, total)
	}
	write(50, 55)
	for deadline := time.Now().Add(20 * time.Second); r.Published() < 35 && time.Now().Before(deadline); {
		if err := runFor(r, 500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if done, total := r.SnapshotProgress(); done != 45 || total != 45 {
		t.Fatalf("snapshot progress %d/%d, want 45/45", done, total)
	}
	byAgg := map[string][]string{}
	count := map[string]int{}
	for _, rec := range testenv.Flatten(testenv.ReadToEnd(t, b.Addr(), topic, true)) {
		count[string(rec.Value)]++
		v := ""
		for _, h := range rec.Headers {
			if h.Key == "aggregateversion" {
				v = string(h.Value)
			}
		}
		byAgg[string(rec.Key)] = append(byAgg[string(rec.Key)], v)
	}
	for i := range 55 {
		if count[fmt.Sprint(i)] != 1 {
			t.Errorf("row %d published %d times", i, count[fmt.Sprint(i)])
		}
	}
	for agg, vs := range byAgg {
		for k, v := range vs {
			if v != fmt.Sprint(k+1) {
				t.Fatalf("aggregate %s published versions %v; want 1..n in order", agg, vs)
			}
		}
	}

	// no_data: a new relay name and slot publishes only what follows.
	slot2 := slot + "_nd"
	dropSlotAtCleanup(t, db, slot2)
	cfg2 := cfg
	cfg2.Name, cfg2.Slot, cfg2.Snapshot, cfg2.Topic = cfg.Name+"-nd", slot2, SnapshotNoData, func(*Event) string { return topic + ".nd" }
	createTopic(t, b.Addr(), topic+".nd", 1)
	r2, err := NewCDCRelay(ctx, cfg2)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	write(55, 57)
	for deadline := time.Now().Add(20 * time.Second); r2.Published() < 2 && time.Now().Before(deadline); {
		if err := runFor(r2, 500*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if got := testenv.Flatten(testenv.ReadToEnd(t, b.Addr(), topic+".nd", true)); len(got) != 2 {
		t.Fatalf("no_data relay published %d records, want the 2 written after it started", len(got))
	}
}

// TestNormalizeSnapshot: the text a logical slot's exported snapshot can
// print on a quiet server ("xmin:xmin-1:") is refused by pg_snapshot's
// input; its normalized form is accepted and sees the same xids: those
// below xmin and no other.
func TestNormalizeSnapshot(t *testing.T) {
	db, _, _ := pgTable(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `SELECT '65844:65843:'::pg_snapshot`); err == nil {
		t.Fatal("PostgreSQL accepts xmin above xmax: the normalization is not needed")
	}
	got, err := normalizeSnapshot("65844:65843:")
	if err != nil || got != "65844:65844:" {
		t.Fatalf("normalized %q, %v", got, err)
	}
	for xid, want := range map[int64]bool{65842: true, 65843: true, 65844: false, 65845: false} {
		var visible bool
		if err := db.QueryRowContext(ctx, `SELECT pg_visible_in_snapshot($1::text::xid8, $2::text::pg_snapshot)`, fmt.Sprint(xid), got).Scan(&visible); err != nil {
			t.Fatal(err)
		}
		if visible != want {
			t.Errorf("xid %d visible %v in %s, want %v", xid, visible, got, want)
		}
	}
	for _, ok := range []string{"10:20:12,15", "7:7:"} {
		if got, err := normalizeSnapshot(ok); err != nil || got != ok {
			t.Errorf("%q normalized to %q, %v; want it unchanged", ok, got, err)
		}
	}
	for _, bad := range []string{"", "1:2", "x:2:", "9:8:8"} {
		if _, err := normalizeSnapshot(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// LagRows counts committed rows not yet in Kafka. Held back from the
// start, the relay's lag is the initial snapshot's 50 rows, then rises by
// exactly what each later commit adds while an open transaction's rows do
// not count; the collector reports it as exactly_outbox_lag_rows. Released,
// it returns to 0. After a restart with rows written meanwhile it is
// unknown until the relay has caught up, then 0; held back while
// streaming (transactions received and buffered, later ones still in
// WAL), it rises again and returns to 0.
func TestCDCRelayLagRows(t *testing.T) {
	ctx := context.Background()
	b, db, tbl, schema, slot := cdcFixture(t)
	// agg prefixes the aggregate ids: writers of one aggregate wait for
	// each other.
	insert := func(tx *sql.Tx, agg string, n int) {
		t.Helper()
		for i := range n {
			if err := tbl.Write(ctx, tx, &Event{AggregateType: "lag", AggregateID: fmt.Sprint(agg, i%4), Type: "T", Payload: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	write := func(n int) {
		t.Helper()
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		insert(tx, "a", n)
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		write(10) // the initial snapshot's
	}
	var hold sync.RWMutex
	cfg := CDCConfig{DSN: testenv.PostgresDSN(), Table: tbl, Name: "test-" + schema, Slot: slot, BatchSize: 20,
		StatusInterval: 200 * time.Millisecond, CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	cfg.hooks.holdPublish = &hold
	held := false
	run := func(r *CDCRelay) (stop func()) {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(runCtx) }()
		return func() { cancel(); <-done }
	}
	// waitRows waits until LagRows is known and want. Held back, the lag
	// only rises towards want, so a known value above it fails at once.
	waitRows := func(r *CDCRelay, want int64, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			n, known, err := r.LagRows(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if known && n == want {
				return
			}
			if known && n > want && held {
				t.Fatalf("%s: lag %d rows, want %d", what, n, want)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: lag %d rows (known %v) after 30 s, want %d", what, n, known, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// caughtUp waits, without asking LagRows, until the relay published
	// want rows in all, then asks once: the probe that call promotes was
	// taken while the relay was held, before some of the rows committed,
	// so only the rows counted as published bring the lag to 0.
	caughtUp := func(r *CDCRelay, want int64, what string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); r.Published() < want; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: published %d rows after 30 s, want %d", what, r.Published(), want)
			}
		}
		if r.Published() != want {
			t.Fatalf("%s: published %d rows, want %d", what, r.Published(), want)
		}
		if n, known, err := r.LagRows(ctx); err != nil || !known || n != 0 {
			t.Fatalf("%s: all %d rows published, but LagRows %d (known %v, %v)", what, want, n, known, err)
		}
	}

	hold.Lock()
	held = true
	release := func() {
		if held {
			held = false
			hold.Unlock()
		}
	}
	defer release() // before stopping: a held relay does not see its context end
	r, err := NewCDCRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(r)
	waitRows(r, 50, "held in the snapshot")
	write(7)
	waitRows(r, 57, "held, 7 rows committed after the slot")
	open, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	insert(open, "open", 5)
	write(3)
	waitRows(r, 60, "held, 3 more rows committed beside an open transaction's 5")
	if err := open.Commit(); err != nil {
		t.Fatal(err)
	}
	waitRows(r, 65, "held, the open transaction committed")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var series []float64
	for _, mf := range mfs {
		if mf.GetName() == "exactly_outbox_lag_rows" {
			for _, m := range mf.GetMetric() {
				series = append(series, m.GetGauge().GetValue())
			}
		}
	}
	if len(series) != 1 || series[0] != 65 {
		t.Fatalf("exactly_outbox_lag_rows series %v, want one of 65", series)
	}
	release()
	caughtUp(r, 65, "released")
	stop()
	r.Close()

	// Restarted after 4 rows were committed with no relay running: unknown
	// until caught up, then 0.
	write(4)
	if r, err = NewCDCRelay(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, known, err := r.LagRows(ctx); err != nil || known {
		t.Fatalf("restarted behind PostgreSQL: LagRows %d, known %v, %v; want unknown", n, known, err)
	}
	stop = run(r)
	defer stop()
	waitRows(r, 0, "restarted and caught up")
	if r.Published() != 4 {
		t.Fatalf("restarted relay published %d rows, want 4", r.Published())
	}

	// Held while streaming: received transactions wait in memory, later
	// ones in WAL; all count.
	hold.Lock()
	held = true
	write(6)
	waitRows(r, 6, "held while streaming")
	write(2)
	write(1)
	waitRows(r, 9, "held while streaming, 3 rows more")
	release()
	caughtUp(r, 13, "released while streaming")
}

// cdcFixture is how a CDC relay test starts: logical replication
// required, a broker, a fresh outbox table (in its own schema) and a
// replication slot named after that schema, dropped when the test ends.
func cdcFixture(t *testing.T) (b *exactly.Broker, db *sql.DB, tbl Table, schema, slot string) {
	t.Helper()
	requireLogical(t)
	b = exactly.NewTestBroker(t)
	db, tbl, schema = pgTable(t)
	slot = "exactly_test_" + schema
	dropSlotAtCleanup(t, db, slot)
	return b, db, tbl, schema, slot
}
