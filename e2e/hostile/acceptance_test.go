package hostile

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/managed"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

// attack is one hostile client's behaviour against the broker at tg. It
// returns once the attack is over (its connections closed or abandoned);
// the bound and the broker's health are checked by the caller.
type attack struct {
	name string
	run  func(t *testing.T, tg target)
}

// attacks lists every attack of the suite, in the order the acceptance test
// runs them one after another against a single broker. Attacks that leave
// connections open have them closed here, as their client would when it
// gives up, so that the next attack and the canary start from a broker
// whose connection limits they have not used up.
var attacks = []attack{
	{"connection flood", func(t *testing.T, tg target) { closeAll(attackConnectionFlood(t, tg)) }},
	{"connection churn", attackFileLimit},
	{"huge array counts", func(t *testing.T, tg target) { conns, _ := attackHugeCounts(t, tg); closeAll(conns) }},
	{"amplifying requests", attackAmplifyingRequests},
	{"huge declared frames", func(t *testing.T, tg target) { closeAll(attackHugeDeclaredFrames(t, tg)) }},
	{"partial frames", attackPartialFrames},
	{"unread fetches", attackUnreadFetches},
	{"abandoned long polls", attackAbandonedLongPolls},
	{"decompression bombs", attackDecompressionBombs},
	{"forged producer ids", attackForgedProducerIDs},
	{"forged txn markers", forgeMarkersAgainstOpenTransaction},
	{"internal topic writes", attackInternalTopics},
	{"static config flips", attackFlipStaticConfigs},
	{"auto-create flood", func(t *testing.T, tg target) { attackAutoCreateFlood(t, tg) }},
}

// forgeMarkersAgainstOpenTransaction runs attackForgedMarkers while a
// transaction is open on its target, then commits that transaction: the
// forged markers must not have ended or fenced it.
func forgeMarkersAgainstOpenTransaction(t *testing.T, tg target) {
	createTopic(t, tg, markerTarget, 1)
	tx, err := kgo.NewClient(append(tg.opts(), kgo.DefaultProduceTopic(markerTarget), kgo.TransactionalID("acceptance-forged-markers"))...)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if err := tx.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := tx.ProduceSync(t.Context(), &kgo.Record{Value: []byte("in-open-txn")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	attackForgedMarkers(t, tg)
	if err := tx.EndTransaction(t.Context(), kgo.TryCommit); err != nil {
		t.Fatalf("committing the transaction the forged markers aimed at: %v", err)
	}
}

// closeAll closes an attack's connections.
func closeAll(conns []*testenv.RawConn) {
	for _, c := range conns {
		c.NC.Close()
	}
}

// peakRSS is a process's peak resident set size (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestEveryAttackInTurn runs every attack against one `exactly serve`
// process with the default configuration: after each, a canary producer
// and consumer (acks=all) must be served with nothing lost; the broker's
// peak RSS must stay under 1 GiB throughout; and after a SIGTERM and a
// restart every canary record acknowledged before is still served.
func TestEveryAttackInTurn(t *testing.T) {
	bin := testenv.ExactlyBinary(t)
	b, err := managed.Start([]string{bin, "serve"}, nil, t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Kill)
	tg := plaintext(b.Addr())
	attackInTurn(t, b, attacks, tg, tg)
}

// TestEveryAttackInTurnOverSASLSSL is TestEveryAttackInTurn against an
// `exactly serve` whose only listener is SASL_SSL, with the same bounds:
// every attack again, its connections authenticated as a user the ACLs
// allow everything (raw frames follow a completed TLS handshake and SCRAM
// exchange; none may be refused by the authorizer), then the attacks on
// authentication itself; the canary is the admin, over SASL_SSL.
func TestEveryAttackInTurnOverSASLSSL(t *testing.T) {
	b, attacker, admin := startSecuredServe(t)
	attackInTurn(t, b, append(append([]attack(nil), attacks...), securedAttacks...), attacker, admin)
	// Every attack reached the code it aims at: the authorizer refused
	// none of its requests (a refusal would have made it harmless).
	log, err := os.ReadFile(b.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "authorization denied") {
			t.Errorf("the authorizer refused an attack's request, which then tested nothing: %s", line)
			break
		}
	}
}

// attackInTurn runs each attack as attacker against b, then the canary
// as well; then restarts b and reads every canary topic back.
func attackInTurn(t *testing.T, b *managed.Broker, attacks []attack, attacker, well target) {
	if len(attacks) == 0 {
		t.Fatal("no attacks registered")
	}
	const canaryRecords = 50
	var topics []string
	for _, a := range attacks {
		start := time.Now()
		a.run(t, attacker)
		topics = append(topics, canary(t, well, canaryRecords))
		rss := peakRSS(t, b.PID())
		t.Logf("%-28s done in %v; broker peak RSS so far %d MiB", a.name, time.Since(start).Round(time.Millisecond), rss>>20)
		if rss >= 1<<30 {
			t.Fatalf("after %s the broker's peak RSS is %d MiB, over 1 GiB", a.name, rss>>20)
		}
	}
	b.Stop(30 * time.Second)
	if err := b.Restart(); err != nil {
		t.Fatalf("restart after the attacks: %v", err)
	}
	for _, topic := range topics {
		recs := testenv.ReadToEnd(t, well.addr, topic, false, well.opts()...)
		if n := len(recs[0]); n != canaryRecords {
			t.Errorf("after restart %s holds %d records, want %d", topic, n, canaryRecords)
		}
	}
}
