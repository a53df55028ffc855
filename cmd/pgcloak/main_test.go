package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// runMainEnv makes the test binary behave as pgcloak itself (see
// TestMain), so that signal handling can be tested in a child process
// without building the binary.
const runMainEnv = "PGCLOAK_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// pgcloakCmd returns a command that runs pgcloak's main with args.
func pgcloakCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), runMainEnv+"=1")
	return cmd
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls buf until re matches and returns the submatches.
func waitFor(t *testing.T, buf *syncBuffer, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(buf.String()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("no match for %v within %v; output so far:\n%s", re, timeout, buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runCLI runs pgcloak in-process and returns its exit code and output.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderrRE string
	}{
		{"help", []string{"--help"}, 0, "Commands:", `^$`},
		{"help lists every verb", []string{"--help"}, 0, "serve", `^$`},
		{"command help", []string{"config", "check", "--help"}, 0, "Usage: pgcloak config check [<file>]", `^$`},
		{"no command", nil, 2, "", `(?s)^pgcloak: expected one of .*Run 'pgcloak --help' for usage.\n$`},
		{"unknown command", []string{"frobnicate"}, 2, "", `pgcloak: unexpected argument frobnicate`},
		{"unknown flag", []string{"version", "--colour"}, 2, "", `unknown flag --colour`},
		{"bad log level", []string{"--log-level", "loud", "version"}, 2, "", `--log-level: "loud" is not one of`},
		{"bad log format", []string{"--log-format=xml", "version"}, 2, "", `--log-format: "xml" is not one of json, console`},
		{"dev port out of range", []string{"dev", "--port", "70000"}, 2, "", `--port: 70000 is outside 0..65535`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !regexp.MustCompile(tc.stderrRE).MatchString(stderr) {
				t.Errorf("pgcloak %q: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", tc.args, code, tc.code, stdout, stderr)
			}
		})
	}
	_, stdout, _ := runCLI(t, "--help")
	for _, verb := range []string{"config check", "dev", "serve", "version"} {
		if !strings.Contains(stdout, "  "+verb+" ") {
			t.Errorf("--help does not list %q:\n%s", verb, stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	code, stdout, stderr := runCLI(t, "version")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !regexp.MustCompile(`^pgcloak \S+\ncommit  \S+.*\ngo      go1\.\d+\S* \w+/\w+\n$`).MatchString(stdout) {
		t.Errorf("version output:\n%s", stdout)
	}
	old := version
	version = "v9.8.7-test"
	defer func() { version = old }()
	if _, stdout, _ := runCLI(t, "version"); !strings.HasPrefix(stdout, "pgcloak v9.8.7-test\n") {
		t.Errorf("-X main.version not honoured:\n%s", stdout)
	}
}
