package vfs

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand"
	"os"
	"testing"
)

func readAll(t *testing.T, fsys FS, name string) []byte {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sz, _ := f.Size()
	b := make([]byte, sz)
	if sz > 0 {
		if _, err := f.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func exists(fsys FS, name string) bool {
	_, err := fsys.Stat(name)
	return err == nil
}

func TestCrashKeepsOnlyDurable(t *testing.T) {
	m := NewMem()
	m.MkdirAll("/d", 0o755)
	m.SyncDir("/")
	f, _ := m.OpenFile("/d/f", os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	f.Write([]byte("synced"))
	f.Sync()

	// The file's entry is not durable yet: a crash loses it.
	if c := m.Crash(nil); exists(c, "/d/f") {
		t.Fatal("file survived without SyncDir")
	}
	if c := m.Crash(nil); !exists(c, "/d") {
		t.Fatal("synced directory entry lost")
	}
	m.SyncDir("/d")
	f.Write([]byte(" lost"))
	c := m.Crash(nil)
	if got := readAll(t, c, "/d/f"); string(got) != "synced" {
		t.Fatalf("crash kept %q", got)
	}
	// The original keeps its unsynced state.
	if got := readAll(t, m, "/d/f"); string(got) != "synced lost" {
		t.Fatalf("original changed: %q", got)
	}

	// Truncation without Sync is undone by a crash.
	f.Truncate(2)
	if got := readAll(t, m.Crash(nil), "/d/f"); string(got) != "synced" {
		t.Fatalf("unsynced truncate survived: %q", got)
	}
	f.Write([]byte("XY"))
	f.Sync()
	if got := readAll(t, m.Crash(nil), "/d/f"); string(got) != "syXY" {
		t.Fatalf("got %q", got)
	}

	// Removals and renames need SyncDir too.
	m.Rename("/d/f", "/d/g")
	c = m.Crash(nil)
	if !exists(c, "/d/f") || exists(c, "/d/g") {
		t.Fatal("unsynced rename survived")
	}
	m.SyncDir("/d")
	c = m.Crash(nil)
	if exists(c, "/d/f") || !exists(c, "/d/g") {
		t.Fatal("synced rename lost")
	}
	m.Remove("/d/g")
	if !exists(m.Crash(nil), "/d/g") {
		t.Fatal("unsynced remove survived")
	}
	// A crashed FS is usable and its contents are durable.
	c = m.Crash(nil)
	g, err := c.OpenFile("/d/g", os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("!"))
	if got := readAll(t, c.Crash(nil), "/d/g"); string(got) != "syXY" {
		t.Fatalf("got %q", got)
	}
}

func TestCrashTornWrites(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	sawPartial, sawZero := false, false
	for i := 0; i < 500; i++ {
		m := NewMem()
		f, _ := m.OpenFile("/f", os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
		m.SyncDir("/")
		f.Write([]byte("base"))
		f.Sync()
		tail := []byte("0123456789")
		f.Write(tail)
		got := readAll(t, m.Crash(rng), "/f")
		if !bytes.HasPrefix(got, []byte("base")) || len(got) > 14 {
			t.Fatalf("torn crash gave %q", got)
		}
		rest := got[4:]
		for j, b := range rest {
			if b != tail[j] && b != 0 {
				t.Fatalf("garbage in torn tail: %q", got)
			}
			if b == 0 {
				sawZero = true
			}
		}
		if len(rest) > 0 && len(rest) < len(tail) {
			sawPartial = true
		}
	}
	if !sawPartial || !sawZero {
		t.Fatal("rng never produced a partial or zeroed tail", sawPartial, sawZero)
	}
}

func TestCrashDirOpsPrefix(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for i := 0; i < 200; i++ {
		m := NewMem()
		for _, n := range []string{"/a", "/b", "/c"} {
			f, _ := m.OpenFile(n, os.O_CREATE|os.O_WRONLY, 0o644)
			f.Close()
		}
		c := m.Crash(rng)
		// In-order prefix: c implies b implies a.
		a, b, cc := exists(c, "/a"), exists(c, "/b"), exists(c, "/c")
		if (cc && !b) || (b && !a) {
			t.Fatal("directory operations survived out of order", a, b, cc)
		}
	}
}

func TestMemErrors(t *testing.T) {
	m := NewMem()
	if _, err := m.OpenFile("/nodir/f", os.O_CREATE|os.O_RDWR, 0o644); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	f, _ := m.OpenFile("/f", os.O_CREATE|os.O_RDONLY, 0o644)
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("write on read-only handle")
	}
	if err := m.MkdirAll("/f/g", 0o755); err == nil {
		t.Fatal("mkdir below a file")
	}
	if _, err := m.ReadDir("/f"); err == nil {
		t.Fatal("readdir of a file")
	}
	if err := m.SyncDir("/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if err := m.Rename("/missing", "/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}
