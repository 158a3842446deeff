package verify

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// instance is one running worker process.
type instance struct {
	proc   string
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	done   chan struct{}
	err    error
	status atomic.Pointer[WorkerStatus]
	mu     sync.Mutex
	paused bool
	killed bool
}

// startInstance runs argv (a worker command plus its --spec) with stdout
// parsed as status lines and stderr appended to logPath.
func startInstance(argv, env []string, spec WorkerSpec, logPath string) (*instance, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args := append(append([]string(nil), argv[1:]...), "--spec", string(b))
	cmd := exec.Command(argv[0], args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	setDeathSignal(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", argv[0], err)
	}
	in := &instance{proc: spec.Proc, role: spec.Role, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var st WorkerStatus
			if json.Unmarshal(sc.Bytes(), &st) == nil {
				in.status.Store(&st)
			}
		}
	}()
	go func() {
		wg.Wait()
		in.err = cmd.Wait()
		logf.Close()
		close(in.done)
	}()
	return in, nil
}

func (in *instance) alive() bool {
	select {
	case <-in.done:
		return false
	default:
		return true
	}
}

// send writes one control line; errors (a dead process) are ignored.
func (in *instance) send(line string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	io.WriteString(in.stdin, line+"\n")
}

func (in *instance) signal(sig syscall.Signal) {
	if in.alive() {
		in.cmd.Process.Signal(sig)
	}
}

func (in *instance) kill() {
	in.mu.Lock()
	in.killed = true
	in.mu.Unlock()
	in.signal(syscall.SIGCONT)
	in.signal(syscall.SIGKILL)
}

func (in *instance) pause(p bool) {
	in.mu.Lock()
	in.paused = p
	in.mu.Unlock()
	if p {
		in.signal(syscall.SIGSTOP)
	} else {
		in.signal(syscall.SIGCONT)
	}
}

// wait waits for the process to end, up to d; false if it is still running.
func (in *instance) wait(d time.Duration) bool {
	select {
	case <-in.done:
		return true
	case <-time.After(d):
		return false
	}
}

// cleanExit says whether the process ended with status 0.
func (in *instance) cleanExit() bool {
	return !in.alive() && in.err == nil
}

// managedBroker is an `exactly serve` process verify started itself.
type managedBroker struct {
	argv    []string
	env     []string
	addr    string
	dataDir string
	logPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// managedConfig are the broker settings a managed run uses: rebalances
// without the initial delay, so a 30 second run is not mostly waiting, and
// KIP-848 sessions (the broker's to set, not the client's) as short as the
// classic workers ask for, so a killed member's partitions move on within
// the run instead of after Kafka's 45 s default.
var managedConfig = []string{
	"group.initial.rebalance.delay.ms=0",
	"group.consumer.session.timeout.ms=6000",
	"group.consumer.heartbeat.interval.ms=1000",
}

func newManagedBroker(argv, env []string, dir string) (*managedBroker, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	b := &managedBroker{argv: argv, env: env, addr: addr, dataDir: filepath.Join(dir, "broker"), logPath: filepath.Join(dir, "logs", "broker.log")}
	if err := os.MkdirAll(b.dataDir, 0o755); err != nil {
		return nil, err
	}
	return b, b.start()
}

// start runs the broker and waits until it accepts connections.
func (b *managedBroker) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		select {
		case <-b.done:
		default:
			return nil // running
		}
	}
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append(append([]string(nil), b.argv[1:]...), "--data-dir", b.dataDir, "--listen", b.addr, "--log-level", "warn")
	for _, kv := range managedConfig {
		args = append(args, "--set", kv)
	}
	cmd := exec.Command(b.argv[0], args...)
	cmd.Env = append(os.Environ(), b.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting the broker: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	b.cmd, b.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			out, _ := os.ReadFile(b.logPath)
			return fmt.Errorf("the broker exited at start:\n%s", out)
		default:
		}
		c, err := net.DialTimeout("tcp", b.addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	cmd.Process.Kill()
	return fmt.Errorf("the broker did not listen on %s within 30s", b.addr)
}

// kill SIGKILLs the broker and waits for it to die.
func (b *managedBroker) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.done
}

// stop shuts the broker down cleanly (SIGTERM), killing it after grace.
func (b *managedBroker) stop(grace time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(grace):
		b.cmd.Process.Signal(syscall.SIGKILL)
		<-b.done
	}
}
