package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFormat: format writes the cluster id and node id into an empty
// directory, accepts the same again, and refuses another cluster's id.
func TestFormat(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "node2")
	r := mustRun(t, "", "format", "--data-dir", dir, "--cluster-id", "c-one", "--node-id", "2")
	if !strings.Contains(r.stdout, "cluster.id=c-one node.id=2") {
		t.Errorf("output %q", r.stdout)
	}
	meta, err := os.ReadFile(filepath.Join(dir, "meta.properties"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cluster.id=c-one\n", "node.id=2\n", "directory.id="} {
		if !strings.Contains(string(meta), want) {
			t.Errorf("meta.properties lacks %q:\n%s", want, meta)
		}
	}
	mustRun(t, "", "format", "--data-dir", dir, "--cluster-id", "c-one", "--node-id", "2")
	wantErr(t, "cluster.id=c-one", "", "format", "--data-dir", dir, "--cluster-id", "c-two", "--node-id", "2")
	wantErr(t, "node.id=2", "", "format", "--data-dir", dir, "--cluster-id", "c-one", "--node-id", "3")
	wantErr(t, "--node-id is required", "", "format", "--data-dir", dir)
}

// TestClusterCommandsOnASingleNode: info lists the one broker; status
// says there is no quorum; voter changes are refused.
func TestClusterCommandsOnASingleNode(t *testing.T) {
	addr := startBroker(t)
	r := mustRun(t, "", "cluster", "info", "-b", addr)
	if !strings.Contains(r.stdout, "Cluster id: ") || !strings.Contains(r.stdout, "Controller: 0") {
		t.Errorf("info:\n%s", r.stdout)
	}
	wantErr(t, "single node", "", "cluster", "status", "-b", addr)
	wantErr(t, "INVALID_REQUEST", "", "cluster", "remove-voter", "--node-id", "3", "-b", addr)
	wantErr(t, "--controller", "", "cluster", "add-voter", "--node-id", "3", "-b", addr)
}
