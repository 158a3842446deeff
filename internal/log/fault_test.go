package log

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/exactly/exactly/internal/vfs"
)

func offline(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrLogOffline) {
		t.Fatalf("want ErrLogOffline, got %v", err)
	}
}

// assertStaysOffline checks that every write-path operation fails, even
// though the injected fault was a one-shot.
func assertStaysOffline(t *testing.T, l *Log) {
	t.Helper()
	_, err := l.Append(testBatch(1, 10, 0, 0))
	offline(t, err)
	offline(t, l.Sync(l.NextOffset()+1))
	offline(t, l.DeleteRecordsBefore(0))
	_, err = l.ApplyRetention(l.now())
	offline(t, err)
	_, err = l.Read(0, 100, 100)
	offline(t, err)
	offline(t, l.Err())
}

func TestSyncFailureIsSticky(t *testing.T) {
	mem := vfs.NewMem()
	ff := vfs.NewFaulty(mem)
	l := mustOpen(t, ff, "/p", DefaultConfig())
	var want appended
	b := testBatch(2, 10, 0, 0)
	want.add(mustAppend(t, l, b), b)
	if err := l.Sync(2); err != nil {
		t.Fatal(err)
	}
	b = testBatch(2, 10, 0, 1)
	want.add(mustAppend(t, l, b), b)
	ff.FailOnce(vfs.OpSync, 0, nil)
	err := l.Sync(4)
	offline(t, err)
	if !errors.Is(err, vfs.ErrInjected) {
		t.Fatal("cause not wrapped:", err)
	}
	if l.DurableOffset() != 2 {
		t.Fatal("durable offset advanced by a failed fsync:", l.DurableOffset())
	}
	syncs := ff.Count(vfs.OpSync)
	assertStaysOffline(t, l)
	if ff.Count(vfs.OpSync) != syncs {
		t.Fatal("offline log retried fsync")
	}
	if err := l.Close(); err != nil {
		t.Fatal("close of offline log:", err)
	}
	// What was fsynced survives a crash.
	l2 := mustOpen(t, mem.Crash(nil), "/p", DefaultConfig())
	defer l2.Close()
	if l2.NextOffset() != 2 {
		t.Fatal(l2.NextOffset())
	}
}

func TestWriteFailureLeavesNoPartialBatch(t *testing.T) {
	for _, short := range []bool{false, true} {
		mem := vfs.NewMem()
		ff := vfs.NewFaulty(mem)
		l := mustOpen(t, ff, "/p", DefaultConfig())
		var want appended
		b := testBatch(2, 100, 0, 0)
		want.add(mustAppend(t, l, b), b)
		ff.Inject(vfs.Fault{Op: vfs.OpWrite, Times: 1, ShortWrite: short})
		_, err := l.Append(testBatch(3, 100, 0, 1))
		offline(t, err)
		assertStaysOffline(t, l)
		if size := fileSize(t, mem, "/p/"+segmentName(0, logSuffix)); size != int64(len(b)) {
			t.Fatalf("short=%v: segment is %d bytes, want %d", short, size, len(b))
		}
		l.Close()
		l2 := mustOpen(t, mem, "/p", DefaultConfig())
		if l2.NextOffset() != 2 {
			t.Fatal(l2.NextOffset())
		}
		b2 := testBatch(1, 10, 0, 2)
		want.add(mustAppend(t, l2, b2), b2)
		if got, _ := l2.Read(0, 1<<20, l2.NextOffset()); !bytes.Equal(got, want.between(0, 10)) {
			t.Fatal("contents after reopen")
		}
		l2.Close()
	}
}

func TestRollFailures(t *testing.T) {
	isIndex := func(n string) bool { return strings.Contains(n, indexSuffix) }
	for name, fault := range map[string]vfs.Fault{
		"rename index":     {Op: vfs.OpRename, Path: isIndex},
		"write index":      {Op: vfs.OpWrite, Path: isIndex},
		"fsync old":        {Op: vfs.OpSync},
		"create segment":   {Op: vfs.OpOpenFile, Path: func(n string) bool { return strings.HasSuffix(n, logSuffix) }},
		"sync directory":   {Op: vfs.OpSyncDir},
		"remove old index": {Op: vfs.OpRemove},
	} {
		t.Run(name, func(t *testing.T) {
			mem := vfs.NewMem()
			ff := vfs.NewFaulty(mem)
			cfg := smallConfig()
			l := mustOpen(t, ff, "/p", cfg)
			var batches appended
			for l.Size()+600 <= cfg.SegmentBytes {
				b := testBatch(1, 500, 0, byte(len(batches.bases)))
				batches.add(mustAppend(t, l, b), b)
			}
			next := l.NextOffset()
			fault.Times = 1
			ff.Inject(fault)
			_, err := l.Append(testBatch(1, 500, 0, 99))
			offline(t, err)
			if l.NextOffset() != next {
				t.Fatal("failed append advanced the log")
			}
			assertStaysOffline(t, l)
			durable := l.DurableOffset()
			if name != "fsync old" && durable != next {
				t.Fatalf("durable %d after the old segment's fsync, want %d", durable, next)
			}
			l.Close()
			// Whatever the roll got to, a reopen finds everything
			// appended, a crash everything fsynced, and appends go on.
			for fsys, want := range map[*vfs.MemFS]int64{mem: next, mem.Crash(nil): durable} {
				l2 := mustOpen(t, fsys, "/p", cfg)
				if l2.NextOffset() != want {
					t.Fatalf("reopened at %d, want %d", l2.NextOffset(), want)
				}
				if got := bytes.Join(readBatches(t, l2, 0, 1000), nil); !bytes.Equal(got, batches.between(0, want)) {
					t.Fatal("contents")
				}
				if off := mustAppend(t, l2, testBatch(1, 500, 0, 7)); off != want {
					t.Fatal(off)
				}
				l2.Close()
			}
		})
	}
}

func TestCheckpointFailureTakesLogOffline(t *testing.T) {
	mem := vfs.NewMem()
	ff := vfs.NewFaulty(mem)
	l := mustOpen(t, ff, "/p", DefaultConfig())
	for i := 0; i < 5; i++ {
		mustAppend(t, l, testBatch(1, 10, 0, 0))
	}
	ff.FailOnce(vfs.OpRename, 0, nil)
	offline(t, l.DeleteRecordsBefore(3))
	if l.StartOffset() != 0 {
		t.Fatal("start offset moved")
	}
	l.Close()
	l2 := mustOpen(t, mem, "/p", DefaultConfig())
	defer l2.Close()
	if l2.StartOffset() != 0 || l2.NextOffset() != 5 {
		t.Fatal(l2.StartOffset(), l2.NextOffset())
	}
}

func TestOpenFailsOnReadDirError(t *testing.T) {
	ff := vfs.NewFaulty(vfs.NewMem())
	ff.FailOnce(vfs.OpReadDir, 0, nil)
	if _, err := Open(ff, "/p", DefaultConfig(), nil); !errors.Is(err, vfs.ErrInjected) {
		t.Fatal(err)
	}
	l := mustOpen(t, ff, "/p", DefaultConfig())
	l.Close()
}
