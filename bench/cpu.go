package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ProcStat is the part of /proc/PID/stat the harness uses.
type ProcStat struct {
	PID     int
	PPID    int
	UTime   int64 // user time of all threads, in clock ticks
	STime   int64 // system time of all threads, in clock ticks
	CUTime  int64 // user time of the children it has waited for, in clock ticks
	CSTime  int64 // system time of the children it has waited for, in clock ticks
	Threads int
}

// ParseProcStat parses the content of /proc/PID/stat. The command name
// (field 2) is in parentheses and may contain spaces and parentheses, so
// the fields are counted from the last ')'.
func ParseProcStat(s string) (ProcStat, error) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return ProcStat{}, fmt.Errorf("bench: /proc stat: no command name")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s[:open]))
	if err != nil {
		return ProcStat{}, fmt.Errorf("bench: /proc stat: pid: %w", err)
	}
	// f[0] is field 3 (state), so field N is f[N-3].
	f := strings.Fields(s[end+1:])
	if len(f) < 18 {
		return ProcStat{}, fmt.Errorf("bench: /proc stat: %d fields after the command name, want at least 18", len(f))
	}
	st := ProcStat{PID: pid}
	nums := []struct {
		field int
		dst   *int64
	}{{14, &st.UTime}, {15, &st.STime}, {16, &st.CUTime}, {17, &st.CSTime}}
	for _, n := range nums {
		if *n.dst, err = strconv.ParseInt(f[n.field-3], 10, 64); err != nil {
			return ProcStat{}, fmt.Errorf("bench: /proc stat: field %d: %w", n.field, err)
		}
	}
	if st.PPID, err = strconv.Atoi(f[4-3]); err != nil {
		return ProcStat{}, fmt.Errorf("bench: /proc stat: ppid: %w", err)
	}
	if st.Threads, err = strconv.Atoi(f[20-3]); err != nil {
		return ProcStat{}, fmt.Errorf("bench: /proc stat: num_threads: %w", err)
	}
	return st, nil
}

// ReadProcStat reads /proc/PID/stat.
func ReadProcStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStat{}, fmt.Errorf("bench: %w", err)
	}
	return ParseProcStat(string(b))
}

// CPUClock converts clock ticks of /proc/PID/stat to time.
type CPUClock struct {
	TicksPerSecond int64 // USER_HZ, from `getconf CLK_TCK`
}

// NewCPUClock asks `getconf CLK_TCK`; when that fails it uses 100, the
// value of USER_HZ on every mainstream Linux architecture.
func NewCPUClock() CPUClock {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return CPUClock{TicksPerSecond: n}
		}
	}
	return CPUClock{TicksPerSecond: 100}
}

// Duration converts ticks to time.
func (c CPUClock) Duration(ticks int64) time.Duration {
	return time.Duration(ticks) * time.Second / time.Duration(c.TicksPerSecond)
}

// ProcessCPU returns the user+system CPU time consumed so far by all
// threads of process pid.
func (c CPUClock) ProcessCPU(pid int) (time.Duration, error) {
	st, err := ReadProcStat(pid)
	if err != nil {
		return 0, err
	}
	return c.Duration(st.UTime + st.STime), nil
}

// TreeCPU returns the CPU time consumed so far by process pid, by the
// children it has reaped (cutime, cstime) and by its live children, and
// how many children are alive. For PostgreSQL's postmaster that is the
// whole server: a backend that has exited is in the postmaster's cutime
// and cstime once reaped. A child that exits between the two readings
// may be missed or counted twice; read it when the children are settled.
func (c CPUClock) TreeCPU(pid int) (time.Duration, int, error) {
	kids, err := ChildPIDs(pid)
	if err != nil {
		return 0, 0, err
	}
	var ticks int64
	for _, k := range kids {
		if st, err := ReadProcStat(k); err == nil {
			ticks += st.UTime + st.STime + st.CUTime + st.CSTime
		}
	}
	st, err := ReadProcStat(pid)
	if err != nil {
		return 0, 0, err
	}
	ticks += st.UTime + st.STime + st.CUTime + st.CSTime
	return c.Duration(ticks), len(kids), nil
}

// ChildPIDs returns the processes whose parent is pid (by scanning /proc).
// A proxy whose CPU is measured as one process must have none: the CPU of
// children is not in the parent's utime/stime until they are reaped.
func ChildPIDs(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadProcStat(n)
		if err != nil {
			continue // exited meanwhile
		}
		if st.PPID == pid {
			out = append(out, n)
		}
	}
	return out, nil
}

// ThreadStats reads /proc/PID/task/*/stat: one entry per live thread
// (PID is then the thread id).
func ThreadStats(pid int) ([]ProcStat, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var out []ProcStat
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, e.Name()))
		if err != nil {
			continue // exited meanwhile
		}
		st, err := ParseProcStat(string(b))
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}
