package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PgBouncerOpts configures a throwaway PgBouncer in session pooling mode.
type PgBouncerOpts struct {
	Binary       string // pgbouncer executable
	Dir          string // private directory for the ini, auth file and log
	Port         int    // loopback port to listen on
	UpstreamHost string
	UpstreamPort int
	DB           string // database name, the same on both sides
	User         string // the one user allowed in (md5 via the auth file)
	Password     string
	PoolSize     int // server connections per user+database; must cover the clients
	MaxClients   int // max_client_conn
}

// pgbouncerIni renders the configuration file. Everything not set here is
// PgBouncer's default, so the comparison is against a stock session pooler.
func pgbouncerIni(o PgBouncerOpts) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[databases]\n%s = host=%s port=%d dbname=%s\n\n", o.DB, o.UpstreamHost, o.UpstreamPort, o.DB)
	b.WriteString("[pgbouncer]\n")
	kv := [][2]string{
		{"listen_addr", "127.0.0.1"},
		{"listen_port", strconv.Itoa(o.Port)},
		{"unix_socket_dir", ""},
		{"auth_type", "md5"},
		{"auth_file", filepath.Join(o.Dir, "userlist.txt")},
		{"pool_mode", "session"},
		{"max_client_conn", strconv.Itoa(o.MaxClients)},
		{"default_pool_size", strconv.Itoa(o.PoolSize)},
		{"max_db_connections", "0"},
		{"server_tls_sslmode", "disable"},
		{"logfile", filepath.Join(o.Dir, "pgbouncer.log")},
		{"log_connections", "0"},
		{"log_disconnections", "0"},
	}
	for _, p := range kv {
		fmt.Fprintf(&b, "%s = %s\n", p[0], p[1])
	}
	return b.String()
}

// pgbouncerUserlist renders the auth file: "user" "password" per line.
// PgBouncer hashes a plain password itself for md5.
func pgbouncerUserlist(user, password string) string {
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	return q(user) + " " + q(password) + "\n"
}

// PgBouncer is a running PgBouncer process.
type PgBouncer struct {
	Port    int
	PID     int
	Version string // first line of `pgbouncer --version`
	Threads int    // threads of the process right after start
	logFile string
	cmd     *exec.Cmd
	done    chan struct{}
}

// FindPgBouncer locates the pgbouncer executable in PATH, /usr/sbin and
// /usr/local/sbin.
func FindPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(d, "pgbouncer")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("bench: pgbouncer not found in PATH, /usr/sbin, /usr/local/sbin (install it: apt-get install pgbouncer)")
}

// StartPgBouncer writes the configuration into o.Dir and starts PgBouncer,
// as the OS user postgres when the harness runs as root (PgBouncer refuses
// to run as root). It returns once the port accepts connections.
func StartPgBouncer(ctx context.Context, o PgBouncerOpts) (*PgBouncer, error) {
	u, err := lookupUnprivileged()
	if err != nil {
		return nil, err
	}
	ini := filepath.Join(o.Dir, "pgbouncer.ini")
	auth := filepath.Join(o.Dir, "userlist.txt")
	if err := os.WriteFile(ini, []byte(pgbouncerIni(o)), 0o600); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(auth, []byte(pgbouncerUserlist(o.User, o.Password)), 0o600); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if err := u.own(o.Dir, ini, auth); err != nil {
		return nil, err
	}
	version := "unknown"
	if out, err := exec.CommandContext(ctx, o.Binary, "--version").Output(); err == nil {
		version = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}

	p := &PgBouncer{Port: o.Port, Version: version, logFile: filepath.Join(o.Dir, "pgbouncer.log"), done: make(chan struct{})}
	stderr, err := os.Create(filepath.Join(o.Dir, "pgbouncer.stderr"))
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer stderr.Close()
	// Not tied to ctx: the caller ends it with Stop.
	p.cmd = exec.Command(o.Binary, ini)
	p.cmd.Stdout, p.cmd.Stderr = stderr, stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	u.apply(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start pgbouncer: %w", err)
	}
	p.PID = p.cmd.Process.Pid
	go func() { _ = p.cmd.Wait(); close(p.done) }()

	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := waitTCP(wctx, fmt.Sprintf("127.0.0.1:%d", o.Port), p.done); err != nil {
		p.Stop()
		return nil, fmt.Errorf("bench: pgbouncer: %w\n%s", err, p.logTail(o.Dir))
	}
	if st, err := ReadProcStat(p.PID); err == nil {
		p.Threads = st.Threads
	}
	return p, nil
}

func (p *PgBouncer) logTail(dir string) string {
	var s string
	for _, f := range []string{p.logFile, filepath.Join(dir, "pgbouncer.stderr")} {
		if b, err := os.ReadFile(f); err == nil {
			s += lastLines(string(b), 10) + "\n"
		}
	}
	return s
}

// Stop shuts PgBouncer down immediately (SIGTERM) and waits for it.
func (p *PgBouncer) Stop() {
	stopProcess(p.cmd, p.done, syscall.SIGTERM, 5*time.Second)
}
