package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/internal/tlstest"
)

// Opts configures a throwaway cluster.
type Opts struct {
	// LogStatementAll sets log_statement='all' so tests can grep LogFile
	// for what reached the server.
	LogStatementAll bool
	// SSL generates a CA and a server certificate for 127.0.0.1/localhost
	// and turns ssl on. CACertFile then names the CA.
	SSL bool
	// Conf holds extra postgresql.conf settings; they override the
	// defaults written by Start.
	Conf map[string]string
}

// Cluster is a running throwaway PostgreSQL server. Its methods are safe
// for concurrent use. It lives until Stop.
type Cluster struct {
	dir     string // temp root, owned by the server's OS user
	dataDir string
	binDir  string
	logFile string
	caFile  string
	port    int
	cred    *syscall.Credential // nil: run as the current user

	cmd  *exec.Cmd
	done chan struct{} // closed when the server process has exited

	hbaMu    sync.Mutex
	hbaUsers []string // per-user pg_hba.conf lines, in order of AddUser

	stopOnce sync.Once
	stopErr  error
}

const (
	superUser    = "postgres"
	startTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	portAttempts = 5
)

// Start runs initdb in a fresh temporary directory and starts a server on
// a free loopback port. The caller must call Stop.
func Start(ctx context.Context, opts Opts) (*Cluster, error) {
	postgres, initdb, err := serverBinaries()
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	dir, err := makeDir(cred)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		binDir:  filepath.Dir(postgres),
		logFile: filepath.Join(dir, "postgres.log"),
		cred:    cred,
	}
	if err := c.init(ctx, initdb, opts); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err = c.start(ctx, postgres)
		if err == nil {
			return c, nil
		}
		_ = c.kill()
		if !errors.Is(err, errPortInUse) || attempt == portAttempts {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
}

// init runs initdb and writes the configuration files.
func (c *Cluster) init(ctx context.Context, initdb string, opts Opts) error {
	cmd := exec.CommandContext(ctx, initdb,
		"-D", c.dataDir, "-U", superUser,
		"--auth-local=trust", "--auth-host=scram-sha-256",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	c.prepare(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, tail(out, 2000))
	}
	conf := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": c.dir,
		"fsync":                   "off",
		"full_page_writes":        "off",
		"synchronous_commit":      "off",
		"max_connections":         "300",
		"shared_buffers":          "128MB",
		"log_min_messages":        "warning",
	}
	if opts.LogStatementAll {
		conf["log_statement"] = "all"
		conf["log_connections"] = "on"
		conf["log_disconnections"] = "on"
	}
	if opts.SSL {
		if err := c.writeCerts(); err != nil {
			return err
		}
		conf["ssl"] = "on"
		conf["ssl_cert_file"] = "server.crt"
		conf["ssl_key_file"] = "server.key"
	}
	for k, v := range opts.Conf {
		conf[k] = v
	}
	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("\n# written by pgtest\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = '%s'\n", k, strings.ReplaceAll(conf[k], "'", "''"))
	}
	f, err := os.OpenFile(filepath.Join(c.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return fmt.Errorf("pgtest: write postgresql.conf: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pgtest: write postgresql.conf: %w", err)
	}
	return c.writeHBA()
}

func (c *Cluster) writeCerts() error {
	ca, err := tlstest.NewCA()
	if err != nil {
		return err
	}
	files, err := ca.WriteFiles(c.dataDir, "127.0.0.1", "localhost")
	if err != nil {
		return err
	}
	for _, p := range []string{files.CA, files.Cert, files.Key} {
		if err := c.chown(p); err != nil {
			return err
		}
	}
	c.caFile = files.CA
	return nil
}

// errPortInUse marks a start that failed because the port was taken
// between choosing it and the server binding it.
var errPortInUse = errors.New("pgtest: port in use")

func (c *Cluster) start(ctx context.Context, postgres string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(c.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: open log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	offset, _ := logf.Seek(0, 2)
	cmd := exec.Command(postgres, "-D", c.dataDir, "-p", strconv.Itoa(port))
	c.prepare(cmd)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr.Setpgid = true             // our signals only, not the terminal's
	cmd.SysProcAttr.Pdeathsig = syscall.SIGINT // fast shutdown if we die
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	c.port = port
	c.cmd = cmd
	c.done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, c.SuperDSN())
		ccancel()
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case <-c.done:
			log := c.logSince(offset)
			if bytes.Contains(log, []byte("Address already in use")) {
				return errPortInUse
			}
			return fmt.Errorf("pgtest: postgres exited during startup:\n%s", tail(log, 2000))
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not ready: %w (last error: %v)\n%s", ctx.Err(), err, tail(c.logSince(offset), 2000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop shuts the server down (fast shutdown: SIGINT) and removes its
// directory. It is idempotent; later calls return the first result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		if c.cmd != nil && c.cmd.Process != nil {
			_ = c.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-c.done:
			case <-time.After(stopTimeout):
				errs = append(errs, fmt.Errorf("pgtest: postgres did not stop within %v; killed", stopTimeout))
				_ = c.kill()
			}
		}
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, fmt.Errorf("pgtest: remove %s: %w", c.dir, err))
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// kill SIGKILLs the server's process group and waits for the postmaster.
func (c *Cluster) kill() error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-c.done:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("pgtest: postgres survived SIGKILL")
	}
}

// Addr returns "127.0.0.1:PORT".
func (c *Cluster) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)) }

// Host returns the loopback address the server listens on.
func (c *Cluster) Host() string { return "127.0.0.1" }

// Port returns the server's TCP port.
func (c *Cluster) Port() int { return c.port }

// DSN returns a URL connection string for user over TCP, without TLS.
// An empty password is left out; an empty db means "postgres".
func (c *Cluster) DSN(user, password, db string) string {
	if db == "" {
		db = "postgres"
	}
	u := url.URL{Scheme: "postgres", Host: c.Addr(), Path: "/" + db, RawQuery: "sslmode=disable"}
	if password != "" {
		u.User = url.UserPassword(user, password)
	} else {
		u.User = url.User(user)
	}
	return u.String()
}

// SuperDSN connects as the superuser "postgres" (trusted over loopback).
func (c *Cluster) SuperDSN() string { return c.DSN(superUser, "", "postgres") }

// LogFile is the server's log (its stderr).
func (c *Cluster) LogFile() string { return c.logFile }

// CACertFile is the CA that signed the server certificate when Opts.SSL
// was set, "" otherwise.
func (c *Cluster) CACertFile() string { return c.caFile }

// BinDir is the directory of the postgres binary in use.
func (c *Cluster) BinDir() string { return c.binDir }

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return c.dataDir }

// SocketDir is the directory of the server's Unix-domain socket.
func (c *Cluster) SocketDir() string { return c.dir }

// prepare sets the child's user, working directory and environment.
func (c *Cluster) prepare(cmd *exec.Cmd) {
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "LANG=C", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if c.cred != nil {
		cmd.SysProcAttr.Credential = c.cred
	}
}

func (c *Cluster) chown(p string) error {
	if c.cred == nil {
		return nil
	}
	if err := os.Chown(p, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	return nil
}

func (c *Cluster) logSince(offset int64) []byte {
	b, err := os.ReadFile(c.logFile)
	if err != nil || offset > int64(len(b)) {
		return nil
	}
	return b[offset:]
}

// serverCredential returns the credential of OS user "postgres" when we
// are root (PostgreSQL refuses to run as root), nil otherwise.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root needs an OS user \"postgres\" to run the server: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: uid of postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: gid of postgres: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// makeDir creates the cluster's root directory, owned by the server user,
// under a temp directory whose ancestors that user can traverse.
func makeDir(cred *syscall.Credential) (string, error) {
	base := os.TempDir()
	if cred != nil && !traversable(base) {
		base = "/tmp"
		if !traversable(base) {
			return "", fmt.Errorf("pgtest: neither %s nor /tmp is traversable by the postgres user", os.TempDir())
		}
	}
	dir, err := os.MkdirTemp(base, "pgtest-")
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("pgtest: %w", err)
		}
	}
	return dir, nil
}

// traversable reports whether every directory from p up to / is
// searchable by others.
func traversable(p string) bool {
	p, err := filepath.Abs(p)
	if err != nil {
		return false
	}
	for {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(p)
		if parent == p {
			return true
		}
		p = parent
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("pgtest: find free port: %w", err)
	}
	return port, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
