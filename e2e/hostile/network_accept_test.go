package hostile

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// attackFileLimit opens more connections at once than a broker with a
// small file limit has descriptors for (its accepts fail with EMFILE),
// asks for ApiVersions on each and waits a second for answers (those
// beyond the limit get none: they wait in the listen backlog), then closes
// them all.
func attackFileLimit(t *testing.T, tg target) {
	t.Helper()
	conns := make([]*testenv.RawConn, 0, 80)
	for range 80 {
		c := tg.dial(t)
		c.Send(testenv.Frame(kmsg.NewPtrApiVersionsRequest(), 3, 1))
		conns = append(conns, c)
	}
	deadline := time.Now().Add(time.Second)
	for _, c := range conns {
		c.NC.SetReadDeadline(deadline)
		c.NC.Read(make([]byte, 1))
		c.NC.Close()
	}
}

// TestAcceptSurvivesFileLimit: a broker that ran out of file descriptors
// (accept fails with EMFILE, which is not a timeout) keeps accepting once
// descriptors are free again, instead of leaving a live process that never
// accepts. The broker runs as its own process under `ulimit -n 64`.
func TestAcceptSurvivesFileLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the broker binary")
	}
	bin := testenv.ExactlyBinary(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(t.TempDir(), "broker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("bash", "-c", `ulimit -n 64 && exec "$0" serve --data-dir "$1" --listen "$2" --log-level warn`,
		bin, t.TempDir(), addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if out, _ := os.ReadFile(logPath); t.Failed() {
			t.Logf("broker log:\n%s", out)
		}
	})
	eventually(t, 30*time.Second, "broker accepting connections", func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	attackFileLimit(t, plaintext(addr))

	if cmd.ProcessState != nil {
		t.Fatalf("broker exited: %v", cmd.ProcessState)
	}
	canary(t, plaintext(addr), 20)
}
