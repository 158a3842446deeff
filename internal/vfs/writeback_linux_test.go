package vfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The OS filesystem's files can start writeback of a range they hold, and
// doing so changes nothing about their contents or a later Sync.
func TestStartWriteback(t *testing.T) {
	f, err := OS().OpenFile(filepath.Join(t.TempDir(), "wb"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte("exactly"), 100000)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	wb, ok := f.(interface{ StartWriteback(off, n int64) error })
	if !ok {
		t.Fatal("OS files do not offer StartWriteback")
	}
	if err := wb.StartWriteback(0, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("contents changed after writeback: %v", err)
	}
}
