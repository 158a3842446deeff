package vfs

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestFaultyFailAfter(t *testing.T) {
	m := NewMem()
	ff := NewFaulty(m)
	boom := errors.New("boom")
	ff.FailAfter(OpSync, 2, boom)
	f, err := ff.OpenFile("/f", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := f.Sync(); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
	}
	for i := 0; i < 3; i++ {
		if err := f.Sync(); !errors.Is(err, boom) {
			t.Fatalf("sync after fault: %v", err)
		}
	}
	if got := ff.Count(OpSync); got != 5 {
		t.Fatal("count", got)
	}
	ff.Clear()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestFaultyOnceAndPath(t *testing.T) {
	ff := NewFaulty(NewMem())
	ff.FailOnce(OpOpenFile, 1, nil)
	ff.FailPath(OpRename, func(n string) bool { return strings.HasSuffix(n, ".index") }, nil)
	if _, err := ff.OpenFile("/a", os.O_CREATE|os.O_RDWR, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ff.OpenFile("/b", os.O_CREATE|os.O_RDWR, 0o644); !errors.Is(err, ErrInjected) {
		t.Fatal(err)
	}
	if _, err := ff.OpenFile("/b", os.O_CREATE|os.O_RDWR, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ff.Rename("/a", "/a.index"); !errors.Is(err, ErrInjected) {
		t.Fatal(err)
	}
	if err := ff.Rename("/a", "/c"); err != nil {
		t.Fatal(err)
	}
}

func TestFaultyShortWrite(t *testing.T) {
	m := NewMem()
	ff := NewFaulty(m)
	ff.Inject(Fault{Op: OpWrite, Skip: 1, Times: 1, ShortWrite: true})
	f, _ := ff.OpenFile("/f", os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o644)
	if _, err := f.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	n, err := f.Write([]byte("12345678"))
	if n != 4 || !errors.Is(err, ErrInjected) {
		t.Fatal(n, err)
	}
	if _, err := f.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, m, "/f"); string(got) != "ok1234!" {
		t.Fatalf("%q", got)
	}
}

func TestFaultyHook(t *testing.T) {
	m := NewMem()
	ff := NewFaulty(m)
	var ops []string
	ff.SetHook(func(op Op, name string) error {
		ops = append(ops, op.String()+" "+name)
		if op == OpSyncDir {
			return ErrInjected
		}
		return nil
	})
	f, _ := ff.OpenFile("/f", os.O_CREATE|os.O_RDWR, 0o644)
	f.Write([]byte("x"))
	if err := ff.SyncDir("/"); !errors.Is(err, ErrInjected) {
		t.Fatal(err)
	}
	want := "OpenFile /f,Write /f,SyncDir /"
	if got := strings.Join(ops, ","); got != want {
		t.Fatal(got)
	}
}
