package outbox

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// pgTable gives the test its own schema with an outbox table, dropped at the end.
func pgTable(t testing.TB) (*sql.DB, Table, string) {
	t.Helper()
	db, err := sql.Open("pgx", testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "outbox_" + hex.EncodeToString(b[:])
	if _, err := db.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", testenv.PostgresDSN(), err, testenv.PostgresHint)
	}
	t.Cleanup(func() {
		db.Exec("DROP SCHEMA " + schema + " CASCADE")
		db.Close()
	})
	tbl := Table{Name: schema + ".outbox"}
	if err := tbl.CreateSchema(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db, tbl, schema
}

// visibleWait bounds how long a test waits for committed rows to pass the
// relay's horizon: any transaction open anywhere in the PostgreSQL cluster
// holds it back (by design), and other test packages share the cluster.
const visibleWait = 30 * time.Second

// writeCommitted writes one event in a database transaction of its own
// and commits it.
func writeCommitted(t *testing.T, ctx context.Context, db *sql.DB, tbl Table, e *Event) {
	t.Helper()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tbl.Write(ctx, tx, e); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// publishVisible is PublishBatch retried while it publishes nothing: the
// rows a test just committed may be held back a moment by another test's
// open transaction. It returns the first non-empty batch's count, or 0
// after visibleWait.
func publishVisible(t *testing.T, ctx context.Context, r *Relay) (int, error) {
	t.Helper()
	deadline := time.Now().Add(visibleWait)
	for {
		n, err := r.PublishBatch(ctx)
		if n > 0 || err != nil || time.Now().After(deadline) {
			return n, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drain publishes until no committed row is left behind the relay's
// position (LagRows 0), waiting out a horizon held back by other tests.
func drain(t *testing.T, ctx context.Context, r *Relay) {
	t.Helper()
	deadline := time.Now().Add(visibleWait)
	for {
		n, err := r.PublishBatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			continue
		}
		st, err := r.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.LagRows == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d committed rows still unpublished after %v: %+v", st.LagRows, visibleWait, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWriteCommitsWithTransaction(t *testing.T) {
	ctx := context.Background()
	db, tbl, _ := pgTable(t)
	tx, _ := db.Begin()
	e := &Event{AggregateType: "order", AggregateID: "o-1", Type: "Created", Payload: []byte(`{"a":1}`),
		Headers: map[string]string{"trace": "x"}}
	if err := tbl.Write(ctx, tx, e); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
	conn, err := pgx.Connect(ctx, testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ptx, _ := conn.Begin(ctx)
	e2 := &Event{AggregateType: "order", AggregateID: "o-1", Type: "Paid"}
	if err := tbl.WritePgx(ctx, ptx, e2); err != nil {
		t.Fatal(err)
	}
	if err := ptx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	var id, typ string
	var n int
	if err := db.QueryRow("SELECT count(*), min(id::text), min(type) FROM "+tbl.Name).Scan(&n, &id, &typ); err != nil {
		t.Fatal(err)
	}
	if n != 1 || id != UUIDString(e2.ID) || typ != "Paid" {
		t.Fatalf("rows=%d id=%s type=%s; want only the committed event %s", n, id, typ, UUIDString(e2.ID))
	}
	if err := tbl.Write(ctx, nil, &Event{}); err == nil {
		t.Fatal("event without aggregate accepted")
	}
}

type published struct {
	id, agg, value string
}

// readAll reads topic read_committed to its end once it holds at least
// want records (so duplicates beyond want would still be seen).
func readAll(t *testing.T, addr, topic string, want int) map[int32][]published {
	t.Helper()
	out := map[int32][]published{}
	for _, r := range testenv.Flatten(testenv.ReadAtLeast(t, addr, topic, true, want)) {
		p := published{agg: string(r.Key), value: string(r.Value)}
		for _, h := range r.Headers {
			if h.Key == "id" {
				p.id = string(h.Value)
			}
		}
		out[r.Partition] = append(out[r.Partition], p)
	}
	return out
}

// Concurrent writer transactions (some rolled back) while the relay crashes
// mid-transaction, restarts, and is fenced as a zombie: every committed row
// is published exactly once, no rolled-back row is, and each aggregate's
// events arrive in commit order.
func TestRelayExactlyOnceAcrossCrashes(t *testing.T) {
	ctx := context.Background()
	b := exactly.NewTestBroker(t)
	db, tbl, schema := pgTable(t)
	topic := "outbox.event.order"
	{
		cl, _ := kgo.NewClient(kgo.SeedBrokers(b.Addr()))
		resp, err := kadm.NewClient(cl).CreateTopic(ctx, 3, 1, nil, topic)
		cl.Close()
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg := RelayConfig{DB: db, Table: tbl, Name: "test-" + schema, BatchSize: 7,
		CheckpointTopic: "checkpoints-" + schema, Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}

	// Writers: 6 goroutines × 30 transactions over 4 aggregates; every 5th
	// transaction rolls back; some hold their transaction open a while so
	// they commit after transactions that started later.
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
				e := &Event{AggregateType: "order", AggregateID: fmt.Sprint("agg-", (w+i)%4), Type: "T",
					Payload: fmt.Appendf(nil, "w%d-%d", w, i)}
				if err := tbl.Write(ctx, tx, e); err != nil {
					tx.Rollback()
					writeErr <- err
					return
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
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	// The relay: crash mid-transaction, restart, leave a zombie behind.
	zombies := 0
	for round := 0; ; round++ {
		r, err := NewRelay(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := r.PublishBatch(ctx); err != nil {
				t.Fatal(err)
			}
		}
		switch round % 3 {
		case 0: // crash with a produced, uncommitted transaction
			r.k.crashBeforeCommit = true
			r.PublishBatch(ctx)
			r.Close()
		case 1: // zombie: a new instance starts while the old is mid-batch
			zombies += zombieRound(t, ctx, r, cfg)
		default:
			r.Close()
		}
		time.Sleep(30 * time.Millisecond) // let rows accumulate between rounds
		select {
		case <-writersDone:
		default:
			continue
		}
		break
	}
	extraRows := 0
	if zombies == 0 {
		// On a loaded machine the relay may have kept up with the
		// writers, so no zombie held rows: give one a row to hold.
		extraRows = 1
		writeCommitted(t, ctx, db, tbl, &Event{AggregateType: "order", AggregateID: "agg-0", Type: "T", Payload: []byte("zombie")})
		r, err := NewRelay(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		zombies += zombieRound(t, ctx, r, cfg)
	}
	t.Logf("fenced %d zombie relays holding a batch", zombies)
	if zombies == 0 {
		t.Error("no zombie relay held a batch: the fencing path went untested")
	}
	close(writeErr)
	for err := range writeErr {
		t.Fatal(err)
	}
	// Drain with a final relay: with the writers done, the horizon passes
	// every row.
	r, err := NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	drain(t, ctx, r)
	r.Close()

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
	if want != writers*perWriter*4/5+extraRows {
		t.Fatalf("%d committed rows, want %d", want, writers*perWriter*4/5+extraRows)
	}

	t.Cleanup(func() {
		if t.Failed() {
			logRelayHistory(t, db, tbl, b.Addr(), cfg.CheckpointTopic, topic)
		}
	})
	got := readAll(t, b.Addr(), topic, want)
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

// zombieRound makes r a zombie holding a produced, uncommitted batch while
// a new instance of the relay starts, checks that r can no longer commit,
// and closes both; 1 if r held rows.
func zombieRound(t *testing.T, ctx context.Context, r *Relay, cfg RelayConfig) int {
	t.Helper()
	r.k.crashBeforeCommit = true
	n, _ := r.PublishBatch(ctx)
	r2, err := NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	defer r.Close()
	if err := r.k.cl.EndTransaction(ctx, kgo.TryCommit); n > 0 && err == nil {
		t.Fatal("zombie relay committed after being fenced")
	}
	return min(n, 1)
}

// logRelayHistory logs, for a failed relay test, every row of the table in
// relay order and every checkpoint record the relays wrote (read
// read_uncommitted, with producer epochs), so a skipped row can be told
// from a lost record.
func logRelayHistory(t *testing.T, db *sql.DB, tbl Table, addr, checkpointTopic, topic string) {
	t.Helper()
	n, _ := tbl.name()
	rows, err := db.Query("SELECT o.id::text, o.aggregateid, o.aggregateversion, o.txid::text, o.readyxid::text FROM " + n +
		" o ORDER BY o.readyxid, o.aggregatetype, o.aggregateid, o.aggregateversion")
	if err != nil {
		t.Logf("history: %v", err)
		return
	}
	for rows.Next() {
		var id, agg, txid, ready string
		var version int64
		rows.Scan(&id, &agg, &version, &txid, &ready)
		t.Logf("history: row readyxid %s txid %s %s v%d %s", ready, txid, agg, version, id)
	}
	rows.Close()
	for _, committed := range []bool{false, true} {
		for _, r := range testenv.Flatten(testenv.ReadToEnd(t, addr, checkpointTopic, committed)) {
			t.Logf("history: checkpoint (committed=%v) offset %d p%d/e%d %s = %s", committed, r.Offset, r.ProducerID, r.ProducerEpoch, r.Key, r.Value)
		}
		for _, r := range testenv.Flatten(testenv.ReadToEnd(t, addr, topic, committed)) {
			id := ""
			for _, h := range r.Headers {
				if h.Key == "id" {
					id = string(h.Value)
				}
			}
			t.Logf("history: event (committed=%v) %d/%d p%d/e%d %s %s", committed, r.Partition, r.Offset, r.ProducerID, r.ProducerEpoch, r.Key, id)
		}
	}
}
