package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgcloak/pgcloak/hsm/local"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// withStdin makes f the process's stdin for the rest of the test.
func withStdin(t *testing.T, f *os.File) {
	t.Helper()
	old := os.Stdin
	os.Stdin = f
	t.Cleanup(func() { os.Stdin = old })
}

func testKeysConfirmNonTerminal(t *testing.T, c *pgtest.Cluster) {
	e := newKeysEnv(t, c, localConfig+"\n[kek.dev2]\ntype = \"local\"\nkey_file = \"dev2.key\"\n")
	if err := local.Generate(filepath.Join(e.dir, "dev2.key")); err != nil {
		t.Fatal(err)
	}
	e.ok("keys", "init")
	e.ok("keys", "rotate", "internal")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fmt.Fprintln(w, "yes") // a script piping "yes" must not pass for a human
	w.Close()
	withStdin(t, r)
	before := e.states()
	for _, args := range [][]string{
		{"keys", "set-state", "internal", "1", "retired", "--dsn", e.dsn},
		{"keys", "set-state", "internal", "2", "disabled"},
		{"kek", "rotate", "--from", "dev", "--to", "dev2"},
	} {
		e.fails(exitUsage, `refusing to .* without confirmation: stdin is not a terminal; pass --yes`, args...)
	}
	e.ok("keys", "set-state", "internal", "1", "retired", "--yes", "--dsn", e.dsn)
	e.fails(exitUsage, `stdin is not a terminal; pass --yes`, "keys", "schedule-deletion", "internal", "1", "--in", "10d", "--dsn", e.dsn)
	after := e.states()
	before["internal/1"] = "retired"
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("refused verbs changed states:\nbefore %v\nafter  %v", before, after)
	}
	if got := decodeJSON[[]versionJSON](t, e.ok("keys", "list", "--json")); got[0].KEK != "dev" {
		t.Errorf("refused kek rotate re-wrapped: %+v", got[0])
	}
}

func testKeysConfirmTerminal(t *testing.T, c *pgtest.Cluster) {
	master, tty := openPTY(t)
	e := newKeysEnv(t, c, localConfig)
	e.ok("keys", "init")
	e.ok("keys", "rotate", "internal")
	withStdin(t, tty)

	answer := func(s string) {
		if _, err := master.Write([]byte(s + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	answer("n")
	code, out, errOut := e.cli("keys", "set-state", "internal", "1", "retired", "--dsn", e.dsn)
	if code != exitRuntime || !strings.Contains(errOut, "About to set internal version 1 (decrypt_only) to retired") ||
		!strings.Contains(errOut, "aborted: not confirmed") {
		t.Fatalf("answer n: exit %d\n%s%s", code, out, errOut)
	}
	if st := e.states()["internal/1"]; st != "decrypt_only" {
		t.Fatalf("declined set-state changed the state to %s", st)
	}
	answer("yes")
	if code, out, errOut := e.cli("keys", "set-state", "internal", "1", "retired", "--dsn", e.dsn); code != 0 || !strings.Contains(out, "retired (was decrypt_only)") {
		t.Fatalf("answer yes: exit %d\n%s%s", code, out, errOut)
	}
}
