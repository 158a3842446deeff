package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// ExactlyBinary builds cmd/exactly once per test binary and returns its
// path, for tests that run the broker as a process (to SIGKILL it, limit
// its file descriptors or measure its memory). -short skips such tests.
func ExactlyBinary(t testing.TB) string {
	t.Helper()
	SkipShort(t, "subprocess test of the exactly binary")
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "exactly-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "exactly")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/exactly/exactly/cmd/exactly").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}
