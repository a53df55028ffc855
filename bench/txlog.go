package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// TxLog accumulates pgbench per-transaction log lines (pgbench -l):
//
//	client_id transaction_no time script_no time_epoch time_us [schedule_lag] [retries]
//
// where time is the latency in µs, or "failed" / "serialization" /
// "deadlock" for a failed transaction, or "skipped" (only with --rate and
// --latency-limit). time_epoch/time_us is when the transaction ended.
// The zero value is ready to use.
type TxLog struct {
	latencies []int64 // µs, successful transactions
	failed    int64
	skipped   int64
	// ends holds the completion time (µs since the epoch) and starts the
	// start time of each successful transaction, for the timeline.
	ends    []int64
	minStrt int64
}

// Add parses log lines from r.
func (l *TxLog) Add(r io.Reader) error {
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 6 {
			return fmt.Errorf("bench: transaction log line %d: want at least 6 fields, got %d", n, len(f))
		}
		sec, err1 := strconv.ParseInt(f[4], 10, 64)
		usec, err2 := strconv.ParseInt(f[5], 10, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("bench: transaction log line %d: bad timestamp %q %q", n, f[4], f[5])
		}
		end := sec*1_000_000 + usec
		switch f[2] {
		case "failed", "serialization", "deadlock":
			l.failed++
			continue
		case "skipped":
			l.skipped++
			continue
		}
		lat, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || lat < 0 {
			return fmt.Errorf("bench: transaction log line %d: bad latency %q", n, f[2])
		}
		l.latencies = append(l.latencies, lat)
		l.ends = append(l.ends, end)
		if start := end - lat; len(l.ends) == 1 || start < l.minStrt {
			l.minStrt = start
		}
	}
	return sc.Err()
}

// AddFiles parses every file whose name starts with prefix+"." (pgbench
// writes prefix.PID for the first thread and prefix.PID.N for the others)
// and returns how many files it read.
func (l *TxLog) AddFiles(prefix string) (int, error) {
	files, err := filepath.Glob(prefix + ".*")
	if err != nil {
		return 0, err
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return 0, err
		}
		err = l.Add(f)
		f.Close()
		if err != nil {
			return 0, fmt.Errorf("%s: %w", filepath.Base(name), err)
		}
	}
	return len(files), nil
}

// Latency summarises a run's transaction log.
type Latency struct {
	Count   int64   // successful transactions
	Failed  int64   // failed transactions
	Skipped int64   // skipped transactions (--rate with --latency-limit)
	MeanMs  float64 // mean latency of successful transactions
	P50Ms   float64
	P99Ms   float64
	MaxMs   float64
	// Timeline holds successful transactions completed in each whole
	// second since the first transaction started.
	Timeline []int64
}

// Summary computes the latency statistics. It sorts the collected
// latencies in place.
func (l *TxLog) Summary() Latency {
	s := Latency{Count: int64(len(l.latencies)), Failed: l.failed, Skipped: l.skipped}
	if len(l.latencies) == 0 {
		return s
	}
	var sum int64
	for _, v := range l.latencies {
		sum += v
	}
	s.MeanMs = float64(sum) / float64(len(l.latencies)) / 1000
	slices.Sort(l.latencies)
	s.P50Ms = float64(PercentileSorted(l.latencies, 50)) / 1000
	s.P99Ms = float64(PercentileSorted(l.latencies, 99)) / 1000
	s.MaxMs = float64(l.latencies[len(l.latencies)-1]) / 1000
	for _, end := range l.ends {
		sec := int((end - l.minStrt) / 1_000_000)
		for len(s.Timeline) <= sec {
			s.Timeline = append(s.Timeline, 0)
		}
		s.Timeline[sec]++
	}
	return s
}

// PercentileSorted returns the p-th percentile (0 < p <= 100) of an
// ascending slice by the nearest-rank method: the smallest value such that
// at least p% of the values are less than or equal to it. It returns 0 for
// an empty slice.
func PercentileSorted(sorted []int64, p float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// rank = ceil(p/100 * n), computed in integers to avoid 0.99*100 = 98.99999…
	rank := int((int64(p*1000)*int64(n) + 100_000 - 1) / 100_000)
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}
