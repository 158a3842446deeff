//go:build !linux

package managed

import "os/exec"

// SetDeathSignal is a no-op where the kernel has no parent-death signal.
func SetDeathSignal(cmd *exec.Cmd) {}
