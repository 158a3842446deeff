package verify

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the child die with its parent, so a killed verify
// leaves no workers or brokers behind.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
