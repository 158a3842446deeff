package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/exactly/exactly/internal/testenv"
)

// exactlyBinary builds cmd/exactly once per test run.
func exactlyBinary(t *testing.T) string {
	t.Helper()
	return testenv.ExactlyBinary(t)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proc is a broker subprocess.
type proc struct {
	cmd  *exec.Cmd
	addr string
	log  *os.File
}

// startBroker runs `exactly serve` on addr with dataDir and waits until it
// accepts connections.
func startBroker(t *testing.T, dataDir, addr string, extra ...string) *proc {
	t.Helper()
	return startServe(t, addr, append([]string{"--data-dir", dataDir, "--listen", addr, "--log-level", "warn"}, extra...)...)
}

// startServe runs `exactly serve` with args and waits until addr accepts
// TCP connections (a TLS listener too: only the socket is probed).
func startServe(t *testing.T, addr string, args ...string) *proc {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(t.TempDir(), "broker.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exactlyBinary(t), append([]string{"serve"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addr: addr, log: logf}
	t.Cleanup(func() { p.kill(); logf.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, _ := os.ReadFile(logf.Name())
	t.Fatalf("broker did not start on %s:\n%s", addr, out)
	return nil
}

// kill sends SIGKILL and reaps the process.
func (p *proc) kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("broker exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		p.kill()
		t.Fatal("broker did not exit within 30s of SIGTERM")
	}
}
