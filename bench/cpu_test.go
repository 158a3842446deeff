package bench

import (
	"encoding/binary"
	"math"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// TestParseProcStat: utime + stime are fields 14 and 15, counted after the
// last ')' because a command name may hold spaces and parentheses.
func TestParseProcStat(t *testing.T) {
	for line, want := range map[string]uint64{
		"21702 (cat) R 21700 21700 12699 0 -1 4194304 102 0 0 0 7 5 0 0 20 0 1 0 68088 3133440 361\n": 12,
		"77 (a) b (c d)) S 1 77 77 0 -1 4194560 9 0 0 0 1234 56 3 4 20 0 9 0 1 2 3":                   1290,
		"1 (exactly) S 0 1 1 0 -1 0 0 0 0 0 18446744073709551 0 0 0":                                  18446744073709551,
	} {
		got, err := parseProcStat([]byte(line))
		if err != nil || got != want {
			t.Errorf("parseProcStat(%q) = %d, %v; want %d", line, got, err, want)
		}
	}
	for _, bad := range []string{"", "1 cat R 1 2", "1 (cat) R 1 2 3", "1 (cat) R 0 1 1 0 -1 0 0 0 0 0 x 5"} {
		if got, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) = %d, want an error", bad, got)
		}
	}
}

// TestAuxvValue finds AT_CLKTCK among native-word pairs and stops at
// AT_NULL.
func TestAuxvValue(t *testing.T) {
	word := int(unsafe.Sizeof(uintptr(0)))
	vec := func(pairs ...uint64) []byte {
		b := make([]byte, len(pairs)*word)
		for i, v := range pairs {
			if word == 4 {
				binary.NativeEndian.PutUint32(b[i*word:], uint32(v))
			} else {
				binary.NativeEndian.PutUint64(b[i*word:], v)
			}
		}
		return b
	}
	if v, ok := auxvValue(vec(6, 4096, atClockTick, 250, 0, 0), atClockTick); !ok || v != 250 {
		t.Errorf("AT_CLKTCK = %d, %v; want 250", v, ok)
	}
	if v, ok := auxvValue(vec(6, 4096, 0, 0, atClockTick, 250), atClockTick); ok {
		t.Errorf("read past AT_NULL: %d", v)
	}
	if _, ok := auxvValue(vec(6, 4096)[:word+1], 6); ok {
		t.Error("read a truncated pair")
	}
	if runtime.GOOS == "linux" {
		if hz := clockTicks(); hz <= 0 || hz > 10000 {
			t.Errorf("this machine's clock ticks per second: %d", hz)
		}
	}
}

// TestCPUPerGB is the arithmetic: seconds over 10^9 bytes.
func TestCPUPerGB(t *testing.T) {
	c := cpuPerGB(1500*time.Millisecond, 500e6)
	if c == nil || c.Seconds != 1.5 || math.Abs(c.PerGB-3) > 1e-12 {
		t.Errorf("1.5 s for 500 MB: %+v, want 3 s/GB", c)
	}
	if c := cpuPerGB(time.Second, 0); c != nil {
		t.Errorf("nothing moved: %+v, want not measured", c)
	}
	one, three := 1.0, 3.0
	results := []Result{
		{Target: "a", Mode: Idempotent, BrokerCPU: &CPU{PerGB: three}},
		{Target: "a", Mode: Idempotent, BrokerCPU: &CPU{PerGB: one}},
		{Target: "a", Mode: Idempotent, BrokerCPU: &CPU{PerGB: 100}, Err: "failed"},
		{Target: "a", Mode: Idempotent},
		{Target: "b", Mode: Idempotent, BrokerCPU: &CPU{PerGB: 50}},
		{Target: "a", Mode: Idempotent, WhileCleaning: true, BrokerCPU: &CPU{PerGB: 60}},
	}
	broker := func(r Result) *CPU { return r.BrokerCPU }
	if m := medianCPU(results, "a", Idempotent, false, broker); m == nil || *m != 2 {
		t.Errorf("median over a's runs alone: %v, want 2", m)
	}
	if m := medianCPU(results, "a", Transactional, false, broker); m != nil {
		t.Errorf("no run measured: %v, want nil", *m)
	}
}

// TestProcessCPUGrows: this process's CPU time, read from /proc, grows by
// about what a busy loop spends.
func TestProcessCPUGrows(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU time is read from /proc, which only Linux has")
	}
	before, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for start := time.Now(); time.Since(start) < 300*time.Millisecond; {
		x++
	}
	after, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The loop ran 300 ms of wall time; on a loaded machine it got less
	// of a core, but never nothing.
	if spent := after - before; spent < 20*time.Millisecond || spent > 10*time.Second {
		t.Errorf("a 300 ms busy loop spent %v of CPU (%d iterations)", spent, x)
	}
	if _, err := processCPU(1 << 30); err == nil {
		t.Error("read the CPU time of a process that cannot exist")
	}
}
