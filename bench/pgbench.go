package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// RunSpec is one pgbench invocation against one target.
type RunSpec struct {
	Target   Target
	Workload Workload
	Clients  int
	Threads  int           // -j; capped at Clients
	Duration time.Duration // -T, whole seconds (at least 1)
	DB       string
	User     string
	// ScriptFile is the path of Workload.Script written to disk ("" when the
	// workload has no script).
	ScriptFile string
	// LogPrefix, when not empty, turns on per-transaction logging (-l) into
	// files named LogPrefix.PID[.N].
	LogPrefix string
	// Progress turns on a progress report on stderr every second, stamped
	// with the Unix time (--progress 1 --progress-timestamp; ParseProgress).
	Progress bool
}

// Args returns the pgbench command-line arguments (without the program
// name). The password travels in the environment (PGPASSWORD), never here.
func (s RunSpec) Args() []string {
	threads := s.Threads
	if threads < 1 {
		threads = 1
	}
	if threads > s.Clients {
		threads = s.Clients
	}
	secs := int((s.Duration + time.Second/2) / time.Second)
	if secs < 1 {
		secs = 1
	}
	args := []string{
		"-h", s.Target.Host, "-p", strconv.Itoa(s.Target.Port), "-U", s.User,
		"-c", strconv.Itoa(s.Clients), "-j", strconv.Itoa(threads), "-T", strconv.Itoa(secs),
	}
	if s.Workload.NoVacuum {
		args = append(args, "--no-vacuum")
	}
	args = append(args, s.Workload.Args...)
	if s.ScriptFile != "" {
		args = append(args, "-f", s.ScriptFile)
	}
	if s.LogPrefix != "" {
		args = append(args, "-l", "--log-prefix="+s.LogPrefix)
	}
	if s.Progress {
		args = append(args, "--progress", "1", "--progress-timestamp")
	}
	return append(args, s.DB)
}

// Output is what pgbench prints on stdout at the end of a run.
type Output struct {
	TransactionType string  // "<builtin: select only>", …
	QueryMode       string  // simple | extended | prepared
	Clients         int     // number of clients
	Threads         int     // number of threads
	Processed       int64   // number of transactions actually processed
	Failed          int64   // number of failed transactions (PostgreSQL 15+; 0 before)
	LatencyAvgMs    float64 // "latency average" (pgbench's own, may be derived from the run time)
	InitialConnMs   float64 // "initial connection time" (PostgreSQL 14+)
	TPS             float64 // excluding connection time
}

// ErrNoTPS is returned by ParseOutput when the output has no usable tps line.
var ErrNoTPS = errors.New("bench: pgbench output has no tps line")

// ParseOutput parses the summary pgbench prints on stdout. It understands
// PostgreSQL 14+ ("tps = N (without initial connection time)") and older
// releases ("tps = N (excluding connections establishing)"); the TPS that
// includes connection time is never used.
func ParseOutput(stdout string) (Output, error) {
	var o Output
	haveTPS := false
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		key, val, ok := splitKV(line)
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "transaction type":
			o.TransactionType = val
		case "query mode":
			o.QueryMode = val
		case "number of clients":
			o.Clients, err = strconv.Atoi(val)
		case "number of threads":
			o.Threads, err = strconv.Atoi(val)
		case "number of transactions actually processed":
			// Older releases print "N/M" when a transaction count was given.
			n, _, _ := strings.Cut(val, "/")
			o.Processed, err = strconv.ParseInt(n, 10, 64)
		case "number of failed transactions":
			n, _, _ := strings.Cut(val, " ")
			o.Failed, err = strconv.ParseInt(n, 10, 64)
		case "latency average":
			o.LatencyAvgMs, err = parseMs(val)
		case "initial connection time":
			o.InitialConnMs, err = parseMs(val)
		case "tps":
			num, rest, _ := strings.Cut(val, " ")
			if strings.Contains(rest, "including") {
				continue // includes connection time: not what we measure
			}
			o.TPS, err = strconv.ParseFloat(num, 64)
			haveTPS = err == nil
		}
		if err != nil {
			return Output{}, fmt.Errorf("bench: pgbench output: %q: %w", line, err)
		}
	}
	if !haveTPS {
		return Output{}, ErrNoTPS
	}
	return o, nil
}

// splitKV splits "key: value" and "key = value" at whichever separator
// comes first.
func splitKV(line string) (key, val string, ok bool) {
	c, e := strings.Index(line, ":"), strings.Index(line, " = ")
	switch {
	case e >= 0 && (c < 0 || e < c):
		return line[:e], line[e+3:], true
	case c >= 0:
		return line[:c], line[c+1:], true
	}
	return "", "", false
}

// parseMs parses "0.088 ms" and "1.365 ms (including failures)".
func parseMs(v string) (float64, error) {
	num, rest, _ := strings.Cut(v, " ")
	if !strings.HasPrefix(rest, "ms") {
		return 0, fmt.Errorf("unit is not ms")
	}
	return strconv.ParseFloat(num, 64)
}

// lastLines returns at most n trailing non-empty lines of s, for error
// messages that quote a tool's stderr.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// exec runs pgbench with args (see execCPU).
func (h *harness) exec(ctx context.Context, timeout time.Duration, args []string) (stdout, stderr string, err error) {
	stdout, stderr, _, err = h.execCPU(ctx, timeout, args, "")
	return stdout, stderr, err
}

// execCPU runs pgbench with args in dir ("" = the current directory) and
// the harness environment, killing it after timeout. cpu is pgbench's own
// user+system time.
func (h *harness) execCPU(ctx context.Context, timeout time.Duration, args []string, dir string) (stdout, stderr string, cpu time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.pgbench, args...)
	cmd.Env, cmd.Dir = h.env, dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	switch {
	case err == nil:
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("killed after %s: %w", timeout, err)
	case ctx.Err() != nil:
		err = fmt.Errorf("interrupted: %w", err)
	}
	return o.String(), e.String(), cpu, err
}
