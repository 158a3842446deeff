package verify

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/exactly/exactly/internal/managed"
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
	managed.SetDeathSignal(cmd)
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
