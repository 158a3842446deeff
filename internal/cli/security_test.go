package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/exactly/exactly"
	"github.com/exactly/exactly/clientconf"
	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// writeTestFile writes content to name in dir and returns the path.
func writeTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A plaintext cluster named only in --command-config is reached by every
// kind of command, and -b on the command line wins over the file.
func TestCommandConfigPlaintext(t *testing.T) {
	addr := startBroker(t)
	dir := t.TempDir()
	cfg := writeTestFile(t, dir, "client.properties", "# plaintext\nbootstrap.servers="+addr+"\nsecurity.protocol=PLAINTEXT\nclient.id=cfg-test\n")
	mustRun(t, "", "topic", "create", "cfg", "--command-config", cfg)
	if out := mustRun(t, "", "topic", "list", "--command-config", cfg).stdout; !strings.Contains(out, "cfg") {
		t.Fatalf("topic list: %q", out)
	}
	mustRun(t, "a\nb\n", "produce", "cfg", "--command-config", cfg)
	out := mustRun(t, "", "consume", "cfg", "--command-config", cfg, "--from-beginning", "--count", "2").stdout
	if out != "a\nb\n" {
		t.Fatalf("consume: %q", out)
	}

	// The file names a port nobody listens on; the flag's broker is used.
	dead := writeTestFile(t, dir, "dead.properties", "bootstrap.servers=127.0.0.1:1\n")
	if out := mustRun(t, "", "topic", "list", "--command-config", dead, "-b", addr).stdout; !strings.Contains(out, "cfg") {
		t.Fatalf("flag did not win over the file: %q", out)
	}
	// Without the flag the file's broker is the one dialed, and named.
	wantErr(t, "127.0.0.1:1", "", "topic", "list", "--command-config", dead, "--request-timeout", "2s")
}

func TestCommandConfigErrors(t *testing.T) {
	dir := t.TempDir()
	typo := writeTestFile(t, dir, "typo.properties", "bootstrap.servers=127.0.0.1:1\nsasl.usernam=alice\n")
	for _, args := range [][]string{
		{"topic", "list"}, {"produce", "t"}, {"consume", "t"}, {"user", "list"}, {"acl", "list"},
	} {
		wantErr(t, `unknown key "sasl.usernam"`, "", append(args, "--command-config", typo)...)
	}
	wantErr(t, "no such file", "", "topic", "list", "--command-config", filepath.Join(dir, "missing"))
	jks := writeTestFile(t, dir, "jks.properties", "security.protocol=SSL\nssl.truststore.location=/ts.jks\n")
	wantErr(t, "ssl.truststore.type=PEM", "", "topic", "list", "--command-config", jks)
	t.Setenv(clientconf.PasswordEnv, "")
	wantErr(t, "needs a password", "", "topic", "list", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", "u")
	wantErr(t, "unsupported SASL mechanism", "", "topic", "list", "--sasl-mechanism", "GSSAPI", "--sasl-user", "u")
	wantErr(t, "reading the CA bundle", "", "topic", "list", "--tls-ca", filepath.Join(dir, "nope.pem"))
}

// Every client-side command takes the same connection flags.
func TestConnectionFlagsOnEveryCommand(t *testing.T) {
	root := newRoot()
	root.AddCommand(GroupCommand(), TxnCommand(), QuotaCommand(), BenchCommand(), VerifyCommand(), OutboxCommand())
	flags := []string{"--tls", "--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name", "--sasl-mechanism",
		"--sasl-user", "--sasl-password-file", "--command-config"}
	for _, path := range [][]string{
		{"topic", "list"}, {"produce"}, {"consume"}, {"group", "list"}, {"txn", "list"}, {"quota", "describe"},
		{"bench"}, {"verify"}, {"outbox", "relay"}, {"user", "create"}, {"user", "list"}, {"acl", "create"},
		{"acl", "list"}, {"acl", "delete"},
	} {
		cmd, _, err := root.Find(path)
		if err != nil {
			t.Fatalf("%v: %v", path, err)
		}
		usage := cmd.UsageString()
		for _, f := range flags {
			if !strings.Contains(usage, f+" ") {
				t.Errorf("exactly %s: no %s in its help", strings.Join(path, " "), f)
			}
		}
		if strings.Contains(usage, "--sasl-password ") {
			t.Errorf("exactly %s takes a password on the command line", strings.Join(path, " "))
		}
	}
}

// Mistakes in user and acl arguments are caught before any connection.
func TestUserACLArgumentErrors(t *testing.T) {
	t.Setenv(UserPasswordEnv, "")
	noBroker := []string{"-b", "127.0.0.1:1"}
	for _, tc := range []struct {
		want string
		args []string
	}{
		{"never the command line", []string{"user", "create", "alice"}},
		{"must be SCRAM-SHA-256 or SCRAM-SHA-512", []string{"user", "create", "alice", "--mechanism", "PLAIN"}},
		{"between 4096 and 16384", []string{"user", "create", "alice", "--iterations", "100"}},
		{"give at least one --allow-principal", []string{"acl", "create", "--operation", "read", "--topic", "t"}},
		{"give at least one --operation", []string{"acl", "create", "--allow-principal", "User:a", "--topic", "t"}},
		{"give a resource", []string{"acl", "create", "--allow-principal", "User:a", "--operation", "read"}},
		{`invalid --operation "fly"`, []string{"acl", "create", "--allow-principal", "User:a", "--operation", "fly", "--topic", "t"}},
		{"expected Type:name", []string{"acl", "create", "--allow-principal", "alice", "--operation", "read", "--topic", "t"}},
		{"must be literal or prefixed", []string{"acl", "create", "--allow-principal", "User:a", "--operation", "read", "--topic", "t", "--resource-pattern-type", "match"}},
		{"refusing to delete every ACL", []string{"acl", "delete"}},
	} {
		wantErr(t, tc.want, "", append(tc.args, noBroker...)...)
	}
}

// The builders hold what kafka-acls.sh would send.
func TestACLBuilders(t *testing.T) {
	a := &aclFlags{allow: []string{"User:alice"}, ops: []string{"WRITE", "describe_configs"}, topics: []string{"orders"},
		hosts: []string{"*"}, pattern: "prefixed"}
	b, err := a.createBuilder()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateCreate(); err != nil {
		t.Fatal(err)
	}
	a = &aclFlags{principals: []string{"User:bob"}, pattern: "match"}
	b, err = a.filterBuilder()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateFilter(); err != nil {
		t.Fatal(err)
	}
	if !b.HasAnyFilter() {
		t.Fatal("a filter with no resource should match any resource")
	}
	for s, want := range map[string]kadm.ACLOperation{"cluster-action": kadm.OpClusterAction, "IDEMPOTENT_WRITE": kadm.OpIdempotentWrite, "all": kadm.OpAll} {
		if op, err := parseACLOperation(s); err != nil || op != want {
			t.Errorf("%s: %v %v", s, op, err)
		}
	}
}

// requireAPIs skips the test unless the broker at addr advertises every
// key: the server side of security lands separately, and these tests run
// as soon as it does.
func requireAPIs(t *testing.T, addr string, keys ...int16) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vs, err := kadm.NewClient(cl).ApiVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, bv := range vs {
		if bv.Err != nil {
			t.Fatal(bv.Err)
		}
		for _, k := range keys {
			if _, _, ok := bv.KeyVersions(k); !ok {
				missing = append(missing, fmt.Sprintf("%s (key %d)", kmsg.NameForKey(k), k))
			}
		}
	}
	if len(missing) > 0 {
		t.Skipf("the broker does not serve %s yet", strings.Join(missing, ", "))
	}
}

func TestUserCommands(t *testing.T) {
	addr := startBroker(t)
	requireAPIs(t, addr, int16(kmsg.DescribeUserSCRAMCredentials), int16(kmsg.AlterUserSCRAMCredentials))
	dir := t.TempDir()
	pw := writeTestFile(t, dir, "pw", "alice-secret\n")
	mustRun(t, "", "user", "create", "alice", "--mechanism", "SCRAM-SHA-512", "--password-file", pw, "-b", addr)
	t.Setenv(UserPasswordEnv, "bob-secret")
	mustRun(t, "", "user", "create", "bob", "--mechanism", "scram-sha-256", "--iterations", "4096", "-b", addr)
	mustRun(t, "", "user", "create", "bob", "--mechanism", "SCRAM-SHA-512", "-b", addr)
	out := mustRun(t, "", "user", "list", "-b", addr).stdout
	for _, want := range []string{"alice  SCRAM-SHA-512  8192", "bob    SCRAM-SHA-256  4096", "bob    SCRAM-SHA-512  8192"} {
		if !strings.Contains(out, want) {
			t.Fatalf("user list lacks %q:\n%s", want, out)
		}
	}
	mustRun(t, "", "user", "delete", "bob", "--mechanism", "SCRAM-SHA-256", "-b", addr)
	mustRun(t, "", "user", "delete", "alice", "-b", addr)
	out = mustRun(t, "", "user", "list", "-b", addr).stdout
	if strings.Contains(out, "alice") || strings.Contains(out, "SCRAM-SHA-256") || !regexp.MustCompile(`bob +SCRAM-SHA-512 +8192`).MatchString(out) { // columns narrow once alice is gone
		t.Fatalf("after deletes:\n%s", out)
	}
	wantErr(t, "has no SCRAM credentials", "", "user", "delete", "alice", "-b", addr)
}

func TestACLCommands(t *testing.T) {
	addr := startBroker(t)
	requireAPIs(t, addr, int16(kmsg.CreateACLs), int16(kmsg.DescribeACLs), int16(kmsg.DeleteACLs))
	// Without an authorizer the broker refuses ACL management as Kafka
	// does (SECURITY_DISABLED), and the CLI says what to configure.
	for _, args := range [][]string{
		{"acl", "create", "--allow-principal", "User:alice", "--operation", "write", "--topic", "orders"},
		{"acl", "list"},
		{"acl", "delete", "--force"},
	} {
		wantErr(t, "the broker has no authorizer", "", append(args, "-b", addr)...)
	}
	// ACLs are stored only with an authorizer on; with no ACL on the
	// cluster, everyone (here ANONYMOUS) may still manage them.
	addr = exactly.NewTestBroker(t, exactly.Options{Config: map[string]string{
		"authorizer.class.name":          "exactly",
		"allow.everyone.if.no.acl.found": "true",
	}}).Addr()
	b := []string{"-b", addr}
	out := mustRun(t, "", append([]string{"acl", "create", "--allow-principal", "User:alice", "--operation", "write",
		"--operation", "describe", "--topic", "orders"}, b...)...).stdout
	if !strings.Contains(out, "User:alice") || !strings.Contains(out, "WRITE") || !strings.Contains(out, "DESCRIBE") {
		t.Fatalf("create output:\n%s", out)
	}
	mustRun(t, "", append([]string{"acl", "create", "--deny-principal", "User:mallory", "--operation", "all",
		"--topic", "ord", "--resource-pattern-type", "prefixed", "--group", "g"}, b...)...)

	all := mustRun(t, "", append([]string{"acl", "list"}, b...)...).stdout
	if n := strings.Count(all, "\n") - 1; n != 4 {
		t.Fatalf("want 4 ACLs, listed %d:\n%s", n, all)
	}
	// MATCH on the topic name finds the literal and the prefixed ACLs
	// that apply to it, not the group's.
	match := mustRun(t, "", append([]string{"acl", "list", "--topic", "orders", "--resource-pattern-type", "match"}, b...)...).stdout
	if !strings.Contains(match, "User:mallory") || strings.Count(match, "User:alice") != 2 || strings.Contains(match, "GROUP") {
		t.Fatalf("match listing:\n%s", match)
	}
	alice := mustRun(t, "", append([]string{"acl", "list", "--principal", "User:alice"}, b...)...).stdout
	if strings.Contains(alice, "mallory") || strings.Count(alice, "User:alice") != 2 {
		t.Fatalf("principal filter:\n%s", alice)
	}

	r := mustRun(t, "", append([]string{"acl", "delete", "--allow-principal", "User:alice", "--operation", "write", "--topic", "orders"}, b...)...)
	if !strings.Contains(r.stderr, "deleted 1 ACLs") {
		t.Fatalf("delete: %s\n%s", r.stdout, r.stderr)
	}
	mustRun(t, "", append([]string{"acl", "delete", "--force", "--resource-pattern-type", "any"}, b...)...)
	if left := mustRun(t, "", append([]string{"acl", "list"}, b...)...).stdout; strings.Count(left, "\n") != 1 {
		t.Fatalf("ACLs left after deleting all:\n%s", left)
	}
}

// TestSASLSSLContract drives the contract: a broker whose only
// listener is SASL_SSL with a SCRAM admin created at start; the admin
// creates a user and an ACL through admin.properties (librdkafka keys); the
// user then produces through Java keys (JAAS, PEM truststore) and is
// refused what no ACL allows.
func TestSASLSSLContract(t *testing.T) {
	probe := startBroker(t)
	requireAPIs(t, probe, int16(kmsg.SASLHandshake), int16(kmsg.SASLAuthenticate), int16(kmsg.AlterUserSCRAMCredentials),
		int16(kmsg.DescribeUserSCRAMCredentials), int16(kmsg.CreateACLs))
	bin := testenv.ExactlyBinary(t)
	certs := testenv.GenerateCerts(t)
	dir := t.TempDir()
	addr := freeLoopbackAddr(t)
	serverProps := writeTestFile(t, dir, "server.properties", fmt.Sprintf(`listeners=SASL_SSL://%s
ssl.keystore.type=PEM
ssl.keystore.location=%s
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin
`, addr, certs.ServerPEM))
	cmd := exec.Command(bin, "serve", "--data-dir", filepath.Join(dir, "data"), "--config", serverProps,
		"--add-scram", "SCRAM-SHA-512=[name=admin,password=admin-secret]")
	logPath := filepath.Join(dir, "broker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	waitListening(t, addr, logPath)

	admin := writeTestFile(t, dir, "admin.properties", fmt.Sprintf(`bootstrap.servers=%s
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.username=admin
sasl.password=admin-secret
ssl.ca.location=%s
`, addr, certs.CA))
	pw := writeTestFile(t, dir, "pw", "alice-secret\n")
	mustRun(t, "", "user", "create", "alice", "--mechanism", "SCRAM-SHA-512", "--password-file", pw, "--command-config", admin)
	mustRun(t, "", "acl", "create", "--allow-principal", "User:alice", "--operation", "write", "--topic", "orders", "--command-config", admin)
	mustRun(t, "", "topic", "create", "orders", "--command-config", admin)
	if out := mustRun(t, "", "user", "list", "--command-config", admin).stdout; !strings.Contains(out, "alice") {
		t.Fatalf("user list:\n%s", out)
	}

	alice := writeTestFile(t, dir, "alice.properties", fmt.Sprintf(`bootstrap.servers=%s
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" password="alice-secret";
ssl.truststore.type=PEM
ssl.truststore.location=%s
`, addr, certs.CA))
	mustRun(t, "hello\n", "produce", "orders", "--command-config", alice)
	wantErr(t, "TOPIC_AUTHORIZATION_FAILED", "", "consume", "orders", "--command-config", alice, "--from-beginning", "--count", "1", "--timeout", "5s")
	out := mustRun(t, "", "consume", "orders", "--command-config", admin, "--from-beginning", "--count", "1").stdout
	if out != "hello\n" {
		t.Fatalf("admin read %q", out)
	}

	// Flags alone, password from the environment, reach the same broker.
	t.Setenv(clientconf.PasswordEnv, "admin-secret")
	mustRun(t, "", "topic", "list", "-b", addr, "--tls-ca", certs.CA, "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-user", "admin")
	t.Setenv(clientconf.PasswordEnv, "wrong")
	wantErr(t, "SASL_AUTHENTICATION_FAILED", "", "topic", "list", "-b", addr, "--tls-ca", certs.CA, "--sasl-mechanism", "SCRAM-SHA-512",
		"--sasl-user", "admin", "--request-timeout", "5s")
}

// freeLoopbackAddr returns a loopback host:port nothing listens on now.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// waitListening waits until addr accepts connections, failing with the
// broker's log otherwise.
func waitListening(t *testing.T, addr, logPath string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(logPath)
	t.Fatalf("the broker did not listen on %s:\n%s", addr, b)
}
