package bench

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses: fields are counted from
	// the last ')'. utime=1234 stime=567 ppid=1 num_threads=7.
	line := "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 7 0 100 1000000 200 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	st, err := ParseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	want := ProcStat{PID: 4242, PPID: 1, UTime: 1234, STime: 567, Threads: 7}
	if st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
	for _, bad := range []string{"", "4242 no parens S 1", "4242 (x) S 1 2 3", "x (y) " + line[len("4242 (my (odd) cmd) "):]} {
		if _, err := ParseProcStat(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestReadProcStatSelf(t *testing.T) {
	st, err := ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != os.Getpid() || st.PPID != os.Getppid() || st.Threads < 1 {
		t.Errorf("got %+v (pid %d ppid %d)", st, os.Getpid(), os.Getppid())
	}
}

// Burning CPU must show up in ProcessCPU: the measurement the proxy
// CPU-per-transaction numbers rest on.
func TestProcessCPUCountsWork(t *testing.T) {
	clock := NewCPUClock()
	if clock.TicksPerSecond <= 0 {
		t.Fatalf("ticks per second %d", clock.TicksPerSecond)
	}
	before, err := clock.ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := 0; i < 1e6; i++ {
			x += i
		}
		now, err := clock.ProcessCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if now-before >= 100*time.Millisecond {
			return
		}
	}
	t.Fatalf("10 s of spinning (%d) did not add 100 ms of process CPU", x)
}

func TestChildPIDs(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	kids, err := ChildPIDs(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(kids, cmd.Process.Pid) {
		t.Errorf("children %v do not include %d", kids, cmd.Process.Pid)
	}
	kids, err = ChildPIDs(cmd.Process.Pid)
	if err != nil || len(kids) != 0 {
		t.Errorf("sleep has children %v (err %v)", kids, err)
	}
}

func TestThreadStatsSelf(t *testing.T) {
	ths, err := ThreadStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	st, err := ReadProcStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Go threads rarely exit, so the live threads are about all of them.
	if len(ths) < 1 || len(ths) > st.Threads+2 || !slices.ContainsFunc(ths, func(p ProcStat) bool { return p.PID == os.Getpid() }) {
		t.Errorf("%d thread stats for %d threads: %+v", len(ths), st.Threads, ths)
	}
}

func TestParseProcStatChildTimes(t *testing.T) {
	// Fields 14-17: utime=10 stime=20 cutime=300 cstime=4000.
	line := "77 (postgres) S 1 77 77 0 -1 4194560 1000 0 0 0 10 20 300 4000 20 0 1 0 100 1000000 200 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	st, err := ParseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if st.UTime != 10 || st.STime != 20 || st.CUTime != 300 || st.CSTime != 4000 {
		t.Errorf("got %+v", st)
	}
}

// A child that burns CPU and is reaped lands in the parent's TreeCPU,
// the way an exited PostgreSQL backend lands in the postmaster's.
func TestTreeCPUCountsReapedChildren(t *testing.T) {
	clock := NewCPUClock()
	before, _, err := clock.TreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done`)
	if err := cmd.Run(); err != nil {
		t.Skip("no sh:", err)
	}
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if child < 50*time.Millisecond {
		t.Skipf("the child used only %v of CPU", child)
	}
	after, _, err := clock.TreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Ticks are coarse (10 ms at USER_HZ 100): allow two of them.
	if got := after - before; got < child-2*clock.Duration(1) {
		t.Errorf("TreeCPU grew by %v, the reaped child used %v", got, child)
	}

	// A live child is counted too.
	sl := exec.Command("sleep", "30")
	if err := sl.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	defer func() { _ = sl.Process.Kill(); _ = sl.Wait() }()
	_, n, err := clock.TreeCPU(os.Getpid())
	if err != nil || n < 1 {
		t.Errorf("live children %d, %v", n, err)
	}
}
