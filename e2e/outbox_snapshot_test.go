package e2e

// Initial snapshot of the CDC outbox relay under SIGKILL: many rows exist
// before the relay's first start, writers keep inserting, and the relay
// process is killed twice in the middle of its snapshot.

import (
	"context"
	"database/sql"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// snapshotRows is how many rows exist before the relay starts:
// EXACTLY_OUTBOX_SNAPSHOT_ROWS, default 100000 (the acceptance size; it
// took 110-155 s on a loaded 2-core machine, mostly Kafka transactions and
// reading the topic back). The relay reads the snapshot in chunks of
// --batch-size 500 whatever the size, so a smaller value (30000: 60
// chunks, kills after ~12 and ~33) exercises the same resume paths faster.
func snapshotRows(t *testing.T) int {
	if s := os.Getenv("EXACTLY_OUTBOX_SNAPSHOT_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1000 {
			t.Fatalf("EXACTLY_OUTBOX_SNAPSHOT_ROWS=%q: want a number >= 1000", s)
		}
		return n
	}
	return 100000
}

// TestOutboxCDCSnapshotSIGKILL: rows already in the table when the CDC
// relay first starts are published by its initial snapshot, while writers
// keep inserting; the relay process is SIGKILLed twice mid-snapshot (once
// past ~20% and once past ~55% of the rows in Kafka) and restarted. Every
// row, old and new, is published exactly once, each aggregate with
// versions 1..n in order.
func TestOutboxCDCSnapshotSIGKILL(t *testing.T) {
	const writers, aggregates = 4, 50
	rowsBefore := snapshotRows(t)
	ctx := context.Background()
	broker := startBroker(t, t.TempDir(), freePort(t))
	db, err := sql.Open("pgx", testenv.PostgresDSN())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(writers + 4)
	schema := outboxSchema(t, db, "e2e_snap_")
	var relay *childProc
	t.Cleanup(func() {
		if relay != nil {
			relay.kill()
		}
	})
	requireLogical(t, db)
	table := schema + ".outbox"
	if code, out := runExactly(t, "outbox", "init", "--dsn", testenv.PostgresDSN(), "--table", table); code != 0 {
		t.Fatalf("exactly outbox init: exit %d\n%s", code, out)
	}
	if _, err := db.Exec(fmt.Sprintf(`INSERT INTO %s (id, aggregatetype, aggregateid, type, payload)
		SELECT gen_random_uuid(), 'order', 'agg-' || (g %% %d), 'Old', int8send(g) FROM generate_series(1, %d) g`,
		table, aggregates, rowsBefore)); err != nil {
		t.Fatal(err)
	}
	prefix := "snap."
	topic := prefix + "order"
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if resp, err := adm.CreateTopic(ctx, 3, 1, nil, topic); err != nil || resp.Err != nil {
		t.Fatal(err, resp.Err)
	}

	// Writers insert throughout, plain INSERTs, 1-5 rows per transaction,
	// aggregates in ascending order.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written atomic.Int64
	writeErr := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(w), 3))
			for {
				select {
				case <-stop:
					return
				default:
				}
				aggs := make([]int, 1+rng.IntN(5))
				for k := range aggs {
					aggs[k] = rng.IntN(aggregates)
				}
				slices.Sort(aggs)
				if err := insertOutboxRows(ctx, db, table, "New", aggs); err != nil {
					writeErr <- err
					return
				}
				written.Add(int64(len(aggs)))
				time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
			}
		}()
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriters()

	logPath := filepath.Join(t.TempDir(), "relay.log")
	relayLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	args := []string{"--cdc", "--dsn", testenv.PostgresDSN(), "--table", table, "--bootstrap", broker.addr, "--topic-prefix", prefix,
		"--name", schema, "--slot", schema, "--checkpoint-topic", "ckpt-" + schema, "--batch-size", "500", "--setup-timeout", "2m"}
	inKafka := func() int64 {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return 0
		}
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
		return n
	}
	relay = startRelay(t, logPath, args...)
	// Kill it twice mid-snapshot: the topic's end offsets (records plus
	// commit markers) tell how far it got.
	for k, frac := range []float64{0.2, 0.55} {
		deadline := time.Now().Add(3 * time.Minute)
		for float64(inKafka()) < frac*float64(rowsBefore) {
			select {
			case <-relay.done:
				t.Fatalf("relay exited: %v\n%s", relay.err, relayLog())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("snapshot did not reach %.0f%% in 3 minutes\n%s", 100*frac, relayLog())
			}
			time.Sleep(20 * time.Millisecond)
		}
		relay.kill()
		if strings.Contains(relayLog(), "initial snapshot done") {
			t.Fatalf("kill %d came after the snapshot finished; the test meant it mid-snapshot", k+1)
		}
		t.Logf("SIGKILL %d mid-snapshot at ~%d offsets in Kafka, %d rows written since", k+1, inKafka(), written.Load())
		relay = startRelay(t, logPath, args...)
	}
	// Let the writers run past the snapshot into the stream.
	deadline := time.Now().Add(5 * time.Minute)
	for !strings.Contains(relayLog(), "initial snapshot done") {
		select {
		case <-relay.done:
			t.Fatalf("relay exited: %v\n%s", relay.err, relayLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot not done in 5 minutes\n%s", relayLog())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	stopWriters()
	close(writeErr)
	for err := range writeErr {
		t.Fatal(err)
	}
	want := tableRows(t, db, table)
	if len(want) < rowsBefore+1 {
		t.Fatalf("%d rows in the table, want more than %d", len(want), rowsBefore)
	}
	waitPublished(t, broker.addr, []string{topic}, len(want), relay, relayLog)
	relay.cmd.Process.Signal(syscall.SIGTERM)
	<-relay.done
	relay = nil
	byAgg := checkPublished(t, broker.addr, []string{topic}, want)
	t.Logf("%d rows before the relay, %d written during it, 2 SIGKILLs mid-snapshot: %d aggregates, each row exactly once, versions 1..n",
		rowsBefore, len(want)-rowsBefore, len(byAgg))
	if t.Failed() {
		t.Logf("relay log:\n%s", relayLog())
	}
}

// outboxRow is what the table says about one row.
type outboxRow struct {
	agg     string
	version int64
}

// tableRows reads every row's aggregate and version by id.
func tableRows(t *testing.T, db *sql.DB, table string) map[string]outboxRow {
	t.Helper()
	rows, err := db.Query("SELECT id::text, aggregateid, aggregateversion FROM " + table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	want := map[string]outboxRow{}
	for rows.Next() {
		var id string
		var r outboxRow
		if err := rows.Scan(&id, &r.agg, &r.version); err != nil {
			t.Fatal(err)
		}
		want[id] = r
	}
	return want
}

// waitPublished waits until the topics hold at least n committed records,
// failing if the relay exits or 3 minutes pass.
func waitPublished(t *testing.T, addr string, topics []string, n int, relay *childProc, relayLog func() string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for {
		// Cheap first: committed offsets count records and markers, so
		// they reach n no later than the records do.
		var offsets int64
		if ends, err := kadm.NewClient(cl).ListCommittedOffsets(context.Background(), topics...); err == nil {
			ends.Each(func(o kadm.ListedOffset) { offsets += o.Offset })
		}
		if offsets < int64(n) {
			select {
			case <-relay.done:
				t.Fatalf("relay exited: %v\n%s", relay.err, relayLog())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d offsets committed for %d rows after 3 minutes\n%s", offsets, n, relayLog())
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		got := 0
		for _, topic := range topics {
			got += len(txnRead(t, addr, topic, true))
		}
		if got >= n {
			return
		}
		select {
		case <-relay.done:
			t.Fatalf("relay exited: %v\n%s", relay.err, relayLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("published %d of %d rows after 3 minutes\n%s", got, n, relayLog())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// checkPublished reads the topics read_committed to their end and checks
// that every row of want is there exactly once and nothing else is, that
// each aggregate stays on one partition, and that its records carry
// aggregateversion 1..n in order, matching the table. It returns each
// aggregate's records in order.
func checkPublished(t *testing.T, addr string, topics []string, want map[string]outboxRow) map[string][]*kgo.Record {
	t.Helper()
	count := map[string]int{}
	byAgg := map[string][]*kgo.Record{}
	aggPart := map[string]int32{}
	total := 0
	for _, topic := range topics {
		for p, recs := range testenv.ReadToEnd(t, addr, topic, true) {
			for _, r := range recs {
				agg := string(r.Key)
				count[header(r, "id")]++
				total++
				byAgg[agg] = append(byAgg[agg], r)
				if q, ok := aggPart[agg]; ok && q != p {
					t.Errorf("aggregate %s on partitions %d and %d", agg, q, p)
				}
				aggPart[agg] = p
			}
		}
	}
	dups := 0
	for id, n := range count {
		if _, ok := want[id]; !ok {
			t.Errorf("published row %s that is not in the table", id)
		}
		if n != 1 {
			dups++
			if dups <= 10 {
				t.Errorf("row %s published %d times", id, n)
			}
		}
	}
	if total != len(want) || len(count) != len(want) {
		t.Errorf("published %d records, %d distinct rows; want %d (%d duplicated)", total, len(count), len(want), dups)
	}
	for agg, recs := range byAgg {
		for k, r := range recs {
			id := header(r, "id")
			v, _ := strconv.ParseInt(header(r, "aggregateversion"), 10, 64)
			if v != int64(k+1) {
				t.Errorf("aggregate %s: record %d has version %d; versions must be 1..n without gaps", agg, k, v)
				break
			}
			if w := want[id]; w.agg != agg || w.version != v {
				t.Errorf("aggregate %s: record %s published as version %d, the table says %s v%d", agg, id, v, w.agg, w.version)
				break
			}
		}
	}
	return byAgg
}
