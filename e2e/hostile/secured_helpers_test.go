package hostile

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/internal/managed"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Helpers of the SASL_SSL side of the suite: a broker whose only listener
// is SASL_SSL, set up the way the security contract runs one (PEM
// keystore, SCRAM-SHA-512 admin from --add-scram, Kafka's
// StandardAuthorizer with User:admin as the super user), and the two
// principals the tests use on it.

// The users of a secured broker: admin, the super user the operator
// created at start, runs the canary; the attacker is an ordinary user
// whose ACLs grant it everything (see grantAttacker).
var (
	adminUser    = testenv.SASLUser{Mechanism: "SCRAM-SHA-512", User: "admin", Password: "admin-secret"}
	attackerUser = testenv.SASLUser{Mechanism: "SCRAM-SHA-512", User: "mallory", Password: "mallory-secret"}
)

// securedConfig is the broker configuration of a SASL_SSL listener with
// certs, as the security contract's server.properties has it, less the
// listeners key.
func securedConfig(certs *testenv.TLSCerts) map[string]string {
	return map[string]string{
		"ssl.keystore.type":       "PEM",
		"ssl.keystore.location":   certs.ServerFile,
		"sasl.enabled.mechanisms": "SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
		"authorizer.class.name":   "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"super.users":             "User:" + adminUser.User,
	}
}

// startSecuredServe runs `exactly serve` whose only listener is SASL_SSL
// and returns it with the attacker's and the admin's targets.
func startSecuredServe(t *testing.T) (b *managed.Broker, attacker, admin target) {
	t.Helper()
	certs := testenv.NewTLSCerts(t)
	var config []string
	for k, v := range securedConfig(certs) {
		config = append(config, k+"="+v)
	}
	argv := []string{testenv.ExactlyBinary(t), "serve", "--add-scram",
		adminUser.Mechanism + "=[name=" + adminUser.User + ",password=" + adminUser.Password + "]"}
	b, err := managed.StartListener(argv, nil, t.TempDir(), "SASL_SSL", config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Kill)
	admin = target{addr: b.Addr(), tls: certs.ClientConfig(), user: adminUser}
	return b, grantAttacker(t, admin), admin
}

// startSecuredBroker runs an embedded broker whose only listener is
// SASL_SSL, with metrics, its log captured, and extra configs; it returns
// the attacker's and the admin's targets.
func startSecuredBroker(t *testing.T, extra map[string]string) (b *exactly.Broker, logs *logLines, attacker, admin target) {
	t.Helper()
	certs := testenv.NewTLSCerts(t)
	cfg := securedConfig(certs)
	cfg["listeners"] = "SASL_SSL://127.0.0.1:0"
	for k, v := range extra {
		cfg[k] = v
	}
	logs = &logLines{}
	b, err := exactly.Start(exactly.Options{DataDir: t.TempDir(), Config: cfg, MetricsListen: "127.0.0.1:0",
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		ScramUsers: []exactly.ScramUser{{Mechanism: adminUser.Mechanism, Name: adminUser.User, Password: adminUser.Password}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	admin = target{addr: b.ListenerAddr("SASL_SSL"), tls: certs.ClientConfig(), user: adminUser}
	return b, logs, grantAttacker(t, admin), admin
}

// onEachListener runs body as two subtests with the same broker configs
// cfg and metrics: against a PLAINTEXT broker, attacker and well-behaved
// client alike anonymous, and against a SASL_SSL-only broker, the
// attacker authenticated as grantAttacker's user and the well-behaved
// client as the admin. The bound body checks thus holds over TLS too.
func onEachListener(t *testing.T, cfg map[string]string, body func(t *testing.T, b *exactly.Broker, attacker, well target)) {
	t.Run("PLAINTEXT", func(t *testing.T) {
		b := startMetricsBroker(t, cfg)
		body(t, b, plaintext(b.Addr()), plaintext(b.Addr()))
	})
	t.Run("SASL_SSL", func(t *testing.T) {
		b, _, attacker, admin := startSecuredBroker(t, cfg)
		body(t, b, attacker, admin)
	})
}

// grantAttacker creates the attacker's SCRAM credential and ACLs through
// admin, and returns its target. The attacker is an ordinary user whose
// ACLs allow every operation on every topic, group and transactional id
// and on the cluster, not a super user: a super user skips the
// authorizer, and the attacks must pay for ACL evaluation as an
// authenticated tenant's requests do, yet still reach the code each one
// aims at (forged markers need CLUSTER_ACTION, static config flips
// ALTER_CONFIGS on the cluster, internal topic writes WRITE on them).
func grantAttacker(t *testing.T, admin target) target {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(admin.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close() // its connection must not count in the tests' connection counts
	adm := kadm.NewClient(cl)
	res, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{User: attackerUser.User, Mechanism: kadm.ScramSha512,
		Iterations: 4096, Password: attackerUser.Password}})
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("creating the attacker's credential: %v", err)
	}
	acls := kadm.NewACLs().Allow("User:" + attackerUser.User).AllowHosts("*").
		Topics("*").Groups("*").TransactionalIDs("*").Clusters().
		Operations(kadm.OpAll).ResourcePatternType(kadm.ACLPatternLiteral)
	created, err := adm.CreateACLs(ctx, acls)
	if err != nil {
		t.Fatalf("creating the attacker's ACLs: %v", err)
	}
	for _, c := range created {
		if c.Err != nil {
			t.Fatalf("creating the attacker's ACL on %v %s: %v", c.Type, c.Name, c.Err)
		}
	}
	return admin.as(attackerUser)
}

// attackers is how many connections the attacks on authentication open
// or run at once.
const attackers = 8

// onWorkers runs job(i) for i in [0, n) on attackers goroutines and
// reports what the jobs returned as test errors, from the test's own
// goroutine.
func onWorkers(t *testing.T, n int, job func(i int) error) {
	t.Helper()
	jobs := make(chan int)
	var mu sync.Mutex
	var problems []string
	var wg sync.WaitGroup
	for range attackers {
		wg.Go(func() {
			for i := range jobs {
				if err := job(i); err != nil {
					mu.Lock()
					problems = append(problems, err.Error())
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for i, p := range problems {
		if i == 10 {
			t.Errorf("... and %d more", len(problems)-i)
			break
		}
		t.Error(p)
	}
}

// logLines collects an embedded broker's log for tests that count lines.
type logLines struct {
	mu  sync.Mutex
	buf strings.Builder
}

// Write takes the broker's log output (slog writes a line at a time).
func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count is how many lines hold every one of parts.
func (l *logLines) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.buf.String(), "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}
