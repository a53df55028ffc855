package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BuildPgcloak compiles ./cmd/pgcloak of the module rooted at moduleDir
// into dir and returns the binary's path.
func BuildPgcloak(ctx context.Context, moduleDir, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	out := filepath.Join(dir, "pgcloak")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/pgcloak")
	cmd.Dir = moduleDir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: go build ./cmd/pgcloak: %w\n%s", err, lastLines(string(b), 20))
	}
	return out, nil
}

// ModuleRoot returns the directory of the go.mod governing the current
// directory (`go env GOMOD`).
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("bench: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("bench: not inside the pgcloak module; run from the repository or pass --pgcloak")
	}
	return filepath.Dir(gomod), nil
}

// PgcloakOpts configures a pgcloak process.
type PgcloakOpts struct {
	Binary   string // pgcloak executable
	Dir      string // private directory for the config and the log
	Upstream string // host:port of PostgreSQL
	// ExtraTOML is appended to the generated configuration (sections for
	// [keystore], [kek.*], [classification.*], [[column]] of encrypted
	// workloads). Empty for pass-through.
	ExtraTOML string
	// Env is added to the environment of the process (e.g. a PIN variable
	// named in ExtraTOML).
	Env []string
}

// pgcloakConfig renders the configuration: listen on a free loopback port
// (the "listening" log line says which), no TLS on either side, JSON logs.
func pgcloakConfig(o PgcloakOpts) string {
	s := fmt.Sprintf(`[server]
listen = "127.0.0.1:0"
shutdown_timeout = "5s"

[upstream]
addr = %s
tls = "disable"

[log]
level = "info"
format = "json"
`, strconv.Quote(o.Upstream))
	if o.ExtraTOML != "" {
		s += "\n" + o.ExtraTOML + "\n"
	}
	return s
}

// Pgcloak is a running `pgcloak serve`.
type Pgcloak struct {
	Addr    string // host:port from the "listening" log line
	Host    string
	Port    int
	PID     int
	Version string // `pgcloak version`
	LogFile string // its stderr (JSON lines)
	cmd     *exec.Cmd
	done    chan struct{}
	// stopped is the last "stopped" line, written by the log scanner
	// before done is closed.
	stopped    StoppedStats
	hasStopped bool
}

// StartPgcloak writes the configuration into o.Dir, starts
// `pgcloak serve --config FILE` and returns once it has logged
// {"message":"listening","addr":…}.
func StartPgcloak(ctx context.Context, o PgcloakOpts) (*Pgcloak, error) {
	cfg := filepath.Join(o.Dir, "pgcloak.toml")
	if err := os.WriteFile(cfg, []byte(pgcloakConfig(o)), 0o600); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	p := &Pgcloak{Version: "unknown", LogFile: filepath.Join(o.Dir, "pgcloak.log"), done: make(chan struct{})}
	if out, err := exec.CommandContext(ctx, o.Binary, "version").Output(); err == nil {
		p.Version = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	logf, err := os.Create(p.LogFile)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	p.cmd = exec.Command(o.Binary, "serve", "--config", cfg)
	p.cmd.Env = append(os.Environ(), o.Env...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: %w", err)
	}
	p.cmd.Stdout = logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start pgcloak: %w", err)
	}
	p.PID = p.cmd.Process.Pid
	addrc := make(chan string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer logf.Close()
		p.stopped, p.hasStopped = scanLog(stderr, logf, addrc)
	}()
	go func() { <-copied; _ = p.cmd.Wait(); close(p.done) }()

	select {
	case p.Addr = <-addrc:
	case <-p.done:
		return nil, fmt.Errorf("bench: pgcloak exited before listening:\n%s", p.logTail())
	case <-ctx.Done():
		p.Stop()
		return nil, ctx.Err()
	case <-time.After(30 * time.Second):
		p.Stop()
		return nil, fmt.Errorf("bench: pgcloak did not log \"listening\" within 30s:\n%s", p.logTail())
	}
	host, port, err := net.SplitHostPort(p.Addr)
	if err == nil {
		p.Port, err = strconv.Atoi(port)
	}
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("bench: pgcloak listening address %q: %v", p.Addr, err)
	}
	p.Host = host
	return p, nil
}

// scanLog copies JSON log lines to w, sends the address of the first
// {"message":"listening"} line on addrc and returns the counters of the
// last {"message":"stopped"} line. It drains r until EOF so the process
// never blocks on a full pipe.
func scanLog(r io.Reader, w io.Writer, addrc chan<- string) (stopped StoppedStats, ok bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Bytes()
		_, _ = w.Write(line) // line aliases the scanner's buffer: never append to it
		_, _ = w.Write([]byte{'\n'})
		if st, isStopped := ParseStopped(line); isStopped {
			stopped, ok = st, true
		}
		if sent {
			continue
		}
		if addr, ok := listeningAddr(line); ok {
			addrc <- addr
			sent = true
		}
	}
	_, _ = io.Copy(w, r) // a line longer than 1 MiB: keep draining
	return stopped, ok
}

// StoppedStats are the counters of the line `pgcloak serve` logs when it
// has stopped ({"message":"stopped", …}, proxy.Server.Serve): totals
// over the life of the process. The encryption counters are there only
// when columns are encrypted (Encryption).
type StoppedStats struct {
	Sessions          uint64 `json:"sessions"`
	BytesUp           uint64 `json:"bytes_up"`
	BytesDown         uint64 `json:"bytes_down"`
	Encryption        bool   `json:"encryption"`
	PlanCacheHits     uint64 `json:"plan_cache_hits"`
	PlanCacheMisses   uint64 `json:"plan_cache_misses"`
	StatementsRefused uint64 `json:"statements_refused"`
	ValuesEncrypted   uint64 `json:"values_encrypted"`
	ValuesDecrypted   uint64 `json:"values_decrypted"`
	DecryptFailures   uint64 `json:"decrypt_failures"`
}

// PlanLookups is the number of statements looked up in the plan cache.
func (s StoppedStats) PlanLookups() uint64 { return s.PlanCacheHits + s.PlanCacheMisses }

// PlanCacheHitRate is hits ÷ lookups; NaN without lookups.
func (s StoppedStats) PlanCacheHitRate() float64 {
	if s.PlanLookups() == 0 {
		return math.NaN()
	}
	return float64(s.PlanCacheHits) / float64(s.PlanLookups())
}

// ParseStopped parses the "stopped" log line of `pgcloak serve`; ok is
// false for any other line.
func ParseStopped(line []byte) (st StoppedStats, ok bool) {
	var m struct {
		Message           string  `json:"message"`
		Sessions          uint64  `json:"sessions"`
		BytesUp           uint64  `json:"bytes_up"`
		BytesDown         uint64  `json:"bytes_down"`
		PlanCacheHits     *uint64 `json:"plan_cache_hits"`
		PlanCacheMisses   *uint64 `json:"plan_cache_misses"`
		StatementsRefused uint64  `json:"statements_refused"`
		ValuesEncrypted   uint64  `json:"values_encrypted"`
		ValuesDecrypted   uint64  `json:"values_decrypted"`
		DecryptFailures   uint64  `json:"decrypt_failures"`
	}
	if json.Unmarshal(line, &m) != nil || m.Message != "stopped" {
		return StoppedStats{}, false
	}
	st = StoppedStats{Sessions: m.Sessions, BytesUp: m.BytesUp, BytesDown: m.BytesDown,
		StatementsRefused: m.StatementsRefused, ValuesEncrypted: m.ValuesEncrypted,
		ValuesDecrypted: m.ValuesDecrypted, DecryptFailures: m.DecryptFailures}
	if m.PlanCacheHits != nil && m.PlanCacheMisses != nil {
		st.Encryption = true
		st.PlanCacheHits, st.PlanCacheMisses = *m.PlanCacheHits, *m.PlanCacheMisses
	}
	return st, true
}

// StoppedStats returns the counters pgcloak logged when it stopped; ok is
// false while it runs or when it logged none (killed, crashed).
func (p *Pgcloak) StoppedStats() (StoppedStats, bool) {
	select {
	case <-p.done:
		return p.stopped, p.hasStopped
	default:
		return StoppedStats{}, false
	}
}

// listeningAddr extracts addr from the readiness log line of `pgcloak serve`.
func listeningAddr(line []byte) (string, bool) {
	var m struct {
		Message string `json:"message"`
		Addr    string `json:"addr"`
	}
	if json.Unmarshal(line, &m) != nil || m.Message != "listening" || m.Addr == "" {
		return "", false
	}
	return m.Addr, true
}

func (p *Pgcloak) logTail() string {
	b, _ := os.ReadFile(p.LogFile)
	return lastLines(string(b), 15)
}

// Stop sends SIGTERM (graceful shutdown) and waits; it kills the process
// when it has not exited after 15 seconds.
func (p *Pgcloak) Stop() {
	stopProcess(p.cmd, p.done, syscall.SIGTERM, 15*time.Second)
}
