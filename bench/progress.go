package bench

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ProgressLine is one line pgbench prints on stderr every --progress
// interval:
//
//	progress: 5.0 s, 10234.5 tps, lat 0.780 ms stddev 0.321, 0 failed
//
// With --progress-timestamp the time is a Unix time with milliseconds
// ("progress: 1764930000.123 s, …"). "failed" is there from PostgreSQL 15
// on; "lag", "skipped", "retried" and "retries" parts (--rate,
// --latency-limit, --max-tries) are accepted and ignored.
type ProgressLine struct {
	At          float64 // end of the interval: seconds since the run started, or a Unix time
	TPS         float64
	LatAvgMs    float64
	LatStddevMs float64
	Failed      int64 // failed transactions in the interval; 0 before PostgreSQL 15
}

// ParseProgress returns the progress lines of pgbench's stderr, in order.
// Other lines (errors, notices) are skipped; a progress line that does
// not parse is an error.
func ParseProgress(stderr string) ([]ProgressLine, error) {
	var out []ProgressLine
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		rest, ok := strings.CutPrefix(line, "progress: ")
		if !ok {
			continue
		}
		p, err := parseProgressLine(rest)
		if err != nil {
			return nil, fmt.Errorf("bench: pgbench progress line %q: %w", line, err)
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

// parseProgressLine parses what follows "progress: ".
func parseProgressLine(s string) (ProgressLine, error) {
	var p ProgressLine
	parts := strings.Split(s, ", ")
	if len(parts) < 3 {
		return p, fmt.Errorf("want time, tps and latency, got %d parts", len(parts))
	}
	var err error
	if p.At, err = numberWithUnit(parts[0], "s"); err != nil {
		return p, fmt.Errorf("time: %w", err)
	}
	if p.TPS, err = numberWithUnit(parts[1], "tps"); err != nil {
		return p, fmt.Errorf("tps: %w", err)
	}
	// "lat 0.780 ms stddev 0.321"
	f := strings.Fields(parts[2])
	if len(f) != 5 || f[0] != "lat" || f[2] != "ms" || f[3] != "stddev" {
		return p, fmt.Errorf("latency part %q", parts[2])
	}
	if p.LatAvgMs, err = strconv.ParseFloat(f[1], 64); err != nil {
		return p, fmt.Errorf("latency: %w", err)
	}
	if p.LatStddevMs, err = strconv.ParseFloat(f[4], 64); err != nil {
		return p, fmt.Errorf("latency stddev: %w", err)
	}
	for _, part := range parts[3:] {
		num, word, ok := strings.Cut(part, " ")
		if !ok {
			return p, fmt.Errorf("part %q", part)
		}
		switch word {
		case "failed":
			if p.Failed, err = strconv.ParseInt(num, 10, 64); err != nil {
				return p, fmt.Errorf("failed: %w", err)
			}
		case "skipped", "retried", "retries":
		default:
			if num != "lag" { // "lag 0.012 ms"
				return p, fmt.Errorf("unknown part %q", part)
			}
		}
	}
	return p, nil
}

// numberWithUnit parses "12.5 unit".
func numberWithUnit(s, unit string) (float64, error) {
	num, u, ok := strings.Cut(s, " ")
	if !ok || u != unit {
		return 0, fmt.Errorf("%q is not a number followed by %q", s, unit)
	}
	return strconv.ParseFloat(num, 64)
}

// abortedRE matches pgbench's message for a client that stopped on an
// error (PostgreSQL 15+: "client 3 script 0 aborted in command 4 query 0:
// …"; before: "client 3 aborted in command 4 (SQL) of script 0; …").
var abortedRE = regexp.MustCompile(`(?m)\bclient \d+ (?:script \d+ )?aborted in command\b`)

// AbortedClients counts the clients pgbench reports as aborted on stderr.
// pgbench counts only serialization and deadlock failures as failed
// transactions; any other error stops the client, and with it the
// client's share of the traffic.
func AbortedClients(stderr string) int {
	return len(abortedRE.FindAllStringIndex(stderr, -1))
}
