package broker

import (
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/cluster"
	"github.com/exactly/exactly/internal/partition"
	"github.com/exactly/exactly/internal/vfs"
)

func openBroker(fsys vfs.FS, dir string, nodeID int32) (*Broker, error) {
	return New(Config{FS: fsys, DataDir: dir, NodeID: nodeID, AdvertisedHost: "127.0.0.1", AdvertisedPort: 9092,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func mustOpenBroker(t *testing.T, fsys vfs.FS, dir string) *Broker {
	t.Helper()
	b, err := openBroker(fsys, dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tree maps every path below dir to its contents ("/" for directories).
func tree(t *testing.T, fsys vfs.FS, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func(string)
	walk = func(d string) {
		names, err := fsys.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			p := filepath.Join(d, n)
			st, err := fsys.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.IsDir() {
				out[p] = "/"
				walk(p)
				continue
			}
			b, err := vfs.ReadFile(fsys, p, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			out[p] = string(b)
		}
	}
	walk(dir)
	return out
}

func writeFile(t *testing.T, fsys vfs.FS, path, data string) {
	t.Helper()
	if err := fsys.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := vfs.WriteFileAtomic(fsys, path, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

// A second broker on a directory in use is refused at once, naming the
// directory; the first keeps it, and once it closes the directory is free.
func TestDataDirLockedWhileOpen(t *testing.T) {
	fsys := vfs.NewMem()
	b := mustOpenBroker(t, fsys, "/data")
	if _, err := b.createTopic("t", 1, nil); err != nil {
		t.Fatal(err)
	}
	_, err := openBroker(fsys, "/data", 0)
	if !errors.Is(err, cluster.ErrDataDir) || !errors.Is(err, vfs.ErrLocked) || !strings.Contains(err.Error(), "/data") {
		t.Fatalf("second broker on /data: %v, want a refusal naming the locked directory", err)
	}
	if b.partition("t", 0) == nil || b.partition("t", 0).Log().Err() != nil {
		t.Fatal("the refused broker harmed the first one")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := mustOpenBroker(t, fsys, "/data")
	defer b2.Close()
	if _, ok := b2.catalog.Topic("t"); !ok {
		t.Fatal("topic lost")
	}
}

// A non-empty directory exactly did not create is refused and left exactly
// as it was: not one file or directory added, changed or removed.
func TestForeignDirectoryRefusedUntouched(t *testing.T) {
	fsys := vfs.NewMem()
	writeFile(t, fsys, "/home/photos-2023/img-1.jpg", "jpeg")
	writeFile(t, fsys, "/home/project-2/main.go", "package main")
	writeFile(t, fsys, "/home/notes.txt", "notes")
	before := tree(t, fsys, "/home")
	_, err := openBroker(fsys, "/home", 0)
	if !errors.Is(err, cluster.ErrDataDir) || !strings.Contains(err.Error(), "meta.properties") || !strings.Contains(err.Error(), "photos-2023") {
		t.Fatalf("opening a foreign directory: %v", err)
	}
	if after := tree(t, fsys, "/home"); !maps.Equal(before, after) {
		t.Fatalf("a refused directory was modified:\nbefore %v\nafter  %v", before, after)
	}
}

// Directories and files that appear in our data directory after its first
// start, including names shaped like partitions, survive restarts and
// topic deletion; only what the catalog says we created is deleted.
func TestForeignEntriesInDataDirSurvive(t *testing.T) {
	fsys := vfs.NewMem()
	b := mustOpenBroker(t, fsys, "/data")
	for _, name := range []string{"t", "gone"} {
		if _, err := b.createTopic(name, 1, nil); err != nil {
			t.Fatal(err)
		}
	}
	b.Close()
	foreign := map[string]string{
		"/data/photos-2023/img.jpg": "jpeg",
		"/data/project-2/main.go":   "package main",
		"/data/t-1/keep":            "index beyond the topic's partitions",
		"/data/gone-1/keep":         "not a partition the deleted topic had",
		"/data/README":              "hello",
	}
	for p, data := range foreign {
		writeFile(t, fsys, p, data)
	}
	b = mustOpenBroker(t, fsys, "/data")
	if err := b.deleteTopic("gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := fsys.Stat("/data/gone-0"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("deleted topic's directory still there: %v", err)
	}
	b.Close()
	b = mustOpenBroker(t, fsys, "/data")
	defer b.Close()
	got := tree(t, fsys, "/data")
	for p, data := range foreign {
		if got[p] != data {
			t.Fatalf("%s: %q after restarts, want %q", p, got[p], data)
		}
	}
	// Creating a topic over a directory that is not ours is refused, and
	// the directory stays.
	if _, err := b.createTopic("project", 3, nil); !errors.Is(err, partition.ErrForeignDir) {
		t.Fatalf("creating a topic over a foreign directory: %v", err)
	}
	if _, ok := b.catalog.Topic("project"); ok {
		t.Fatal("topic created over a foreign directory")
	}
	if got := tree(t, fsys, "/data")["/data/project-2/main.go"]; got != "package main" {
		t.Fatalf("foreign file changed to %q", got)
	}
}

// A topic deletion interrupted between the catalog write and the removal of
// its directories (a crash, or an I/O error) is finished at the next start:
// the directory is ours, the catalog says so.
func TestInterruptedDeletionFinishedAtStart(t *testing.T) {
	mem := vfs.NewMem()
	ff := vfs.NewFaulty(mem)
	b := mustOpenBroker(t, ff, "/data")
	if _, err := b.createTopic("t", 2, nil); err != nil {
		t.Fatal(err)
	}
	ff.FailPath(vfs.OpRemove, func(n string) bool { return strings.HasSuffix(n, partition.MarkerName) }, nil)
	if err := b.deleteTopic("t"); err == nil {
		t.Fatal("deletion with a failing disk reported success")
	}
	crashed := mem.Crash(nil)
	if _, err := crashed.Stat("/data/t-0"); err != nil {
		t.Fatal("test setup: the directory should have survived", err)
	}
	b2 := mustOpenBroker(t, crashed, "/data")
	defer b2.Close()
	for _, d := range []string{"/data/t-0", "/data/t-1"} {
		if _, err := crashed.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s not removed at start: %v", d, err)
		}
	}
	if len(b2.catalog.Deleting()) != 0 {
		t.Fatal("deletion still pending")
	}
	if _, err := b2.createTopic("t", 1, nil); err != nil {
		t.Fatalf("recreating the topic: %v", err)
	}
}

// meta.properties binds the directory to one node and one format: another
// node id and a newer format are refused with the file named.
func TestMetaPropertiesChecked(t *testing.T) {
	fsys := vfs.NewMem()
	b := mustOpenBroker(t, fsys, "/data")
	b.Close()
	meta := tree(t, fsys, "/data")["/data/meta.properties"]
	for _, want := range []string{"version=1", "cluster.id=" + b.ClusterID(), "node.id=0", "exactly.format.version=1"} {
		if !strings.Contains(meta, want+"\n") {
			t.Fatalf("meta.properties lacks %q:\n%s", want, meta)
		}
	}
	if _, err := openBroker(fsys, "/data", 3); !errors.Is(err, cluster.ErrDataDir) || !strings.Contains(err.Error(), "node.id=0") {
		t.Fatalf("another node id: %v", err)
	}
	writeFile(t, fsys, "/data/meta.properties", strings.Replace(meta, "exactly.format.version=1", "exactly.format.version=2", 1))
	_, err := openBroker(fsys, "/data", 0)
	if !errors.Is(err, cluster.ErrDataDir) || !strings.Contains(err.Error(), "/data/meta.properties") || !strings.Contains(err.Error(), "exactly.format.version=2") {
		t.Fatalf("newer format: %v", err)
	}
}

// A catalog or producer state snapshot from a newer format is refused with
// the file and versions named.
func TestNewerCatalogAndSnapshotRefused(t *testing.T) {
	fsys := vfs.NewMem()
	b := mustOpenBroker(t, fsys, "/data")
	if _, err := b.createTopic("t", 1, nil); err != nil {
		t.Fatal(err)
	}
	b.Close()
	cat := tree(t, fsys, "/data")["/data/cluster.json"]
	if !strings.Contains(cat, `"version": 1`) {
		t.Fatalf("catalog does not record its version:\n%s", cat)
	}
	writeFile(t, fsys, "/data/cluster.json", strings.Replace(cat, `"version": 1`, `"version": 2`, 1))
	_, err := openBroker(fsys, "/data", 0)
	if err == nil || !strings.Contains(err.Error(), "/data/cluster.json") || !strings.Contains(err.Error(), "format version 2") {
		t.Fatalf("newer catalog: %v", err)
	}
	writeFile(t, fsys, "/data/cluster.json", cat)

	var snap string
	for p := range tree(t, fsys, "/data/t-0") {
		if strings.HasSuffix(p, ".snapshot") {
			snap = p
		}
	}
	if snap == "" {
		t.Fatal("no snapshot written at close")
	}
	data := []byte(tree(t, fsys, "/data/t-0")[snap])
	data[7] = 2 // the version byte of the magic
	writeFile(t, fsys, snap, string(data))
	_, err = openBroker(fsys, "/data", 0)
	if err == nil || !strings.Contains(err.Error(), snap) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("newer snapshot: %v", err)
	}
}
