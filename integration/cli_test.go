package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// runTool runs a client tool with a password in its environment (never
// on the command line) and returns stdout and stderr.
func runTool(t *testing.T, timeout time.Duration, bin, password string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+password, "PGCONNECT_TIMEOUT=10", "PSQLRC=/dev/null", "PGAPPNAME=pgcloak-it")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func TestPsql(t *testing.T) {
	c := shared.get(t)
	psql := clientBinary(t, c, "psql")
	p := startProxy(t, proxyConfig{Upstream: c.Addr()})
	dsn := p.DSN(roles.scram.name, "", "app")
	pw := roles.scram.password

	t.Run("Command", func(t *testing.T) {
		out, errOut, err := runTool(t, 30*time.Second, psql, pw, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", dsn,
			"-c", "SELECT current_user, current_database(), 6 * 7, 'ünïcode'")
		if err != nil {
			t.Fatalf("psql -c: %v\n%s", err, errOut)
		}
		if want := roles.scram.name + "|app|42|ünïcode\n"; out != want {
			t.Fatalf("psql -c printed %q, want %q", out, want)
		}
	})

	t.Run("Script", func(t *testing.T) {
		script := `\set ON_ERROR_STOP 1
CREATE TEMP TABLE s (id int PRIMARY KEY, name text);
INSERT INTO s SELECT g, 'n' || g FROM generate_series(1, 1000) g;
\copy s FROM stdin
1001	copied
\.
BEGIN;
UPDATE s SET name = upper(name) WHERE id <= 10;
SAVEPOINT sp;
DELETE FROM s;
ROLLBACK TO sp;
COMMIT;
SELECT count(*), sum(id), max(name) FILTER (WHERE id <= 10), (SELECT name FROM s WHERE id = 1001) FROM s;
\echo done
`
		f := filepath.Join(t.TempDir(), "script.sql")
		if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
			t.Fatal(err)
		}
		out, errOut, err := runTool(t, 60*time.Second, psql, pw, "-X", "-At", "-q", "-d", dsn, "-f", f)
		if err != nil {
			t.Fatalf("psql -f: %v\n%s", err, errOut)
		}
		if want := "1001|501501|N9|copied\ndone\n"; out != want {
			t.Fatalf("psql -f printed %q, want %q\nstderr: %s", out, want, errOut)
		}
	})

	t.Run("ErrorExitStatus", func(t *testing.T) {
		_, errOut, err := runTool(t, 30*time.Second, psql, pw, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", "SELECT 1/0")
		var ee *exec.ExitError
		if !errorsAs(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("psql with a failing statement: %v", err)
		}
		if !strings.Contains(errOut, "division by zero") {
			t.Fatalf("stderr %q lacks the server's message", errOut)
		}
	})

	t.Run("CancelOnSIGINT", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, psql, "-X", "-At", "-d", dsn, "-c", "SELECT pg_sleep(30)")
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pw, "PSQLRC=/dev/null")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitActive(t, c, "pg_sleep(30)")
		start := time.Now()
		_ = cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		if time.Since(start) > 5*time.Second {
			t.Fatalf("psql took %v to cancel", time.Since(start))
		}
		if err == nil || !strings.Contains(stderr.String(), "canceling statement due to user request") {
			t.Fatalf("psql after SIGINT: %v, stderr %q", err, stderr.String())
		}
	})
	mustWork(t, p)
}

// waitActive waits until a backend runs a query containing text.
func waitActive(t *testing.T, c interface{ SuperDSN() string }, text string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	conn, err := tryConnect(ctx, c.SuperDSN(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var pid int
		err := conn.QueryRow(ctx, "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid() LIMIT 1", text).Scan(&pid)
		if err == nil {
			return pid
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("no active backend running %q", text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPgbench(t *testing.T) {
	c := newCluster(t, pgtestOpts())
	pgbench := clientBinary(t, c, "pgbench")
	p := startProxy(t, proxyConfig{Upstream: c.Addr()})
	dsn := p.DSN(roles.scram.name, "", "app")
	pw := roles.scram.password

	out, errOut, err := runTool(t, 2*time.Minute, pgbench, pw, "-i", "-s", "1", "-q", dsn)
	if err != nil {
		t.Fatalf("pgbench -i: %v\n%s%s", err, out, errOut)
	}
	var accounts int
	conn := connect(t, c.DSN(roles.scram.name, pw, "app"), 0)
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM pgbench_accounts").Scan(&accounts); err != nil || accounts != 100000 {
		t.Fatalf("after pgbench -i through pgcloak: %d accounts, %v", accounts, err)
	}

	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			out, errOut, err := runTool(t, time.Minute, pgbench, pw, "-n", "-T", "3", "-c", "4", "-j", "2", "-M", mode, dsn)
			if err != nil {
				t.Fatalf("pgbench -M %s: %v\n%s%s", mode, err, out, errOut)
			}
			r := parsePgbench(t, out)
			if r.failed != 0 {
				t.Errorf("pgbench -M %s: %d failed transactions\n%s%s", mode, r.failed, out, errOut)
			}
			if r.processed <= 0 || r.tps <= 0 {
				t.Errorf("pgbench -M %s: processed %d, tps %v\n%s", mode, r.processed, r.tps, out)
			}
			t.Logf("pgbench -M %s through pgcloak: %d transactions, tps %.0f", mode, r.processed, r.tps)
		})
	}
}

type pgbenchResult struct {
	processed, failed int
	tps               float64
}

var (
	reProcessed = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	reFailed    = regexp.MustCompile(`(?m)^number of failed transactions: (\d+)`)
	reTPS       = regexp.MustCompile(`(?m)^tps = ([0-9.]+)`)
)

func parsePgbench(t *testing.T, out string) pgbenchResult {
	t.Helper()
	get := func(re *regexp.Regexp) string {
		m := re.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("pgbench output lacks %q:\n%s", re, out)
		}
		return m[1]
	}
	var r pgbenchResult
	r.processed, _ = strconv.Atoi(get(reProcessed))
	r.failed, _ = strconv.Atoi(get(reFailed))
	r.tps, _ = strconv.ParseFloat(get(reTPS), 64)
	return r
}
