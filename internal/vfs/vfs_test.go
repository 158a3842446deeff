package vfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// testFS runs the behaviour every FS implementation must share.
func testFS(t *testing.T, fsys FS, root string) {
	dir := filepath.Join(root, "a", "b")
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fsys.MkdirAll(dir, 0o755); err != nil {
		t.Fatal("MkdirAll of an existing dir:", err)
	}
	name := filepath.Join(dir, "f")
	if _, err := fsys.OpenFile(name, os.O_RDONLY, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open missing: %v", err)
	}
	f, err := fsys.OpenFile(name, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on existing file: %v", err)
	}
	for _, s := range []string{"hello ", "world"} {
		if n, err := f.Write([]byte(s)); err != nil || n != len(s) {
			t.Fatal(n, err)
		}
	}
	if sz, err := f.Size(); err != nil || sz != 11 {
		t.Fatal(sz, err)
	}
	buf := make([]byte, 5)
	if n, err := f.ReadAt(buf, 6); err != nil || string(buf[:n]) != "world" {
		t.Fatal(n, err, string(buf))
	}
	if n, err := f.ReadAt(buf, 8); err != io.EOF || string(buf[:n]) != "rld" {
		t.Fatal(n, err)
	}
	if err := f.Truncate(5); err != nil {
		t.Fatal(err)
	}
	// O_APPEND writes go to the new end.
	if _, err := f.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	all := make([]byte, 6)
	if _, err := f.ReadAt(all, 0); err != nil || string(all) != "hello!" {
		t.Fatal(string(all), err)
	}
	if f.Name() != name {
		t.Fatal(f.Name())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("write after close succeeded")
	}

	// Non-append handles write at their own offset; O_TRUNC empties.
	g, err := fsys.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	g.Write([]byte("J"))
	g.ReadAt(all, 0)
	if string(all) != "Jello!" {
		t.Fatal(string(all))
	}
	g.Close()
	g, err = fsys.OpenFile(name, os.O_RDWR|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if sz, _ := g.Size(); sz != 0 {
		t.Fatal("O_TRUNC left", sz)
	}
	g.Close()

	fi, err := fsys.Stat(name)
	if err != nil || fi.IsDir() || fi.Name() != "f" {
		t.Fatal(fi, err)
	}
	if fi, err := fsys.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatal(fi, err)
	}
	if _, err := fsys.Stat(filepath.Join(dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}

	// Rename replaces, ReadDir sorts.
	for _, n := range []string{"z", "c", "m"} {
		h, err := fsys.OpenFile(filepath.Join(dir, n), os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(n))
		h.Close()
	}
	if err := fsys.Rename(filepath.Join(dir, "z"), filepath.Join(dir, "c")); err != nil {
		t.Fatal(err)
	}
	names, err := fsys.ReadDir(dir)
	if err != nil || !slices.Equal(names, []string{"c", "f", "m"}) {
		t.Fatal(names, err)
	}
	h, _ := fsys.OpenFile(filepath.Join(dir, "c"), os.O_RDONLY, 0)
	b := make([]byte, 1)
	h.ReadAt(b, 0)
	h.Close()
	if string(b) != "z" {
		t.Fatal("rename did not replace:", string(b))
	}
	if err := fsys.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Remove(filepath.Join(root, "a")); err == nil {
		t.Fatal("removed a non-empty dir")
	}
	if err := fsys.Remove(filepath.Join(dir, "m")); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Remove(filepath.Join(dir, "m")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if err := fsys.RemoveAll(filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	if err := fsys.RemoveAll(filepath.Join(root, "a")); err != nil {
		t.Fatal("RemoveAll of missing path:", err)
	}
	if _, err := fsys.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

func TestOS(t *testing.T) { testFS(t, OS(), t.TempDir()) }

func TestMem(t *testing.T) { testFS(t, NewMem(), "/data") }

func TestFaultyPassThrough(t *testing.T) { testFS(t, NewFaulty(NewMem()), "/data") }

func TestMemUnlinkedHandle(t *testing.T) {
	m := NewMem()
	f, _ := m.OpenFile("/x", os.O_CREATE|os.O_RDWR, 0o644)
	f.Write([]byte("abc"))
	if err := m.Remove("/x"); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	if _, err := f.ReadAt(b, 0); err != nil || !bytes.Equal(b, []byte("abc")) {
		t.Fatal("unlinked handle unreadable", err)
	}
}
