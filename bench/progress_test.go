package bench

import (
	"strings"
	"testing"
)

// Progress lines as PostgreSQL 15's pgbench prints them (relative and
// with --progress-timestamp), an older one without "failed", and the
// optional parts of --rate / --max-tries, among other stderr lines.
func TestParseProgress(t *testing.T) {
	stderr := strings.Join([]string{
		"pgbench (15.18 (Debian 15.18-0+deb12u1))",
		"progress: 1.0 s, 10234.5 tps, lat 0.780 ms stddev 0.321, 0 failed",
		"progress: 1764930002.004 s, 9876.0 tps, lat 0.812 ms stddev 1.002, 3 failed",
		"progress: 3.0 s, 0.0 tps, lat 0.000 ms stddev 0.000",
		"progress: 4.0 s, 500.0 tps, lat 2.000 ms stddev 0.500, 0 failed, lag 0.012 ms, 2 skipped, 1 retried, 4 retries",
		"pgbench: error: client 3 script 0 aborted in command 4 query 0: ERROR:  boom",
		"",
	}, "\n")
	got, err := ParseProgress(stderr)
	if err != nil {
		t.Fatal(err)
	}
	want := []ProgressLine{
		{At: 1, TPS: 10234.5, LatAvgMs: 0.78, LatStddevMs: 0.321},
		{At: 1764930002.004, TPS: 9876, LatAvgMs: 0.812, LatStddevMs: 1.002, Failed: 3},
		{At: 3},
		{At: 4, TPS: 500, LatAvgMs: 2, LatStddevMs: 0.5},
	}
	if len(got) != len(want) {
		t.Fatalf("%d lines: %+v", len(got), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{
		"progress: 1.0 s, 10.0 tps",
		"progress: x s, 10.0 tps, lat 1.000 ms stddev 0.100",
		"progress: 1.0 s, 10.0 ops, lat 1.000 ms stddev 0.100",
		"progress: 1.0 s, 10.0 tps, latency 1.000 ms",
		"progress: 1.0 s, 10.0 tps, lat 1.000 ms stddev 0.100, many failed",
		"progress: 1.0 s, 10.0 tps, lat 1.000 ms stddev 0.100, 3 exploded",
	} {
		if _, err := ParseProgress(bad + "\n"); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestAbortedClients(t *testing.T) {
	stderr := `progress: 1.0 s, 10.0 tps, lat 1.000 ms stddev 0.100, 0 failed
pgbench: error: client 3 script 0 aborted in command 4 query 0: ERROR:  value too long
pgbench: error: client 12 aborted in command 1 (SQL) of script 0; ERROR:  boom
pgbench: error: Run was aborted; the above results are incomplete.
`
	if n := AbortedClients(stderr); n != 2 {
		t.Errorf("%d aborted clients, want 2", n)
	}
	if n := AbortedClients("progress: 1.0 s, 10.0 tps, lat 1.000 ms stddev 0.100, 0 failed\n"); n != 0 {
		t.Errorf("%d aborted clients in a clean run", n)
	}
}

func TestRunSpecProgressArgs(t *testing.T) {
	s := RunSpec{Target: Target{Host: "127.0.0.1", Port: 5432}, Clients: 8, Threads: 2, Duration: 40e9, DB: "bench", User: "bench",
		Workload: Workload{Args: []string{"-M", "prepared"}}, ScriptFile: "/tmp/s.sql", Progress: true}
	got := strings.Join(s.Args(), " ")
	if !strings.HasSuffix(got, "-M prepared -f /tmp/s.sql --progress 1 --progress-timestamp bench") {
		t.Errorf("args %s", got)
	}
	s.Progress = false
	if strings.Contains(strings.Join(s.Args(), " "), "--progress") {
		t.Error("progress without Progress")
	}
}
