package testenv

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// StoredBatches reads the record batches of one partition from its segment
// files under a broker's data directory, oldest first, as they are on disk
// (what a test checks the broker stored, not what a fetch returns). It
// fails the test on a truncated batch.
func StoredBatches(t testing.TB, dataDir, topic string, partition int) [][]byte {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dataDir, topic+"-"+strconv.Itoa(partition), "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(logs) // names are zero-padded base offsets
	var out [][]byte
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for len(b) > 0 {
			if len(b) < 61 {
				t.Fatalf("%s: %d bytes left, less than a batch header", path, len(b))
			}
			size := 12 + int(binary.BigEndian.Uint32(b[8:]))
			if size < 61 || size > len(b) {
				t.Fatalf("%s: batch of %d bytes with %d left", path, size, len(b))
			}
			out = append(out, b[:size:size])
			b = b[size:]
		}
	}
	if len(logs) == 0 {
		t.Fatalf("no segment files for %s-%d under %s", topic, partition, dataDir)
	}
	return out
}
