package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/hsm/local"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// serve with a [keystore] and an encrypted column migrates the key store,
// creates the key rings the configuration needs (audited), starts the
// encryption machinery and stops it cleanly, and refuses to start when a
// KEK cannot be opened.
func TestServePreparesKeyStore(t *testing.T) {
	c := pgtest.New(t, pgtest.Opts{})
	dir := t.TempDir()
	if err := local.Generate(filepath.Join(dir, "dev.key")); err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, dir, "pgcloak.toml", `[server]
listen = "127.0.0.1:0"

[upstream]
addr = "`+c.Addr()+`"
tls = "disable"

[keystore]
dsn = "`+c.SuperDSN()+`"
audit_sink = "audit.jsonl"

[kek.dev]
type = "local"
key_file = "dev.key"

[classification.internal]
kek = "dev"

[[column]]
table = "customers"
column = "email"
type = "text"
classification = "internal"
`)
	sinkLines := 0
	for round := 1; round <= 2; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		var stdout, stderr syncBuffer
		done := make(chan int, 1)
		go func() { done <- run(ctx, []string{"--config", cfg, "serve"}, &stdout, &stderr) }()
		waitFor(t, &stderr, listeningRE, 20*time.Second)
		logs := stderr.String()
		want := "created"
		if round == 2 {
			want = "exists" // idempotent: nothing new on a second start
		}
		for _, ring := range []string{"internal", "audit"} {
			re := regexp.MustCompile(`"keyring":"` + ring + `"[^\n]*"status":"` + want + `"[^\n]*"message":"key ring ready"`)
			if !re.MatchString(logs) {
				t.Errorf("round %d: no %q line for key ring %s:\n%s", round, want, ring, logs)
			}
		}
		if round == 1 && !strings.Contains(logs, "key store schema migrated") {
			t.Errorf("round 1: no migration line:\n%s", logs)
		}
		cancel()
		if code := <-done; code != 0 {
			t.Fatalf("round %d: exit %d\n%s", round, code, stderr.String())
		}
		// Every audit entry also went to the SIEM sink, one JSON line
		// each; the second start added none.
		st, err := os.Stat(filepath.Join(dir, "audit.jsonl"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("round %d: audit sink %v, %v", round, st, err)
		}
		lines := strings.Split(strings.TrimSpace(readFile(t, filepath.Join(dir, "audit.jsonl"))), "\n")
		if round == 1 {
			sinkLines = len(lines)
		}
		if len(lines) < 4 || len(lines) != sinkLines || !strings.Contains(lines[0], `"hash"`) || !strings.Contains(lines[0], `"keyring.create"`) {
			t.Fatalf("round %d: audit sink has %d lines (first: %s)", round, len(lines), lines[0])
		}
	}
	code, out, errOut := runCLI(t, "--config", cfg, "audit", "verify")
	if code != 0 || !strings.Contains(out, "intact") {
		t.Fatalf("audit verify after serve: exit %d\n%s%s", code, out, errOut)
	}

	// A KEK that cannot be opened (a world-readable key file, which the
	// local provider refuses) keeps serve from starting: exit 1.
	if err := os.WriteFile(filepath.Join(dir, "open.key"), []byte(readFile(t, filepath.Join(dir, "dev.key"))), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := writeFile(t, dir, "bad.toml", strings.Replace(readFile(t, cfg), `key_file = "dev.key"`, `key_file = "open.key"`, 1))
	code, _, errOut = runCLI(t, "--config", bad, "serve")
	if code != exitRuntime || !strings.Contains(errOut, "open.key") {
		t.Fatalf("serve with an unusable KEK: exit %d (want %d)\n%s", code, exitRuntime, errOut)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
