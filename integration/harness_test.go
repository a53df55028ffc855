package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// proxyConfig is what a test varies in pgcloak.toml.
type proxyConfig struct {
	Upstream         string // host:port of PostgreSQL
	UpstreamTLS      string // "" leaves the default
	UpstreamCA       string
	UpstreamName     string // tls_server_name
	TLSCert, TLSKey  string // client-side TLS
	ShutdownTimeout  string // default "5s" so a leaked client cannot hang a test
	HandshakeTimeout string
	MaxMessageLen    string
	// Extra is appended to the file as it is (key store, KEKs,
	// classifications, columns).
	Extra string
	// Env is added to the environment of pgcloak serve (PINs).
	Env []string
}

func (c proxyConfig) toml() string {
	q := strconv.Quote
	var b strings.Builder
	b.WriteString("[server]\nlisten = \"127.0.0.1:0\"\n")
	if c.ShutdownTimeout == "" {
		c.ShutdownTimeout = "5s"
	}
	fmt.Fprintf(&b, "shutdown_timeout = %s\n", q(c.ShutdownTimeout))
	if c.HandshakeTimeout != "" {
		fmt.Fprintf(&b, "handshake_timeout = %s\n", q(c.HandshakeTimeout))
	}
	if c.MaxMessageLen != "" {
		fmt.Fprintf(&b, "max_message_len = %s\n", q(c.MaxMessageLen))
	}
	if c.TLSCert != "" {
		fmt.Fprintf(&b, "tls_cert = %s\ntls_key = %s\n", q(c.TLSCert), q(c.TLSKey))
	}
	fmt.Fprintf(&b, "\n[upstream]\naddr = %s\n", q(c.Upstream))
	if c.UpstreamTLS != "" {
		fmt.Fprintf(&b, "tls = %s\n", q(c.UpstreamTLS))
	}
	if c.UpstreamCA != "" {
		fmt.Fprintf(&b, "tls_ca = %s\n", q(c.UpstreamCA))
	}
	if c.UpstreamName != "" {
		fmt.Fprintf(&b, "tls_server_name = %s\n", q(c.UpstreamName))
	}
	b.WriteString("\n[log]\nlevel = \"info\"\nformat = \"json\"\n")
	if c.Extra != "" {
		b.WriteString("\n" + c.Extra)
	}
	return b.String()
}

// proxy is a running `pgcloak serve`.
type proxy struct {
	t    *testing.T
	cmd  *exec.Cmd
	Addr string // where it listens
	logs *logBuffer

	exited  chan struct{}
	exitErr error
	stopped bool
}

// startProxy writes cfg to a file, starts `pgcloak serve --config FILE`
// and waits for its "listening" log line. Cleanup stops it with SIGTERM
// and fails the test unless it exits 0.
func startProxy(t *testing.T, cfg proxyConfig) *proxy {
	t.Helper()
	bin := needBinary(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "pgcloak.toml")
	if err := os.WriteFile(conf, []byte(cfg.toml()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", conf)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), cfg.Env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := &logBuffer{}
	cmd.Stdout = stdout
	p := &proxy{t: t, cmd: cmd, logs: &logBuffer{}, exited: make(chan struct{})}
	listening := make(chan string, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			l := p.logs.add(sc.Text())
			if l.Message == "listening" && l.Fields["addr"] != nil {
				select {
				case listening <- fmt.Sprint(l.Fields["addr"]):
				default:
				}
			}
		}
	}()
	go func() {
		<-readerDone // Wait closes the pipe: read it to the end first
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if !p.stopped {
			p.Stop(t)
		}
		if out := stdout.String(); out != "" {
			t.Errorf("pgcloak serve wrote to stdout (contract: nothing): %q", truncate(out, 500))
		}
		if t.Failed() {
			t.Logf("pgcloak log:\n%s", truncate(p.logs.String(), 20000))
		}
	})
	select {
	case p.Addr = <-listening:
	case <-p.exited:
		p.stopped = true
		t.Fatalf("pgcloak serve exited before listening: %v\nconfig:\n%s\nlog:\n%s", p.exitErr, cfg.toml(), p.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("pgcloak serve did not log \"listening\" within 20s\nlog:\n%s", p.logs.String())
	}
	if _, _, err := net.SplitHostPort(p.Addr); err != nil {
		t.Fatalf("listening line has a bad addr %q", p.Addr)
	}
	return p
}

// Stop sends SIGTERM and requires a clean exit (status 0) within the
// shutdown timeout plus a margin.
func (p *proxy) Stop(t *testing.T) {
	t.Helper()
	p.stopped = true
	p.Signal(t, syscall.SIGTERM)
	p.Wait(t, 40*time.Second)
	if p.exitErr != nil {
		t.Errorf("pgcloak serve did not exit cleanly after SIGTERM: %v", p.exitErr)
	}
	if bad := p.logs.find(func(l logLine) bool { return l.Level == "panic" || l.Level == "fatal" }); len(bad) > 0 {
		t.Errorf("pgcloak logged %s: %s", bad[0].Level, bad[0].Raw)
	}
}

// Signal sends sig to the proxy process.
func (p *proxy) Signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signal pgcloak: %v", err)
	}
}

// Wait waits for the process to exit; after timeout it kills it and fails.
func (p *proxy) Wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("pgcloak serve still running %v after SIGTERM; killed", timeout)
	}
}

// Exited reports whether the process has exited.
func (p *proxy) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// DSN is a connection string for the proxy. extra are key=value query
// parameters; sslmode defaults to disable.
func (p *proxy) DSN(user, password, db string, extra ...string) string {
	if db == "" {
		db = "postgres"
	}
	u := url.URL{Scheme: "postgres", Host: p.Addr, Path: "/" + db}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	q := url.Values{}
	q.Set("sslmode", "disable")
	q.Set("connect_timeout", "10")
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		q.Set(k, v)
	}
	// pgx does not decode '+' as a space; Encode escapes a literal '+'.
	u.RawQuery = strings.ReplaceAll(q.Encode(), "+", "%20")
	return u.String()
}

// RSS returns the resident set size of the proxy in bytes.
func (p *proxy) RSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// logLine is one JSON line of the proxy's stderr.
type logLine struct {
	Raw     string
	Level   string
	Message string
	Fields  map[string]any
}

// logBuffer collects the proxy's output; safe for concurrent use.
type logBuffer struct {
	mu    sync.Mutex
	lines []logLine
	raw   strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.raw.Write(p)
}

func (b *logBuffer) add(s string) logLine {
	l := logLine{Raw: s}
	if err := json.Unmarshal([]byte(s), &l.Fields); err == nil {
		l.Level, _ = l.Fields["level"].(string)
		l.Message, _ = l.Fields["message"].(string)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, l)
	b.raw.WriteString(s)
	b.raw.WriteByte('\n')
	return l
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.raw.String()
}

func (b *logBuffer) find(pred func(logLine) bool) []logLine {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []logLine
	for _, l := range b.lines {
		if pred(l) {
			out = append(out, l)
		}
	}
	return out
}

func (b *logBuffer) count(msg string) int {
	return len(b.find(func(l logLine) bool { return l.Message == msg }))
}

// waitCount waits until at least n lines with message msg were logged and
// returns them.
func (p *proxy) waitCount(t *testing.T, msg string, n int, timeout time.Duration) []logLine {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := p.logs.find(func(l logLine) bool { return l.Message == msg })
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %d log lines %q, have %d", timeout, n, msg, len(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// connect opens a pgx connection with exec mode and a context watcher
// that sends a CancelRequest when a query's context ends (the pgx default
// only closes the socket). The connection is closed in Cleanup.
func connect(t *testing.T, dsn string, mode pgx.QueryExecMode) *pgx.Conn {
	t.Helper()
	conn, err := tryConnect(t.Context(), dsn, mode)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func tryConnect(ctx context.Context, dsn string, mode pgx.QueryExecMode) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if mode != 0 { // 0: pgx's default
		cfg.DefaultQueryExecMode = mode
	}
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, CancelRequestDelay: 0, DeadlineDelay: 10 * time.Second}
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// superConn connects straight to the cluster as the superuser.
func superConn(t *testing.T, c *pgtest.Cluster) *pgx.Conn {
	t.Helper()
	return connect(t, c.SuperDSN(), pgx.QueryExecModeCacheStatement)
}

// sqlState returns the SQLSTATE of err, or "" when err is not a server
// error.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// mustWork runs a query through the proxy to prove it still serves.
func mustWork(t *testing.T, p *proxy) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, err := tryConnect(ctx, p.DSN(roles.scram.name, roles.scram.password, ""), pgx.QueryExecModeCacheStatement)
	if err != nil {
		t.Fatalf("proxy no longer serves: connect: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT 40 + $1::int", 2).Scan(&n); err != nil || n != 42 {
		t.Fatalf("proxy no longer serves: got %d, %v", n, err)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("… (%d more bytes)", len(s)-n)
}
