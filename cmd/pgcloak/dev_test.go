package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/internal/hsmtest"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

var dsnRE = regexp.MustCompile(`connection string  (postgres://app:([0-9a-f]{32})@127\.0\.0\.1:(\d+)/app)\n`)

func TestDevDemo(t *testing.T) {
	pgtest.Require(t, "initdb", "postgres", "softhsm2-util")
	t.Setenv(hsmtest.ConfEnv, "") // the demo sets it for its own token; restore afterwards
	code, stdout, stderr := runCLI(t, "dev", "--demo", "--port", "0")
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	m := dsnRE.FindStringSubmatch(stdout)
	if m == nil || m[3] == "0" {
		t.Fatalf("no connection string with a real port:\n%s", stdout)
	}
	if !strings.Contains(stdout, "psql '"+m[1]+"'") {
		t.Errorf("no psql command line:\n%s", stdout)
	}
	for _, want := range []string{
		`connected as "app"`,
		"ids 1, 2, 3",
		"2 | Alan Turing  | alan@example.org",
		"SQLSTATE 22012",
		"still 3 rows",
		"ssn 078-05-1120 | born 1815-12-10",
		"ssn 219-09-9999 | born 1912-06-23",
		"key ring 1, key version 1, nonce…",
		"version 2 active, version 1 decrypt_only",
		"key ring 1, key version 2, nonce…",
		"ssn 123-45-6789 | born 1906-12-09",
		"SQLSTATE 0A000",
		"SQLSTATE 23514 (pgcloak_envelope_ssn)",
		"entries verify intact",
		"key.rotate",
		"Demo done.",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output lacks %q:\n%s", want, stdout)
		}
	}
	// The password is for the user to read on stdout, never for the logs.
	if strings.Contains(stderr, m[2]) {
		t.Errorf("password appears in the logs:\n%s", stderr)
	}
}

// TestDevInteractive starts dev as a user would, connects with the printed
// connection string, then stops it as Ctrl-C would.
func TestDevInteractive(t *testing.T) {
	pgtest.Require(t, "initdb", "postgres")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"dev", "--port", "0"}, &stdout, &stderr) }()

	waitFor(t, &stdout, regexp.MustCompile(`Press Ctrl-C to stop`), time.Minute)
	m := dsnRE.FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("no connection string:\n%s", stdout.String())
	}
	qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
	defer qcancel()
	conn, err := pgx.Connect(qctx, m[1])
	if err != nil {
		t.Fatalf("connect with the printed connection string: %v", err)
	}
	var db, user string
	if err := conn.QueryRow(qctx, "SELECT current_database(), current_user").Scan(&db, &user); err != nil {
		t.Fatal(err)
	}
	conn.Close(qctx)
	if db != "app" || user != "app" {
		t.Errorf("connected to %s as %s, want app as app", db, user)
	}
	// A wrong password is refused by the server, through the proxy.
	bad := strings.Replace(m[1], m[2], strings.Repeat("0", 32), 1)
	if c, err := pgx.Connect(qctx, bad); err == nil {
		c.Close(qctx)
		t.Error("a wrong password was accepted")
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after stop, want 0; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("dev did not stop")
	}
	if !strings.Contains(stdout.String(), "Stopped: ") {
		t.Errorf("no stop summary:\n%s", stdout.String())
	}
}

// The demo's plaintext must not reach the server log or pgcloak's log.
func TestDevDemoNoPlaintextInLogs(t *testing.T) {
	pgtest.Require(t, "initdb", "postgres", "softhsm2-util")
	t.Setenv(hsmtest.ConfEnv, "")
	code, stdout, stderr := runCLI(t, "--log-level", "debug", "dev", "--demo", "--port", "0")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, secret := range []string{"078-05-1120", "219-09-9999", "123-45-6789"} {
		if strings.Contains(stderr, secret) {
			t.Errorf("pgcloak's log holds %q", secret)
		}
	}
}
