package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/testenv"
)

// securedServe runs `exactly serve` the way the security contract does: a
// server.properties whose only listener is SASL_SSL (PEM keystore,
// SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN enabled) and the first user from
// --add-scram. It returns the listener's address and a client properties
// file in librdkafka's keys that connects as that user. With plaintext
// non-empty, a PLAINTEXT listener on that address is added.
func securedServe(t *testing.T, plaintext string) (addr, clientProps string) {
	t.Helper()
	certs := testenv.NewTLSCerts(t)
	dir := t.TempDir()
	addr = freePort(t)
	listeners := "listeners=SASL_SSL://" + addr
	if plaintext != "" {
		listeners += ",PLAINTEXT://" + plaintext
	}
	server := filepath.Join(dir, "server.properties")
	writeLines(t, server,
		listeners,
		"ssl.keystore.type=PEM",
		"ssl.keystore.location="+certs.ServerFile,
		"sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN",
		"group.initial.rebalance.delay.ms=0",
	)
	startServe(t, addr, "--data-dir", t.TempDir(), "--config", server, "--log-level", "warn",
		"--add-scram", "SCRAM-SHA-512=[name=admin,password=admin-secret]")
	clientProps = filepath.Join(dir, "admin.properties")
	writeLines(t, clientProps,
		"bootstrap.servers="+addr,
		"security.protocol=SASL_SSL",
		"sasl.mechanism=SCRAM-SHA-512",
		"sasl.username=admin",
		"sasl.password=admin-secret",
		"ssl.ca.location="+certs.CAFile,
	)
	return addr, clientProps
}

// writeLines writes lines to path, one per line.
func writeLines(t *testing.T, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// `exactly verify --mode exactly-once` against a broker whose only
// listener is SASL_SSL: the fault proxy dials the broker with TLS itself,
// the workers authenticate with SCRAM-SHA-512 through it, and the guarantee
// holds under the faults an external cluster allows.
func TestVerifyExactlyOnceOverSASLSSL(t *testing.T) {
	addr, props := securedServe(t, "")
	out, code, stderr, _ := runVerifyOn(t, "--bootstrap="+addr, "--command-config", props,
		"--mode", "exactly-once", "--faults", "all", "--duration", "8s", "--seed", "7")
	if code != 0 || !out.OK {
		t.Fatalf("exit %d: %+v\n%s", code, out, stderr)
	}
	for name, n := range map[string]int{"lost": out.Lost, "duplicates": out.Duplicates, "aborted_reads": out.AbortedReads,
		"order_violations": out.OrderViolations, "inconsistent_offsets": out.InconsistentOffsets} {
		if n != 0 {
			t.Errorf("%s = %d", name, n)
		}
	}
	if out.Acked < 100 || out.Consumed < out.Acked || out.FaultsInjected == 0 {
		t.Fatalf("the run did too little to mean anything: %+v", out)
	}
	t.Logf("acked %d, consumed %d, %d faults injected", out.Acked, out.Consumed, out.FaultsInjected)
}

// `exactly bench` against the SASL_SSL-only broker measures every mode
// asked for and prints its table. The --command-config here also names
// bootstrap.servers, pointing where nothing listens: the --bootstrap
// target is what is measured, as the connection flags promise (the file's
// seeds used to replace the target's).
func TestBenchOverSASLSSL(t *testing.T) {
	addr, props := securedServe(t, "")
	elsewhere := filepath.Join(t.TempDir(), "elsewhere.properties")
	copyWithBootstrap(t, props, elsewhere, freePort(t))
	table := runBenchTable(t, "--bootstrap", "secured="+addr, "--command-config", elsewhere,
		"--modes", "idempotent,transactional,read-committed")
	for _, mode := range []string{"idempotent", "transactional", "read-committed"} {
		if !tableRowHas(table, "secured", mode) {
			t.Errorf("no row for secured/%s in\n%s", mode, table)
		}
	}
}

// `exactly bench` measures a PLAINTEXT and a SASL_SSL listener of one
// broker side by side: --target-config gives the SASL_SSL target its own
// client properties while the PLAINTEXT target connects without any.
func TestBenchPlaintextBesideSASLSSL(t *testing.T) {
	plain := freePort(t)
	addr, props := securedServe(t, plain)
	table := runBenchTable(t, "--bootstrap", "plaintext="+plain, "--bootstrap", "sasl_ssl="+addr,
		"--target-config", "sasl_ssl="+props, "--modes", "idempotent,read-uncommitted")
	for _, target := range []string{"plaintext", "sasl_ssl"} {
		for _, mode := range []string{"idempotent", "read-uncommitted"} {
			if !tableRowHas(table, target, mode) {
				t.Errorf("no row for %s/%s in\n%s", target, mode, table)
			}
		}
	}
	cmd := exec.Command(exactlyBinary(t), "bench", "--bootstrap", "plaintext="+plain, "--target-config", "other="+props)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "no --bootstrap target has that name") {
		t.Fatalf("--target-config naming no target: %v\n%s", err, out)
	}
}

// runBenchTable runs a short quiet `exactly bench` with args and returns
// its text table; a failed run fails the test.
func runBenchTable(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(exactlyBinary(t), append([]string{"bench", "-q", "--duration", "500ms", "--rounds", "1",
		"--consume-mib", "2", "--max-buffered-records", "4096"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.String()
}

// copyWithBootstrap copies the properties file src to dst with
// bootstrap.servers replaced by addr.
func copyWithBootstrap(t *testing.T, src, dst, addr string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if strings.HasPrefix(l, "bootstrap.servers=") {
			l = "bootstrap.servers=" + addr
		}
		lines = append(lines, l)
	}
	writeLines(t, dst, lines...)
}

// tableRowHas reports whether bench's text table has a measured row for
// target and mode: a positive MB/s in the column after the mode.
func tableRowHas(table, target, mode string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != target || f[1] != mode {
			continue
		}
		var mbps float64
		if _, err := fmt.Sscanf(f[2], "%g", &mbps); err == nil && mbps > 0 {
			return true
		}
	}
	return false
}
