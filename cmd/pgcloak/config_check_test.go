package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pgcloak/pgcloak/config"
)

const validConfig = "[upstream]\naddr = \"127.0.0.1:5432\"\n"

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigCheckValid(t *testing.T) {
	p := writeFile(t, t.TempDir(), "ok.toml", validConfig)
	code, stdout, stderr := runCLI(t, "config", "check", p)
	if code != 0 || stderr != "" || stdout != p+": ok (0 columns, 0 encrypted; 0 classifications; 0 keks)\n" {
		t.Errorf("exit %d\nstdout: %q\nstderr: %q", code, stdout, stderr)
	}
}

// TestConfigCheckProblems runs config check on the committed bad example
// and compares its output with what the config package reports.
func TestConfigCheckProblems(t *testing.T) {
	const file = "../../config/testdata/bad.toml"
	_, err := config.Load(file)
	var probs config.Problems
	if !errors.As(err, &probs) || len(probs) < 5 {
		t.Fatalf("config.Load(%s) = %v; want several problems", file, err)
	}
	code, stdout, stderr := runCLI(t, "config", "check", file)
	if code != 2 || stdout != "" {
		t.Fatalf("exit %d, stdout %q; want 2 and nothing on stdout", code, stdout)
	}
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if len(lines) != len(probs) {
		t.Fatalf("%d lines on stderr, want %d (one per problem):\n%s", len(lines), len(probs), stderr)
	}
	lineRE := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:(\d+): \S.*$`)
	for i, l := range lines {
		if !lineRE.MatchString(l) || l != probs[i].String() {
			t.Errorf("line %d = %q, want %q in FILE:LINE: message form", i+1, l, probs[i].String())
		}
	}
	if !strings.Contains(stderr, file+":3: server.listne: unknown key") {
		t.Errorf("typo on line 3 not reported:\n%s", stderr)
	}
}

func TestConfigCheckFileSelection(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.toml", validConfig)
	bad := writeFile(t, dir, "bad.toml", validConfig+"[server]\nlistne = \"x\"\n")

	// Positional FILE wins over --config.
	if code, _, _ := runCLI(t, "--config", bad, "config", "check", good); code != 0 {
		t.Errorf("positional FILE: exit %d, want 0", code)
	}
	// --config is used when FILE is absent.
	if code, _, stderr := runCLI(t, "config", "check", "--config", bad); code != 2 || !strings.HasPrefix(stderr, bad+":4: ") {
		t.Errorf("--config: exit %d, stderr %q", code, stderr)
	}
	// $PGCLOAK_CONFIG is the default for --config.
	t.Setenv("PGCLOAK_CONFIG", bad)
	if code, _, stderr := runCLI(t, "config", "check"); code != 2 || !strings.HasPrefix(stderr, bad+":4: ") {
		t.Errorf("$PGCLOAK_CONFIG: exit %d, stderr %q", code, stderr)
	}
	if code, _, _ := runCLI(t, "--config", good, "config", "check"); code != 0 {
		t.Errorf("--config overrides $PGCLOAK_CONFIG: exit %d", code)
	}
	// Without either, ./pgcloak.toml.
	os.Unsetenv("PGCLOAK_CONFIG")
	t.Chdir(dir)
	if code, _, stderr := runCLI(t, "config", "check"); code != 2 || !strings.Contains(stderr, "pgcloak.toml: no such file") {
		t.Errorf("missing ./pgcloak.toml: exit %d, stderr %q", code, stderr)
	}
	writeFile(t, dir, "pgcloak.toml", validConfig)
	if code, stdout, _ := runCLI(t, "config", "check"); code != 0 || !strings.HasPrefix(stdout, "pgcloak.toml: ok") {
		t.Errorf("./pgcloak.toml: exit %d, stdout %q", code, stdout)
	}
}

func TestConfigCheckSkipFiles(t *testing.T) {
	p := writeFile(t, t.TempDir(), "tls.toml", "[server]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"+validConfig)
	code, _, stderr := runCLI(t, "config", "check", p)
	if code != 2 || !strings.Contains(stderr, p+":2: server.tls_cert: cannot read") || !strings.Contains(stderr, p+":3: server.tls_key: cannot read") {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "config", "check", "--skip-files", p); code != 0 {
		t.Errorf("--skip-files: exit %d, stderr:\n%s", code, stderr)
	}
	if code, _, _ := runCLI(t, "config", "check", "--skip-files", "../../config/testdata/example.toml"); code != 0 {
		t.Errorf("example.toml: exit %d", code)
	}
}
