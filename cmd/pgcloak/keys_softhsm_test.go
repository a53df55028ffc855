package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgcloak/pgcloak/internal/hsmtest"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// hsmConfig: two KEKs on a SoftHSM2 token (hsm, hsm2) and a local one;
// confidential under hsm with a search column, internal under dev. The
// format takes the DSN, the module, the token label and confidential's
// KEK.
const hsmConfig = `[upstream]
addr = "127.0.0.1:5432"

[keystore]
dsn = "%[1]s"

[kek.hsm]
type = "pkcs11"
module = "%[2]s"
token_label = "%[3]s"
pin_env = "TEST_KEYS_HSM_PIN"
key_label = "pgcloak-kek"

[kek.hsm2]
type = "pkcs11"
module = "%[2]s"
token_label = "%[3]s"
pin_env = "TEST_KEYS_HSM_PIN"
key_label = "pgcloak-kek-2"

[kek.dev]
type = "local"
key_file = "dev.key"

[classification.internal]
kek = "dev"

[classification.confidential]
kek = "%[4]s"

[[column]]
table = "public.people"
column = "ssn"
type = "text"
classification = "confidential"
search = "equality"

[[column]]
table = "public.people"
column = "email"
type = "text"
classification = "internal"
`

// testKeysSoftHSM: KEKs on a real SoftHSM2 token created with `kek
// create`; the audit key ring goes under the HSM key; `kek rotate` moves
// every DEK to a second HSM key, after which the configuration must name
// it, and the audit checkpoints still verify.
func testKeysSoftHSM(t *testing.T, c *pgtest.Cluster) {
	tok := hsmtest.New(t, "pgcloak-keys-test")
	if tok == nil {
		return
	}
	t.Setenv("TEST_KEYS_HSM_PIN", tok.PIN)
	conf := func(kek string) string {
		// Fill everything but the DSN, which newKeysEnv/writeConfig add.
		return strings.NewReplacer("%[2]s", tok.Module, "%[3]s", tok.Label, "%[4]s", kek, "%[1]s", "%[1]s").Replace(hsmConfig)
	}
	e := newKeysEnv(t, c, conf("hsm"))
	e.ok("kek", "create", "hsm")
	e.ok("kek", "create", "hsm2")

	type initJSON struct {
		Keyrings []struct {
			Name   string `json:"name"`
			KEK    string `json:"kek"`
			Status string `json:"status"`
		} `json:"keyrings"`
	}
	var in initJSON
	if err := json.Unmarshal([]byte(e.ok("keys", "init", "--json")), &in); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range in.Keyrings {
		got[r.Name] = r.KEK + "/" + r.Status
	}
	want := map[string]string{"internal": "dev/created", "confidential": "hsm/created",
		"confidential:search": "hsm/created", "audit": "hsm/created"}
	if len(got) != len(want) {
		t.Fatalf("keys init: %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("keys init: %s = %s, want %s", k, got[k], v)
		}
	}
	e.ok("keys", "rotate", "confidential")

	out := e.ok("kek", "rotate", "--from", "hsm", "--to", "hsm2", "--yes")
	if !strings.Contains(out, "re-wrapped 4 key version(s) from KEK hsm to KEK hsm2") ||
		!strings.Contains(out, `now set kek = "hsm2" in [classification.confidential]`) {
		t.Errorf("kek rotate:\n%s", out)
	}
	for _, v := range decodeJSON[[]versionJSON](t, e.ok("keys", "list", "--json")) {
		want := "hsm2"
		if v.Keyring == "internal" {
			want = "dev"
		}
		if v.KEK != want || (want == "hsm2" && v.RewrappedAt.IsZero()) {
			t.Errorf("after kek rotate: %s/%d wrapped by %s (rewrapped %v), want %s", v.Keyring, v.Version, v.KEK, v.RewrappedAt, want)
		}
	}
	// The file still names hsm: refused until it is updated.
	e.fails(exitRefused, `confidential is wrapped by KEK "hsm2", not "hsm"`, "keys", "init")
	e.writeConfig(conf("hsm2"))
	if out := e.ok("keys", "init"); !strings.Contains(out, "0 key ring(s) created, 0 updated, 4 unchanged") {
		t.Errorf("keys init after the configuration names hsm2:\n%s", out)
	}
	// Checkpoints are now MACed under the audit DEK as unwrapped by hsm2.
	e.ok("keys", "rotate", "confidential:search")
	if out := e.ok("audit", "verify"); !strings.HasPrefix(out, "audit chain intact: ") {
		t.Errorf("audit verify:\n%s", out)
	}
	// Re-wrapping from a KEK that wraps nothing any more is a no-op.
	if out := e.ok("kek", "rotate", "--from", "hsm", "--to", "hsm2", "--yes"); !strings.Contains(out, "re-wrapped 0 key version(s)") {
		t.Errorf("second kek rotate:\n%s", out)
	}
	e.fails(exitUsage, `no \[kek.nope\] section`, "kek", "rotate", "--from", "hsm", "--to", "nope", "--yes")
	e.fails(exitUsage, `--from and --to name the same KEK`, "kek", "rotate", "--from", "hsm", "--to", "hsm", "--yes")

	all := strings.Join([]string{e.ok("keys", "list"), e.ok("audit", "tail", "-n", "100"), e.ok("keys", "export-wrapped")}, "\n")
	if strings.Contains(all, tok.PIN) {
		t.Fatal("the PIN was printed")
	}
}
