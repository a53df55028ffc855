package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgcloak/pgcloak/internal/hsmtest"
)

func TestKEKCreatePKCS11(t *testing.T) {
	tok := hsmtest.New(t, "pgcloak-kek-test")
	t.Setenv("TEST_HSM_PIN", tok.PIN)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "pgcloak.toml", `[upstream]
addr = "127.0.0.1:5432"

[kek.hsm]
type = "pkcs11"
module = "`+tok.Module+`"
token_label = "`+tok.Label+`"
pin_env = "TEST_HSM_PIN"
key_label = "pgcloak-kek"
`)
	code, out, errOut := runCLI(t, "--config", cfg, "kek", "create")
	if code != 0 {
		t.Fatalf("kek create: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"created kek hsm", "sensitive    yes", "extractable  no", "bits         256"} {
		if !strings.Contains(out, want) {
			t.Errorf("kek create output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out+errOut, tok.PIN) {
		t.Fatal("the PIN was printed")
	}

	// A second create must refuse: replacing a KEK would orphan every DEK.
	code, _, errOut = runCLI(t, "--config", cfg, "kek", "create", "hsm")
	if code == 0 || !strings.Contains(errOut, "already has a key") {
		t.Fatalf("second kek create: exit %d, %s", code, errOut)
	}

	code, out, errOut = runCLI(t, "--config", cfg, "kek", "info")
	if code != 0 || !strings.Contains(out, "extractable  no") || !strings.Contains(out, "never-extractable yes") {
		t.Fatalf("kek info: exit %d\n%s%s", code, out, errOut)
	}

	// Without the PIN in the environment: a usage error naming the variable.
	os.Unsetenv("TEST_HSM_PIN")
	code, _, errOut = runCLI(t, "--config", cfg, "kek", "info")
	if code != exitUsage || !strings.Contains(errOut, "TEST_HSM_PIN") {
		t.Fatalf("kek info without PIN: exit %d, %s", code, errOut)
	}
}

func TestKEKCreateLocal(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "pgcloak.toml", `[upstream]
addr = "127.0.0.1:5432"

[kek.dev]
type = "local"
key_file = "dev.key"
`)
	code, out, errOut := runCLI(t, "--config", cfg, "kek", "create", "dev")
	if code != 0 {
		t.Fatalf("kek create: exit %d\n%s%s", code, out, errOut)
	}
	st, err := os.Stat(filepath.Join(dir, "dev.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	key, _ := os.ReadFile(filepath.Join(dir, "dev.key"))
	if strings.Contains(out+errOut, strings.TrimSpace(string(key))) {
		t.Fatal("the key was printed")
	}
	if code, _, _ := runCLI(t, "--config", cfg, "kek", "create", "dev"); code == 0 {
		t.Fatal("kek create overwrote an existing key file")
	}
	if code, out, errOut := runCLI(t, "--config", cfg, "kek", "info", "dev"); code != 0 || !strings.Contains(out, "usable") {
		t.Fatalf("kek info: exit %d %s%s", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, "--config", cfg, "kek", "info", "nope"); code != exitUsage || !strings.Contains(errOut, "no [kek.nope]") {
		t.Fatalf("kek info of an unknown name: exit %d %s", code, errOut)
	}
}
