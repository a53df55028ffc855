package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/keyring"
)

func parseConfig(t *testing.T, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(t.TempDir(), "pgcloak.toml"), []byte(text))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

const specsConfig = `[upstream]
addr = "127.0.0.1:5432"

[keystore]
dsn = "postgres://pgcloak@127.0.0.1:5432/app"

[kek.hsm]
type = "pkcs11"
module = "/nonexistent/libsofthsm2.so"
token_label = "t"
pin_env = "PIN"
key_label = "k"

[kek.kms]
type = "awskms"
key_id = "alias/pgcloak"
region = "eu-west-1"

[kek.dev]
type = "local"
key_file = "dev.key"

[classification.public]

[classification.internal]
kek = "dev"

[classification.confidential]
kek = "hsm"

[classification.restricted]
kek = "kms"

[[column]]
table = "t"
column = "a"
type = "text"
classification = "confidential"
search = "equality"

[[column]]
table = "t"
column = "b"
type = "text"
classification = "internal"

[[column]]
table = "t"
column = "c"
type = "text"
classification = "public"
`

func fmtSpecs(specs []keyring.KeyringSpec) string {
	var b strings.Builder
	for _, s := range specs {
		fmt.Fprintf(&b, "%s/%s/%s/%s ", s.Name, s.Purpose, s.Classification, s.KEK)
	}
	return strings.TrimSpace(b.String())
}

func TestRingSpecs(t *testing.T) {
	cfg := parseConfig(t, specsConfig)
	const rings = "internal/encryption/internal/dev confidential/encryption/confidential/hsm " +
		"confidential:search/search/confidential/hsm restricted/encryption/restricted/kms "
	tests := []struct {
		name     string
		existing map[string]keyring.Keyring
		want     string
	}{
		// The audit key goes under the HSM/KMS key protecting the most
		// sensitive classification.
		{"fresh store", nil, rings + "audit/audit//kms"},
		// An existing audit ring keeps its KEK (kek rotate is not undone)…
		{"audit ring exists", map[string]keyring.Keyring{"audit": {Name: "audit", KEK: "hsm"}}, rings + "audit/audit//hsm"},
		// … unless that KEK is no longer configured.
		{"audit KEK gone", map[string]keyring.Keyring{"audit": {Name: "audit", KEK: "old"}}, rings + "audit/audit//kms"},
	}
	for _, tc := range tests {
		if got := fmtSpecs(ringSpecs(cfg, tc.existing)); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.want)
		}
	}

	// HSM before software, whatever the names; pkcs11 before awskms when
	// they protect the same level.
	cfg.KEKs["aaa"] = config.KEK{Name: "aaa", Type: config.KEKLocal}
	cfg.Classifications["restricted"] = config.Classification{Name: "restricted", KEK: "hsm"}
	if got := auditKEK(cfg, nil); got != "hsm" {
		t.Errorf("auditKEK = %s, want hsm", got)
	}
	cfg.Classifications["restricted"] = config.Classification{Name: "restricted", KEK: "kms"}
	cfg.Classifications["confidential"] = config.Classification{Name: "confidential", KEK: "kms"}
	if got := auditKEK(cfg, nil); got != "kms" {
		t.Errorf("auditKEK = %s, want kms (protects restricted)", got)
	}
	delete(cfg.Classifications, "restricted")
	delete(cfg.Classifications, "confidential")
	if got := auditKEK(cfg, nil); got != "hsm" {
		t.Errorf("auditKEK with no HSM classification = %s, want hsm (pkcs11 first)", got)
	}

	// Only software keys: the one in use wins over an unused one.
	dev := parseConfig(t, "[upstream]\naddr = \"127.0.0.1:5432\"\n[keystore]\ndsn = \"postgres://x@h/db\"\n"+
		"[kek.a]\ntype = \"local\"\nkey_file = \"a.key\"\n[kek.b]\ntype = \"local\"\nkey_file = \"b.key\"\n"+
		"[classification.internal]\nkek = \"b\"\n")
	if got := fmtSpecs(ringSpecs(dev, nil)); got != "internal/encryption/internal/b audit/audit//b" {
		t.Errorf("local only: %s", got)
	}
	// No KEK, nothing encrypted: no key ring at all.
	if got := ringSpecs(parseConfig(t, validConfig), nil); len(got) != 0 {
		t.Errorf("no KEK: %s", fmtSpecs(got))
	}
}

func TestParseWindow(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"14d": 14 * 24 * time.Hour, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour,
		"336h": 336 * time.Hour, "6d23h": 6*24*time.Hour + 23*time.Hour, "1.5d": 36 * time.Hour,
	} {
		if got, err := parseWindow(in); err != nil || got != want {
			t.Errorf("parseWindow(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0d", "-7d", "14", "two weeks", "d", "1e3d", "14dd", "+7d", "7d-1h"} {
		if got, err := parseWindow(in); err == nil {
			t.Errorf("parseWindow(%q) = %v, want an error", in, got)
		}
	}
}

// TestKeysConfigErrors: problems found before the key store is contacted
// are usage errors (exit 2).
func TestKeysConfigErrors(t *testing.T) {
	dir := t.TempDir()
	noDSN := writeFile(t, dir, "nodsn.toml", validConfig)
	for _, args := range [][]string{{"keys", "list"}, {"keys", "init"}, {"audit", "verify"}, {"audit", "tail"}} {
		code, _, errOut := runCLI(t, append([]string{"--config", noDSN}, args...)...)
		if code != exitUsage || !strings.Contains(errOut, "[keystore] dsn is not set") {
			t.Errorf("%v without a dsn: exit %d, %s", args, code, errOut)
		}
	}
	module := writeFile(t, dir, "module.so", "")
	pin := writeFile(t, dir, "pin.toml", fmt.Sprintf(`[upstream]
addr = "127.0.0.1:5432"
[keystore]
dsn = "postgres://postgres@127.0.0.1:1/none?sslmode=disable"
[kek.hsm]
type = "pkcs11"
module = %q
token_label = "t"
pin_env = "PGCLOAK_TEST_UNSET_PIN"
key_label = "k"
[classification.confidential]
kek = "hsm"
`, module))
	t.Setenv("PGCLOAK_TEST_UNSET_PIN", "")
	code, _, errOut := runCLI(t, "--config", pin, "keys", "init")
	if code != exitUsage || !strings.Contains(errOut, "PGCLOAK_TEST_UNSET_PIN") {
		t.Errorf("keys init without the PIN: exit %d, %s", code, errOut)
	}
	// Read-only verbs open no KEK: they get as far as the (absent) key store.
	code, _, errOut = runCLI(t, "--config", pin, "keys", "list")
	if code != exitRuntime || !strings.Contains(errOut, "connect") {
		t.Errorf("keys list with an unreachable key store: exit %d, %s", code, errOut)
	}
	for _, tc := range []struct {
		args []string
		re   string
	}{
		{[]string{"keys", "set-state", "r", "1"}, "expected \"<state>\""},
		{[]string{"keys", "set-state", "r", "x", "retired"}, "<version>"},
		{[]string{"keys", "schedule-deletion", "r", "1"}, "missing flags: --in"},
		{[]string{"kek", "rotate", "--from", "a"}, "missing flags: --to"},
	} {
		code, _, errOut := runCLI(t, append([]string{"--config", pin}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errOut, tc.re) {
			t.Errorf("%v: exit %d, %s", tc.args, code, errOut)
		}
	}
}
