package bench

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestTxLogCapturedSelect(t *testing.T) {
	var l TxLog
	if err := l.Add(strings.NewReader(readTestdata(t, "pgbench15-txlog-select.log"))); err != nil {
		t.Fatal(err)
	}
	s := l.Summary()
	// 30 lines; latencies sum to 12863 µs; sorted, the 15th is 119 and
	// the 30th (nearest rank of p99 for n=30) is 3523.
	if s.Count != 30 || s.Failed != 0 {
		t.Fatalf("count %d failed %d", s.Count, s.Failed)
	}
	if want := 12863.0 / 30 / 1000; !approx(s.MeanMs, want) {
		t.Errorf("mean %v ms, want %v", s.MeanMs, want)
	}
	if s.P50Ms != 0.119 || s.P99Ms != 3.523 || s.MaxMs != 3.523 {
		t.Errorf("p50 %v p99 %v max %v", s.P50Ms, s.P99Ms, s.MaxMs)
	}
}

func TestTxLogCapturedFailures(t *testing.T) {
	var l TxLog
	if err := l.Add(strings.NewReader(readTestdata(t, "pgbench15-txlog-with-failures.log"))); err != nil {
		t.Fatal(err)
	}
	s := l.Summary()
	// 14 "failed" lines, 16 successful ones summing to 37325 µs.
	if s.Count != 16 || s.Failed != 14 {
		t.Fatalf("count %d failed %d", s.Count, s.Failed)
	}
	if want := 37325.0 / 16 / 1000; !approx(s.MeanMs, want) {
		t.Errorf("mean %v, want %v", s.MeanMs, want)
	}
}

func TestTxLogPercentilesAndTimeline(t *testing.T) {
	// Latencies 1..200 µs in random order; transaction i ends at second
	// 1000 + i/50 (so 50 per second, 4 seconds), each preceded by a
	// failure and a skip.
	lat := make([]int, 200)
	for i := range lat {
		lat[i] = i + 1
	}
	rand.Shuffle(len(lat), func(i, j int) { lat[i], lat[j] = lat[j], lat[i] })
	var b strings.Builder
	for i, v := range lat {
		sec := 1000 + i/50
		fmt.Fprintf(&b, "%d %d %d 0 %d %d\n", i%8, i, v, sec, 500000)
		fmt.Fprintf(&b, "%d %d failed 0 %d %d\n", i%8, i, sec, 500000)
		fmt.Fprintf(&b, "%d %d skipped 0 %d %d 12\n", i%8, i, sec, 500000)
	}
	var l TxLog
	if err := l.Add(strings.NewReader(b.String())); err != nil {
		t.Fatal(err)
	}
	s := l.Summary()
	if s.Count != 200 || s.Failed != 200 || s.Skipped != 200 {
		t.Fatalf("count %d failed %d skipped %d", s.Count, s.Failed, s.Skipped)
	}
	if !approx(s.MeanMs, 0.1005) || s.P50Ms != 0.100 || s.P99Ms != 0.198 || s.MaxMs != 0.200 {
		t.Errorf("mean %v p50 %v p99 %v max %v", s.MeanMs, s.P50Ms, s.P99Ms, s.MaxMs)
	}
	// The first transaction started at most 200 µs before 1000.5 s, so all
	// buckets are relative to ~1000.5 s: 50 per second.
	if want := []int64{50, 50, 50, 50}; !slices.Equal(s.Timeline, want) {
		t.Errorf("timeline %v, want %v", s.Timeline, want)
	}
}

func TestTxLogRejectsGarbage(t *testing.T) {
	for _, line := range []string{
		"0 1 12 0 1795599531\n",             // too few fields
		"0 1 abc 0 1795599531 878160\n",     // latency not a number
		"0 1 -5 0 1795599531 878160\n",      // negative latency
		"0 1 100 0 17955x9531 878160\n",     // bad epoch
		"0 1 100 0 1795599531 87816x0 12\n", // bad µs
	} {
		var l TxLog
		if err := l.Add(strings.NewReader(line)); err == nil {
			t.Errorf("accepted %q", line)
		}
	}
	var l TxLog
	if err := l.Add(strings.NewReader("\n\n")); err != nil || l.Summary().Count != 0 {
		t.Errorf("blank lines: err %v", err)
	}
}

func TestTxLogAddFilesReadsEveryThread(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"tx.4242":   "0 1 100 0 1795599531 1\n0 2 300 0 1795599531 2\n",
		"tx.4242.1": "1 1 200 0 1795599531 3\n",
		"other.1":   "garbage that must not be read\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var l TxLog
	n, err := l.AddFiles(filepath.Join(dir, "tx"))
	if err != nil || n != 2 {
		t.Fatalf("n %d err %v", n, err)
	}
	if s := l.Summary(); s.Count != 3 || s.MeanMs != 0.2 {
		t.Errorf("count %d mean %v", s.Count, s.MeanMs)
	}
}

func TestPercentileSorted(t *testing.T) {
	seq := func(n int) []int64 {
		s := make([]int64, n)
		for i := range s {
			s[i] = int64(i + 1)
		}
		return s
	}
	tests := []struct {
		xs   []int64
		p    float64
		want int64
	}{
		{nil, 99, 0},
		{[]int64{7}, 99, 7},
		{[]int64{7}, 1, 7},
		{seq(100), 99, 99},
		{seq(100), 50, 50},
		{seq(100), 100, 100},
		{seq(10), 99, 10},
		{seq(10), 90, 9},
		{seq(1000), 99.9, 999},
		{seq(1000), 99, 990},
		{seq(3), 0.0001, 1},
	}
	for _, tt := range tests {
		if got := PercentileSorted(tt.xs, tt.p); got != tt.want {
			t.Errorf("p%v of %d values = %d, want %d", tt.p, len(tt.xs), got, tt.want)
		}
	}
}

func approx(a, b float64) bool {
	d := a - b
	return d < 1e-9 && d > -1e-9
}
