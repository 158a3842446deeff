// Package managed runs `exactly serve` as a child process for the tools that
// need a broker of their own (verify, bench; bench also starts `exactly
// kfake`, which takes the same flags, through it): a real process on a real
// data directory, which can be killed with SIGKILL and started again on the
// same data, and which shares no Go runtime (heap, garbage collector,
// scheduler) with the client being measured.
package managed

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/exactly/exactly/internal/freeport"
)

// Broker is an `exactly serve` process started by this one.
type Broker struct {
	argv   []string
	env    []string
	config []string
	addr   string
	// protocol, if set, is the security protocol of the broker's one
	// listener (then given as `listeners`, not --listen).
	protocol string
	// listeners, if set, is the whole `listeners` value (a cluster node's
	// client and controller listeners); addr is its client listener.
	listeners string
	dataDir   string
	logPath   string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs argv (the serve command: the exactly binary and "serve") with
// data under dir/broker and its output in dir/logs/broker.log, listening on
// a free loopback port, with each of config ("key=value") passed as --set.
// It returns once the broker accepts connections.
func Start(argv, env []string, dir string, config []string) (*Broker, error) {
	return StartListener(argv, env, dir, "", config)
}

// StartListener is Start with the broker's one listener of the given
// security protocol (SSL, SASL_SSL, ...; empty: PLAINTEXT through
// --listen) on the free address; config must hold what the protocol
// needs (ssl.keystore.location, sasl.enabled.mechanisms, ...). The broker
// counts as started once the address accepts TCP connections.
func StartListener(argv, env []string, dir, protocol string, config []string) (*Broker, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("no serve command to start a broker with")
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	b := &Broker{argv: argv, env: env, config: config, addr: addr, protocol: protocol,
		dataDir: filepath.Join(dir, "broker"), logPath: filepath.Join(dir, "logs", "broker.log")}
	for _, d := range []string{b.dataDir, filepath.Dir(b.logPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return b, b.Restart()
}

// Addr is the broker's listen address (host:port).
func (b *Broker) Addr() string { return b.addr }

// PID is the running broker process's id (0 before the first start), for
// tests that read its resource use from /proc.
func (b *Broker) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil || b.cmd.Process == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// LogPath is the file the broker's output goes to.
func (b *Broker) LogPath() string { return b.logPath }

// Restart starts the broker again on the same data directory and address if
// it is not running, and waits until it accepts connections.
func (b *Broker) Restart() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	running, err := b.startLocked()
	if err != nil || running {
		return err
	}
	return b.awaitLocked()
}

// startLocked starts the process unless it runs (true); b.mu is held.
func (b *Broker) startLocked() (bool, error) {
	if b.cmd != nil {
		select {
		case <-b.done:
		default:
			return true, nil
		}
	}
	logf, err := os.OpenFile(b.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	args := append(append([]string(nil), b.argv[1:]...), "--data-dir", b.dataDir, "--log-level", "warn")
	switch {
	case b.listeners != "":
		args = append(args, "--set", "listeners="+b.listeners)
	case b.protocol != "":
		args = append(args, "--set", "listeners="+b.protocol+"://"+b.addr)
	default:
		args = append(args, "--listen", b.addr)
	}
	for _, kv := range b.config {
		args = append(args, "--set", kv)
	}
	cmd := exec.Command(b.argv[0], args...)
	cmd.Env = append(os.Environ(), b.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	SetDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return false, fmt.Errorf("starting the broker: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	b.cmd, b.done = cmd, done
	return false, nil
}

// awaitLocked waits until the started process accepts connections; b.mu
// is held.
func (b *Broker) awaitLocked() error {
	cmd, done := b.cmd, b.done
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
	<-done
	return fmt.Errorf("the broker did not listen on %s within 30s", b.addr)
}

// Kill SIGKILLs the broker and waits for it to die.
func (b *Broker) Kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	b.cmd.Process.Signal(syscall.SIGKILL)
	<-b.done
}

// Pause stops (SIGSTOP) or resumes (SIGCONT) the broker process: it holds
// its connections open without answering, as a long pause would.
func (b *Broker) Pause(stop bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	b.cmd.Process.Signal(sig)
}

// Stop shuts the broker down cleanly (SIGTERM), killing it after grace.
func (b *Broker) Stop(grace time.Duration) {
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

// freeAddr is a loopback address for a broker about to start (see
// package freeport).
func freeAddr() (string, error) { return freeport.Addr() }
