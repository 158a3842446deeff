package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	return testenv.FreeAddr(t)
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

var (
	examplesMu    sync.Mutex
	examplesBuilt = map[string]string{}
)

// exampleBinary builds examples/<name> once per test run and returns its
// path.
func exampleBinary(t *testing.T, name string) string {
	t.Helper()
	testenv.SkipShort(t, "subprocess test of an example")
	examplesMu.Lock()
	defer examplesMu.Unlock()
	if path, ok := examplesBuilt[name]; ok {
		return path
	}
	dir, err := os.MkdirTemp("", "exactly-e2e-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	out, err := exec.Command("go", "build", "-o", path, "github.com/exactly/exactly/examples/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build examples/%s: %v\n%s", name, err, out)
	}
	examplesBuilt[name] = path
	return path
}

// childProc is a subprocess that a test kills and restarts (a relay, a
// consumer), logging to a file; done closes once it exited, with err set.
type childProc struct {
	cmd     *exec.Cmd
	logPath string
	// logFrom is the log's size when this process started: what it
	// wrote comes after.
	logFrom int
	done    chan struct{}
	err     error
}

// startChild runs bin with args, appending its output to logPath. The
// process is SIGKILLed at the end of the test if still running.
func startChild(t *testing.T, logPath, bin string, args ...string) *childProc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	from, err := logf.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	p := &childProc{cmd: cmd, logPath: logPath, logFrom: int(from), done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(p.kill)
	return p
}

// kill sends SIGKILL and waits for the process to exit.
func (p *childProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// exited reports whether the process has ended.
func (p *childProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// logWait waits until the log at path contains want after offset from,
// failing if proc exits or a minute passes.
func logWait(t *testing.T, path string, from int, want string, proc *childProc) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		b, _ := os.ReadFile(path)
		if len(b) >= from && strings.Contains(string(b[from:]), want) {
			return
		}
		select {
		case <-proc.done:
			t.Fatalf("process exited (%v) before logging %q:\n%s", proc.err, want, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("process did not log %q within a minute:\n%s", want, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stopChild sends SIGTERM and waits up to 30s for a clean exit.
func stopChild(t *testing.T, p *childProc, what string) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("%s exited with %v after SIGTERM:\n%s", what, p.err, tailFile(p.logPath))
		}
	case <-time.After(30 * time.Second):
		p.kill()
		t.Fatalf("%s did not stop within 30s of SIGTERM:\n%s", what, tailFile(p.logPath))
	}
}

// readFile returns a log file's contents ("" if it cannot be read).
func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// tailFile returns the last 4000 bytes of a log file.
func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// clusterNode is one node of a test cluster: its client and controller
// addresses, its data directory and the `exactly serve` arguments that
// restart it on the same data.
type clusterNode struct {
	id   int32
	addr string
	dir  string
	args []string
	// p is the running process (the last one started).
	p *proc
	// logs are the log files of every process started for this node, in
	// order: each start logs to a file of its own.
	logs []string
}

// startClusterNode starts node n (again) from its data directory and
// waits until its client listener accepts connections.
func startClusterNode(t *testing.T, n *clusterNode) {
	t.Helper()
	n.p = startServe(t, n.addr, n.args...)
	n.logs = append(n.logs, n.p.log.Name())
}

// startCluster starts three nodes of one cluster, each broker and
// controller, on free ports with a data directory each; sets are extra
// `--set key=value` arguments for every node. The nodes start in turn
// without waiting for each other: a node's listener is open before its
// quorum has a leader.
func startCluster(t *testing.T, sets ...string) []*clusterNode {
	t.Helper()
	nodes := make([]*clusterNode, 3)
	ctrl := make([]string, len(nodes))
	var voters []string
	for i := range nodes {
		nodes[i] = &clusterNode{id: int32(i + 1), addr: freePort(t), dir: t.TempDir()}
		ctrl[i] = freePort(t)
		voters = append(voters, fmt.Sprintf("%d@%s", i+1, ctrl[i]))
	}
	for i, n := range nodes {
		n.args = []string{"--data-dir", n.dir, "--log-level", "info",
			"--set", fmt.Sprintf("node.id=%d", n.id),
			"--set", fmt.Sprintf("listeners=PLAINTEXT://%s,CONTROLLER://%s", n.addr, ctrl[i]),
			"--set", "controller.listener.names=CONTROLLER",
			"--set", "controller.quorum.voters=" + strings.Join(voters, ",")}
		for _, s := range sets {
			n.args = append(n.args, "--set", s)
		}
	}
	for _, n := range nodes {
		startClusterNode(t, n)
	}
	return nodes
}
