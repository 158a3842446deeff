package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"testing"
)

// PostgresDSN is the PostgreSQL the tests use: EXACTLY_TEST_POSTGRES, or
// the local server that ./test.sh prepares.
func PostgresDSN() string {
	if v := os.Getenv("EXACTLY_TEST_POSTGRES"); v != "" {
		return v
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// PostgresHint ends the failure message of a test that could not reach
// PostgreSQL: how to provide one.
const PostgresHint = "PostgreSQL is needed: run ./test.sh (it starts and prepares the local server) or set EXACTLY_TEST_POSTGRES to a DSN"

// RedisAddr is the Redis the tests use: EXACTLY_TEST_REDIS, or the local
// server.
func RedisAddr() string {
	if v := os.Getenv("EXACTLY_TEST_REDIS"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

// RedisHint ends the failure message of a test that could not reach Redis.
const RedisHint = "Redis is needed: run ./test.sh (it starts the local server) or set EXACTLY_TEST_REDIS to host:port"

// RandName is prefix plus 12 random hex digits: a schema, table or topic
// name no other test run uses.
func RandName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// RequireTool is the one policy for an external program a test drives
// (kcat, Debian's python3 with kafka-python): with -short the test skips
// and says so; otherwise a missing program fails the test with how to
// install it, because a skip would hide that the suite did not run.
func RequireTool(t testing.TB, path, install string) {
	t.Helper()
	if _, err := exec.LookPath(path); err != nil {
		MissingTool(t, path+" is not installed", install)
	}
}

// MissingTool applies RequireTool's policy to a tool found missing some
// other way (a Python module that does not import): what says what is
// missing, install how to get it.
func MissingTool(t testing.TB, what, install string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s; skipped with -short (%s, or run ./test.sh)", what, install)
	}
	t.Fatalf("%s: %s, or run ./test.sh, which installs it", what, install)
}

// SkipShort skips a slow or external suite (a subprocess broker, an
// external client) under -short, saying what was skipped: the quick run
// says what it did not run.
func SkipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s: skipped with -short (./test.sh runs it)", what)
	}
}
