package vfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// testLock: a held lock refuses a second holder, with an error naming the
// file and this process; closing it lets the next one in.
func testLock(t *testing.T, fsys FS, dir string) {
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, ".lock")
	first, err := fsys.Lock(name)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fsys.Lock(name)
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.Path != name || le.PID != os.Getpid() {
		t.Fatalf("second Lock: %v, want ErrLocked naming %s and pid %d", err, name, os.Getpid())
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := fsys.Lock(name)
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	again.Close()
}

func TestLockOS(t *testing.T)     { testLock(t, OS(), t.TempDir()) }
func TestLockMem(t *testing.T)    { testLock(t, NewMem(), "/data") }
func TestLockFaulty(t *testing.T) { testLock(t, NewFaulty(NewMem()), "/data") }

// A crash is every process dying: the crashed filesystem holds no locks.
func TestCrashReleasesLocks(t *testing.T) {
	m := NewMem()
	if _, err := m.Lock("/.lock"); err != nil {
		t.Fatal(err)
	}
	l, err := m.Crash(nil).Lock("/.lock")
	if err != nil {
		t.Fatalf("lock survived a crash: %v", err)
	}
	l.Close()
}
