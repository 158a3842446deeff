package managed

import (
	"os/exec"
	"syscall"
)

// SetDeathSignal makes the child die with its parent, so a killed verify or
// bench leaves no workers or brokers behind.
func SetDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
