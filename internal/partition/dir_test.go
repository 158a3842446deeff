package partition

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
)

// TestRemoveDirTornMarker: a directory left holding only a half-written
// marker of the deleted topic (killed while claiming it) is removed; one
// whose half-written marker names another topic, or that holds anything
// else, is left alone.
func TestRemoveDirTornMarker(t *testing.T) {
	var id, other TopicID
	id[0], other[0] = 1, 2
	for _, tc := range []struct {
		name  string
		files map[string]string
		gone  bool
	}{
		{"whole marker being renamed", map[string]string{MarkerName + ".tmp": markerFor(id)}, true},
		{"half a marker", map[string]string{MarkerName + ".tmp": markerFor(id)[:9]}, true},
		{"empty marker file", map[string]string{MarkerName + ".tmp": ""}, true},
		{"another topic's marker", map[string]string{MarkerName + ".tmp": markerFor(other)}, false},
		{"a stranger's file beside it", map[string]string{MarkerName + ".tmp": markerFor(id), "notes.txt": "x"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := vfs.NewMem()
			dir := "/data/t-0"
			if err := fsys.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			for name, content := range tc.files {
				f, err := fsys.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				f.Write([]byte(content))
				f.Close()
			}
			gone, err := RemoveDir(fsys, dir, id)
			if err != nil {
				t.Fatal(err)
			}
			_, statErr := fsys.Stat(dir)
			if gone != tc.gone || (statErr == nil) == tc.gone {
				t.Errorf("RemoveDir reported %v, directory exists: %v; want removed %v", gone, statErr == nil, tc.gone)
			}
		})
	}
}
