package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Init migrates a table written by the old seq/lock scheme (numbering its
// rows in seq order), is idempotent, and afterwards a plain INSERT naming
// only Debezium's columns gets the next version; a relay facing a table
// Init never touched says what to run.
func TestInitMigratesAndIsIdempotent(t *testing.T) {
	ctx := context.Background()
	db, _, schema := pgTable(t)
	legacy := schema + ".legacy"
	if _, err := db.Exec(`CREATE TABLE ` + legacy + ` (id uuid PRIMARY KEY, aggregatetype varchar(255) NOT NULL,
		aggregateid varchar(255) NOT NULL, type varchar(255) NOT NULL, payload bytea, headers jsonb,
		seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE, created_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := db.Exec(`INSERT INTO `+legacy+` (id, aggregatetype, aggregateid, type, payload)
			VALUES (gen_random_uuid(), 'order', $1, 'T', $2)`, fmt.Sprint("a", i%2), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	tbl := Table{Name: legacy}
	_, err := NewRelay(ctx, RelayConfig{DB: db, Table: tbl, Name: "x", Kafka: []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1")}})
	if !errors.Is(err, ErrNotInitialized) || !strings.Contains(err.Error(), "exactly outbox init --dsn DSN --table "+legacy) ||
		!strings.Contains(err.Error(), "trigger legacy_order") || !strings.Contains(err.Error(), "column readyxid") {
		t.Fatalf("relay on an uninitialised table: %v; want what is missing and the init command", err)
	}
	for range 2 {
		if err := tbl.Init(ctx, db); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`INSERT INTO ` + legacy + ` (id, aggregatetype, aggregateid, type, payload)
		VALUES (gen_random_uuid(), 'order', 'a0', 'T', '5')`); err != nil {
		t.Fatal(err)
	}
	if err := tbl.Init(ctx, db); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT aggregateid, aggregateversion, convert_from(payload, 'UTF8') FROM ` + legacy + ` ORDER BY aggregateid, aggregateversion`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var agg, payload string
		var v int64
		rows.Scan(&agg, &v, &payload)
		got = append(got, fmt.Sprintf("%s:v%d=%s", agg, v, payload))
	}
	rows.Close()
	if want := "[a0:v1=0 a0:v2=2 a0:v3=4 a0:v4=5 a1:v1=1 a1:v2=3]"; fmt.Sprint(got) != want {
		t.Fatalf("versions after migration and a plain INSERT: %v, want %s", got, want)
	}

	// A jsonb payload table takes plain INSERTs and Write alike.
	jt := Table{Name: schema + ".jsonbox", PayloadType: "jsonb"}
	if err := jt.Init(ctx, db); err != nil {
		t.Fatal(err)
	}
	tx, _ := db.Begin()
	if err := jt.Write(ctx, tx, &Event{AggregateType: "order", AggregateID: "j", Type: "T", Payload: []byte(`{"n": 1}`)}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO ` + jt.Name + ` (id, aggregatetype, aggregateid, type, payload)
		VALUES (gen_random_uuid(), 'order', 'j', 'T', '{"n": 2}')`); err != nil {
		t.Fatal(err)
	}
	info, err := jt.check(ctx, db)
	if err != nil || !info.jsonPayload {
		t.Fatalf("check on a jsonb table: %+v, %v", info, err)
	}
}

// The two properties of the polling relay, each in its smallest case:
//   - a row of a transaction that is still open when a later transaction
//     commits is not skipped: the later row waits for the horizon;
//   - an aggregate whose next version is written by a transaction with an
//     OLDER txid (which got its id first, then waited for the aggregate)
//     is still published in version order, not txid order.
func TestRelayHorizonAndAggregateOrder(t *testing.T) {
	ctx := context.Background()
	b := exactly.NewTestBroker(t)
	db, tbl, schema := pgTable(t)
	cfg := RelayConfig{DB: db, Table: tbl, Name: "test-" + schema, CheckpointTopic: "checkpoints-" + schema,
		Kafka: []kgo.Opt{kgo.SeedBrokers(b.Addr())}}
	r, err := NewRelay(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	conn := func() pgx.Tx {
		c, err := pgx.Connect(ctx, testenv.PostgresDSN())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	write := func(tx pgx.Tx, agg, payload string) {
		t.Helper()
		if err := tbl.WritePgx(ctx, tx, &Event{AggregateType: "order", AggregateID: agg, Type: "T", Payload: []byte(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	publish := func() int {
		t.Helper()
		n, err := r.PublishBatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// old gets its txid first (writing aggregate x), young second.
	old, young := conn(), conn()
	write(old, "x", "old-x")
	write(young, "z", "young-z") // z v1, txid young
	if err := young.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := publish(); n != 0 {
		t.Fatalf("published %d rows while an older transaction was open; its rows could commit behind the cursor", n)
	}
	st, err := r.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.HeldBackRows != 1 || st.LagRows != 1 || st.HorizonXIDs < 1 {
		t.Fatalf("stats with one committed row held back: %+v", st)
	}
	write(old, "z", "old-z") // z v2 with the OLDER txid
	if err := old.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	drain(t, ctx, r)
	got := readAll(t, b.Addr(), "outbox.event.order", 3)
	var z []string
	for _, recs := range got {
		for _, p := range recs {
			if p.agg == "z" {
				z = append(z, p.value)
			}
		}
	}
	if fmt.Sprint(z) != "[young-z old-z]" {
		t.Fatalf("aggregate z published as %v; want version (commit) order [young-z old-z]", z)
	}
	if st, _ := r.Stats(ctx); st.LagRows != 0 || st.Published != 3 || st.Batches < 1 {
		t.Fatalf("stats after draining: %+v", st)
	}
}
