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
// file in librdkafka's keys that connects as that user.
func securedServe(t *testing.T) (addr, clientProps string) {
	t.Helper()
	certs := testenv.NewTLSCerts(t)
	dir := t.TempDir()
	addr = freePort(t)
	server := filepath.Join(dir, "server.properties")
	writeLines(t, server,
		"listeners=SASL_SSL://"+addr,
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
	addr, props := securedServe(t)
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
// asked for and prints its table.
func TestBenchOverSASLSSL(t *testing.T) {
	addr, props := securedServe(t)
	cmd := exec.Command(exactlyBinary(t), "bench", "-q", "--bootstrap", "secured="+addr, "--command-config", props,
		"--modes", "idempotent,transactional,read-committed",
		"--duration", "500ms", "--rounds", "1", "--consume-mib", "2", "--max-buffered-records", "4096")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
	}
	table := stdout.String()
	for _, mode := range []string{"idempotent", "transactional", "read-committed"} {
		if !tableRowHas(table, "secured", mode) {
			t.Errorf("no row for secured/%s in\n%s", mode, table)
		}
	}
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
