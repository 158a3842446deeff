package quorum

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStrangerNotRemembered: a handshake from a node id that is no member
// of the quorum is refused and leaves nothing behind: remembering every
// stranger's directory id would let anyone who reaches the controller
// listener grow peers.json until the node no longer restarts.
func TestStrangerNotRemembered(t *testing.T) {
	c := newTestCluster(t, 3, 0)
	c.leader()
	for id := uint64(100); id < 110; id++ {
		conn, err := net.DialTimeout("tcp", c.addr(1), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var dir DirectoryID
		dir[0] = byte(id)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(appendFrame(nil, frameHello, hello{ClusterID: "test-cluster", NodeID: id, DirectoryID: dir}.encode())); err != nil {
			t.Fatal(err)
		}
		kind, payload, err := readFrame(bufio.NewReader(conn), maxFrameBytes)
		conn.Close()
		if err != nil || kind != frameReject || !strings.Contains(string(payload), "not a member") {
			t.Fatalf("stranger %d: frame %d %q, err %v; want a refusal", id, kind, payload, err)
		}
	}
	b, err := os.ReadFile(filepath.Join(c.dirs[1], peersFile))
	if err != nil {
		t.Fatal(err)
	}
	for id := 100; id < 110; id++ {
		if strings.Contains(string(b), `"`+strconv.Itoa(id)+`"`) {
			t.Errorf("peers.json remembers stranger %d: %s", id, b)
		}
	}
}
