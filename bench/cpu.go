package bench

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

// CPU is the processor time one process spent during a run (user and
// system, every thread), from /proc/<pid>/stat before and after it.
type CPU struct {
	Seconds float64 `json:"seconds"`
	// PerGB is Seconds per 10^9 bytes of Result.Bytes: the values
	// produced (produce modes) or read (consume modes).
	PerGB float64 `json:"s_per_gb"`
}

// cpuPerGB is what a run's CPU time comes to per GB it moved; nil when
// it moved nothing.
func cpuPerGB(spent time.Duration, bytes int64) *CPU {
	if bytes <= 0 {
		return nil
	}
	return &CPU{Seconds: spent.Seconds(), PerGB: spent.Seconds() / (float64(bytes) / 1e9)}
}

// cpuMeter reads the CPU time of the target's process (Target.PID) and of
// this one, the benchmark client, at the start of a run; stop reads them
// again and fills in the result. A process whose time cannot be read
// (not Linux, no PID, a process that died) leaves its field nil: the
// report prints "-" rather than zero.
type cpuMeter struct {
	pids               []int
	broker, client     time.Duration
	brokerOK, clientOK bool
}

func startCPU(t Target) *cpuMeter {
	m := &cpuMeter{}
	if t.PID > 0 {
		m.pids = append([]int{t.PID}, t.PIDs...)
		m.broker, m.brokerOK = readCPUs(m.pids)
	}
	m.client, m.clientOK = readCPU(os.Getpid())
	return m
}

// readCPUs sums the CPU time of pids (false if any cannot be read).
func readCPUs(pids []int) (time.Duration, bool) {
	var sum time.Duration
	for _, pid := range pids {
		d, ok := readCPU(pid)
		if !ok {
			return 0, false
		}
		sum += d
	}
	return sum, true
}

func (m *cpuMeter) stop(res *Result) {
	if res.Err != "" {
		return
	}
	if m.brokerOK {
		if now, ok := readCPUs(m.pids); ok {
			res.BrokerCPU = cpuPerGB(now-m.broker, res.Bytes)
		}
	}
	if m.clientOK {
		if now, ok := readCPU(os.Getpid()); ok {
			res.ClientCPU = cpuPerGB(now-m.client, res.Bytes)
		}
	}
}

func readCPU(pid int) (time.Duration, bool) {
	d, err := processCPU(pid)
	return d, err == nil
}

// processCPU is the processor time a process has used so far: utime +
// stime of /proc/<pid>/stat, which sum every thread of the process.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	ticks, err := parseProcStat(b)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ticks) * time.Second / time.Duration(clockTicks()), nil
}

// parseProcStat returns utime + stime (fields 14 and 15, in clock ticks)
// of a /proc/<pid>/stat line. The command name (field 2) is in
// parentheses and may itself hold spaces and parentheses, so the fields
// are counted from the last ')'.
func parseProcStat(b []byte) (uint64, error) {
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, errors.New("no command name")
	}
	// After the name: state (field 3), ppid, pgrp, session, tty_nr,
	// tpgid, flags, minflt, cminflt, majflt, cmajflt, utime (14), stime.
	fields := bytes.Fields(b[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(fields))
	}
	var sum uint64
	for _, f := range fields[11:13] {
		v, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// atClockTick is AT_CLKTCK, the auxiliary vector's entry for the unit of
// /proc's times (sysconf(_SC_CLK_TCK)).
const atClockTick = 17

// clockTicks is the number of /proc time units per second: AT_CLKTCK
// from this process's auxiliary vector, or 100 (Linux's USER_HZ on every
// common architecture) if it cannot be read.
var clockTicks = sync.OnceValue(func() int64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	if hz, ok := auxvValue(b, atClockTick); ok && hz > 0 {
		return int64(hz)
	}
	return 100
})

// auxvValue finds key in an auxiliary vector: pairs of native words, key
// then value, ending at key 0 (AT_NULL).
func auxvValue(auxv []byte, key uint64) (uint64, bool) {
	word := int(unsafe.Sizeof(uintptr(0)))
	read := func(b []byte) uint64 {
		if word == 4 {
			return uint64(binary.NativeEndian.Uint32(b))
		}
		return binary.NativeEndian.Uint64(b)
	}
	for i := 0; i+2*word <= len(auxv); i += 2 * word {
		k := read(auxv[i:])
		if k == 0 {
			break
		}
		if k == key {
			return read(auxv[i+word:]), true
		}
	}
	return 0, false
}

// medianCPU is the median of one CPU figure's PerGB over the runs of mode
// on target; nil when no run measured it.
func medianCPU(results []Result, target, mode string, cleaning bool, get func(Result) *CPU) *float64 {
	var v []float64
	for _, r := range results {
		if r.Target == target && r.Mode == mode && r.WhileCleaning == cleaning && r.Err == "" && get(r) != nil {
			v = append(v, get(r).PerGB)
		}
	}
	if len(v) == 0 {
		return nil
	}
	m := median(v)
	return &m
}

// logString is a progress line's note of the broker's CPU in a run.
func (c *CPU) logString() string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf(", broker %.2f CPU s/GB", c.PerGB)
}
