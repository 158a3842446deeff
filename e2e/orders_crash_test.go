package e2e

// SIGKILL crash test of the whole outbox pipeline through the orders
// example: writers place orders (some rolled back) while the relay and the
// ledger consumer, each a process of its own, are SIGKILLed in turns and
// restarted; in the end every committed order is booked exactly once.

import (
	"database/sql"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// TestOrdersPipelineSIGKILL: `orders place` runs a Go writer and a psql
// writer side by side (every 5th order of each rolled back after both
// writes) while `exactly outbox relay` and `orders consume` (the ledger
// consumer: dedup claim and ledger entry in one PostgreSQL transaction,
// Kafka offsets committed after) are SIGKILLed in turns, 3 times each, and
// restarted. Once the ledger holds as many entries as there are committed
// orders, both are stopped and:
//   - every committed order has exactly one ledger entry, with its amount,
//     and no other order (rolled back or unknown) has any;
//   - the ledger total equals the sum of the committed orders;
//   - the topic, read_committed, holds each committed order's event once
//     and none of a rolled-back order;
//   - the dedup table claims each of those events' ids once, and nothing
//     else, and a consumer of a new group, replaying the whole topic,
//     books nothing again.
//
// In polling and CDC mode.
func TestOrdersPipelineSIGKILL(t *testing.T) {
	testenv.RequireTool(t, "/usr/bin/psql", "apt-get install postgresql-client")
	for _, mode := range []string{"poll", "cdc"} {
		t.Run(mode, func(t *testing.T) { ordersPipelineSIGKILL(t, mode) })
	}
}

// ordersTopic is where the relay publishes the example's events (the
// outbox default for aggregate type "order").
const ordersTopic = "outbox.event.order"

// orderEvent mirrors the example's event payload; the test decodes it
// itself so its expectations do not come from the code under test.
type orderEvent struct {
	OrderID     string `json:"order_id"`
	AmountCents int64  `json:"amount_cents"`
}

func ordersPipelineSIGKILL(t *testing.T, mode string) {
	const (
		goOrders, psqlOrders, declineEvery = 400, 400, 5
		kills                              = 3 // of each process
		// Generous for a loaded 2-core machine: the deadline for the
		// whole catch-up, and how long the ledger may stand still while
		// entries are missing.
		catchUp, stall = 5 * time.Minute, 2 * time.Minute
	)
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
	bin := exampleBinary(t, "orders")
	broker := startBroker(t, t.TempDir(), freePort(t))
	dsn := testenv.PostgresDSN()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n%s", dsn, err, testenv.PostgresHint)
	}
	schema := testenv.RandName("e2e_orders_")
	dropOutboxAtEnd(t, db, schema)
	if mode == "cdc" {
		requireLogical(t, db)
	}
	common := []string{"--dsn", dsn, "--schema", schema}
	if out, err := exec.Command(bin, append([]string{"init"}, common...)...).CombinedOutput(); err != nil {
		t.Fatalf("orders init: %v\n%s", err, out)
	}
	createTopic(t, broker.addr, ordersTopic, 3)

	dir := t.TempDir()
	relayLog, consumerLog, placeLog := filepath.Join(dir, "relay.log"), filepath.Join(dir, "consumer.log"), filepath.Join(dir, "place.log")
	relayArgs := []string{"--dsn", dsn, "--table", schema + ".outbox", "--bootstrap", broker.addr, "--name", schema,
		"--checkpoint-topic", "ckpt-" + schema, "--batch-size", "50", "--poll-interval", "20ms", "--setup-timeout", "2m"}
	if mode == "cdc" {
		relayArgs = append(relayArgs, "--cdc", "--slot", schema)
	} else {
		relayArgs = append(relayArgs, "--delete-published")
	}
	// Static membership: a restarted consumer takes the killed one's place
	// at once instead of waiting out its session.
	consumerArgs := append([]string{"consume", "--bootstrap", broker.addr, "--instance-id", "ledger-0"}, common...)
	relay := startRelay(t, relayLog, relayArgs...)
	consumer := startChild(t, consumerLog, bin, consumerArgs...)
	place := startChild(t, placeLog, bin, append([]string{"place", "--orders", fmt.Sprint(goOrders),
		"--psql-orders", fmt.Sprint(psqlOrders), "--decline-every", fmt.Sprint(declineEvery), "--pause", "30ms",
		"--psql", "/usr/bin/psql"}, common...)...)

	count := func(table string) int {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM ` + schema + `.` + table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	alive := func(p *childProc, what string) {
		t.Helper()
		if p.exited() {
			t.Fatalf("%s exited by itself (%v):\n%s", what, p.err, tailFile(p.logPath))
		}
	}

	// The kills start once the pipeline has booked an order, so they land
	// while it works; after that nothing waits for progress, so a kill may
	// land mid-batch, mid-start or while idle, all of which must be safe.
	for start := time.Now(); count("ledger") == 0; time.Sleep(50 * time.Millisecond) {
		alive(relay, "relay")
		alive(consumer, "consumer")
		if time.Since(start) > stall {
			t.Fatalf("nothing booked %v after the start\nrelay log:\n%s\nconsumer log:\n%s",
				stall, tailFile(relayLog), tailFile(consumerLog))
		}
	}
	for i := range 2 * kills {
		time.Sleep(time.Duration(800+rng.IntN(1500)) * time.Millisecond)
		alive(relay, "relay")
		alive(consumer, "consumer")
		victim := "relay"
		if i%2 == 1 {
			victim = "consumer"
		}
		if victim == "relay" {
			relay.kill()
		} else {
			consumer.kill()
		}
		t.Logf("SIGKILL %s (%d of %d): %d orders committed, %d booked, writers running: %v",
			victim, i/2+1, kills, count("orders"), count("ledger"), !place.exited())
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		if victim == "relay" {
			relay = startRelay(t, relayLog, relayArgs...)
		} else {
			consumer = startChild(t, consumerLog, bin, consumerArgs...)
		}
	}
	select {
	case <-place.done:
		if place.err != nil {
			t.Fatalf("orders place: %v\n%s", place.err, tailFile(placeLog))
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("orders place did not finish in 3 minutes:\n%s", tailFile(placeLog))
	}

	// What the writers committed, from the database (the test's truth),
	// and what they reported.
	committed := map[string]int64{}
	rows, err := db.Query(`SELECT id, amount_cents FROM ` + schema + `.orders`)
	if err != nil {
		t.Fatal(err)
	}
	var committedSum int64
	for rows.Next() {
		var id string
		var cents int64
		if err := rows.Scan(&id, &cents); err != nil {
			t.Fatal(err)
		}
		committed[id] = cents
		committedSum += cents
	}
	rows.Close()
	placeOut := readFile(placeLog)
	declined := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^declined (o-[0-9a-f]+)`).FindAllStringSubmatch(placeOut, -1) {
		declined[m[1]] = true
	}
	reported := regexp.MustCompile(`(?m)^placed (o-[0-9a-f]+)`).FindAllStringSubmatch(placeOut, -1)
	wantCommitted := goOrders + psqlOrders - goOrders/declineEvery - psqlOrders/declineEvery
	if len(committed) != wantCommitted || len(reported) != wantCommitted || len(declined) != goOrders/declineEvery+psqlOrders/declineEvery {
		t.Fatalf("%d orders in the table, %d reported placed, %d declined; want %d committed and %d declined",
			len(committed), len(reported), len(declined), wantCommitted, goOrders/declineEvery+psqlOrders/declineEvery)
	}
	for _, m := range reported {
		if _, ok := committed[m[1]]; !ok {
			t.Fatalf("order %s was reported placed but is not in the table", m[1])
		}
	}
	for id := range declined {
		if _, ok := committed[id]; ok {
			t.Fatalf("declined order %s is in the table", id)
		}
	}

	// Everything runs until the work is done: the ledger holds an entry
	// per committed order. A stall is measured against what is left, so a
	// slow but moving catch-up is not a failure.
	deadline := time.Now().Add(catchUp)
	last, lastChange := -1, time.Now()
	for {
		n := count("ledger")
		if n >= len(committed) {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		alive(relay, "relay")
		alive(consumer, "consumer")
		if time.Since(lastChange) > stall || time.Now().After(deadline) {
			t.Fatalf("ledger holds %d of %d entries; it last grew %v ago\nrelay log:\n%s\nconsumer log:\n%s",
				n, len(committed), time.Since(lastChange).Round(time.Second), tailFile(relayLog), tailFile(consumerLog))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Stop them once up: before that, SIGTERM kills a process that has not
	// set up its handler yet, or interrupts the relay's start.
	logWait(t, consumerLog, consumer.logFrom, "consuming ", consumer)
	stopChild(t, consumer, "consumer")
	logWait(t, relayLog, relay.logFrom, " -> ", relay)
	stopChild(t, relay, "relay")
	redelivered := strings.Count("\n"+readFile(consumerLog), "\nduplicate ")

	// A consumer of a new group gets every event again, as one restarted
	// without its offsets would: the dedup claims must skip them all.
	replayLog := filepath.Join(dir, "replay.log")
	replay := startChild(t, replayLog, bin, append([]string{"consume", "--bootstrap", broker.addr, "--group", "replay-" + schema}, common...)...)
	deadline = time.Now().Add(catchUp)
	for last, lastChange = -1, time.Now(); ; time.Sleep(200 * time.Millisecond) {
		n := strings.Count("\n"+readFile(replayLog), "\nduplicate ")
		if n >= len(committed) {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		alive(replay, "replaying consumer")
		if time.Since(lastChange) > stall || time.Now().After(deadline) {
			t.Fatalf("the replaying consumer skipped %d of %d events; last progress %v ago:\n%s",
				n, len(committed), time.Since(lastChange).Round(time.Second), tailFile(replayLog))
		}
	}
	logWait(t, replayLog, replay.logFrom, "consuming ", replay)
	stopChild(t, replay, "replaying consumer")
	if n := strings.Count("\n"+readFile(replayLog), "\nbooked "); n != 0 {
		t.Errorf("the replaying consumer booked %d events again", n)
	}

	// The ledger: one entry per committed order, with its amount.
	booked := map[string]int{}
	rows, err = db.Query(`SELECT order_id, amount_cents FROM ` + schema + `.ledger`)
	if err != nil {
		t.Fatal(err)
	}
	var ledgerSum int64
	var errs []string
	for rows.Next() {
		var id string
		var cents int64
		if err := rows.Scan(&id, &cents); err != nil {
			t.Fatal(err)
		}
		booked[id]++
		ledgerSum += cents
		want, ok := committed[id]
		switch {
		case declined[id]:
			errs = append(errs, fmt.Sprintf("ledger entry for rolled-back order %s", id))
		case !ok:
			errs = append(errs, fmt.Sprintf("ledger entry for unknown order %s", id))
		case cents != want:
			errs = append(errs, fmt.Sprintf("ledger entry for %s: %d cents, the order has %d", id, cents, want))
		}
	}
	rows.Close()
	for id := range committed {
		if booked[id] != 1 {
			errs = append(errs, fmt.Sprintf("order %s has %d ledger entries, want 1", id, booked[id]))
		}
	}
	if ledgerSum != committedSum {
		errs = append(errs, fmt.Sprintf("ledger total %d cents, committed orders total %d", ledgerSum, committedSum))
	}

	// The topic: each committed order's event, once; no other.
	published := map[string]int{}
	eventIDs := map[string]string{} // outbox id -> order
	for _, r := range testenv.Flatten(testenv.ReadToEnd(t, broker.addr, ordersTopic, true)) {
		var ev orderEvent
		if err := json.Unmarshal(r.Value, &ev); err != nil {
			errs = append(errs, fmt.Sprintf("record %d/%d: %v", r.Partition, r.Offset, err))
			continue
		}
		published[ev.OrderID]++
		if _, ok := committed[ev.OrderID]; !ok {
			errs = append(errs, fmt.Sprintf("event for order %s, which is not committed (declined: %v)", ev.OrderID, declined[ev.OrderID]))
			continue
		}
		id := header(r, "id")
		if prev, dup := eventIDs[id]; dup || id == "" {
			errs = append(errs, fmt.Sprintf("event id %q of order %s seen before (order %s)", id, ev.OrderID, prev))
		}
		eventIDs[id] = ev.OrderID
	}
	for id := range committed {
		// At least once is what the consumer needs; the relays promise
		// exactly once, so a second copy is a relay bug.
		if published[id] != 1 {
			errs = append(errs, fmt.Sprintf("order %s: %d events on the topic, want 1", id, published[id]))
		}
	}

	// The dedup table: each event id claimed once, for good.
	claims := 0
	rows, err = db.Query(`SELECT id, done FROM ` + schema + `.ledger_processed`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var done int
		if err := rows.Scan(&id, &done); err != nil {
			t.Fatal(err)
		}
		claims++
		if _, ok := eventIDs[id]; !ok || done != 1 {
			errs = append(errs, fmt.Sprintf("dedup claim %s (done=%d) is for no committed order's event", id, done))
		}
	}
	rows.Close()
	if claims != len(eventIDs) {
		errs = append(errs, fmt.Sprintf("%d dedup claims for %d events", claims, len(eventIDs)))
	}
	if len(errs) > 0 {
		if len(errs) > 20 {
			errs = append(errs[:20], fmt.Sprintf("... and %d more", len(errs)-20))
		}
		t.Fatalf("%s\nrelay log:\n%s\nconsumer log:\n%s", strings.Join(errs, "\n"), tailFile(relayLog), tailFile(consumerLog))
	}
	t.Logf("%d orders committed (%d cents), %d rolled back; %d relay and %d consumer SIGKILLs; "+
		"every committed order booked once; the dedup claims skipped %d redeliveries after the kills and all %d on replay",
		len(committed), committedSum, len(declined), kills, kills, redelivered, len(committed))
}
