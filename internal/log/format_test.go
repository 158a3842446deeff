package log

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
)

// Files a newer binary wrote in a newer format are refused with the file
// and both versions named, never guessed at or silently rebuilt.
func TestNewerFormatsRefused(t *testing.T) {
	expectRefusal := func(t *testing.T, err error, file, version string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), version) || !strings.Contains(err.Error(), "newer") {
			t.Fatalf("got %v, want a refusal naming %s and %s", err, file, version)
		}
	}
	t.Run("index", func(t *testing.T) {
		fsys := vfs.NewMem()
		fill(t, fsys, "/p", smallConfig(), 40)
		name := filepath.Join("/p", segmentName(0, indexSuffix))
		b, err := vfs.ReadFile(fsys, name, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		b[4] = indexVersion + 1
		sealIndex(b) // a newer binary's file is whole: a bad CRC would be damage, rebuilt
		if err := vfs.WriteFileAtomic(fsys, name, b); err != nil {
			t.Fatal(err)
		}
		_, err = Open(fsys, "/p", smallConfig(), nil)
		expectRefusal(t, err, segmentName(0, logSuffix), "version 2")
	})
	t.Run("start offset checkpoint", func(t *testing.T) {
		fsys := vfs.NewMem()
		fill(t, fsys, "/p", smallConfig(), 5)
		if err := vfs.WriteFileAtomic(fsys, "/p/"+checkpointName, []byte("v2 3\n")); err != nil {
			t.Fatal(err)
		}
		_, err := Open(fsys, "/p", smallConfig(), nil)
		expectRefusal(t, err, checkpointName, "version 2")
	})
	t.Run("recovery points", func(t *testing.T) {
		fsys := vfs.NewMem()
		if err := vfs.WriteFileAtomic(fsys, "/rp", []byte("2\n0\n")); err != nil {
			t.Fatal(err)
		}
		_, err := ReadRecoveryPoints(fsys, "/rp")
		expectRefusal(t, err, "/rp", "version 2")
	})
}

// The recovery point file round-trips, keyed by topic id.
func TestRecoveryPointsRoundTrip(t *testing.T) {
	fsys := vfs.NewMem()
	rps := RecoveryPoints{
		{Topic: "a", Partition: 0, TopicID: [16]byte{1}}:      10,
		{Topic: "a", Partition: 1, TopicID: [16]byte{1}}:      0,
		{Topic: "b.c", Partition: 7, TopicID: [16]byte{2, 3}}: 1 << 40,
	}
	if err := WriteRecoveryPoints(fsys, "/rp", rps); err != nil {
		t.Fatal(err)
	}
	got, err := ReadRecoveryPoints(fsys, "/rp")
	if err != nil || len(got) != len(rps) {
		t.Fatal(got, err)
	}
	for k, v := range rps {
		if got[k] != v {
			t.Fatalf("%+v: %d, want %d", k, got[k], v)
		}
	}
	if err := vfs.WriteFileAtomic(fsys, "/rp", []byte("1\n2\na 0 5 AQAAAAAAAAAAAAAAAAAAAA\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRecoveryPoints(fsys, "/rp"); err == nil {
		t.Fatal("a file whose count disagrees with its lines was accepted")
	}
}
