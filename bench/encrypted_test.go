package bench

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/pgcloak/pgcloak/config"
)

// pgcloak-enc's configuration must be one `pgcloak serve` accepts, with
// both columns encrypted under the chosen classification, only the bench
// role seeing plaintext and everyone else refused.
func TestEncryptionTOMLIsValid(t *testing.T) {
	for _, tt := range []struct {
		name, kek, class, kekType string
	}{
		{"softhsm", pkcs11KEKTOML("/usr/lib/softhsm/libsofthsm2.so", "pgcloak-bench"), "confidential", config.KEKPKCS11},
		{"local", localKEKTOML("/tmp/x/kek.key"), "internal", config.KEKLocal},
	} {
		extra := encryptionTOML("postgres://postgres@127.0.0.1:5499/postgres?sslmode=disable", tt.kek, tt.class, "bench")
		toml := pgcloakConfig(PgcloakOpts{Upstream: "127.0.0.1:5499", ExtraTOML: extra})
		cfg, err := config.Parse("bench.toml", []byte(toml))
		if err != nil {
			t.Fatalf("%s: %v\n%s", tt.name, err, toml)
		}
		k, ok := cfg.KEKs["bench"]
		c, ok2 := cfg.Classifications[tt.class]
		if !ok || !ok2 || k.Type != tt.kekType || c.KEK != "bench" || !slices.Equal(c.PlaintextRoles, []string{"bench"}) ||
			c.OnDenied != config.OnDeniedError || cfg.Keystore.DSN == "" {
			t.Errorf("%s: kek %+v, classification %+v, keystore %q", tt.name, k, c, cfg.Keystore.DSN)
		}
		var cols []string
		for _, col := range cfg.Columns {
			cols = append(cols, col.QualifiedName()+":"+col.Type+":"+col.Classification)
		}
		want := []string{"public.enc_accounts.email:text:" + tt.class, "public.enc_accounts.balance_secret:int4:" + tt.class}
		if !slices.Equal(cols, want) {
			t.Errorf("%s: columns %v, want %v", tt.name, cols, want)
		}
		// The PIN itself never goes into the file, only the variable's name.
		hasPINEnv := strings.Contains(toml, "pin_env = \""+hsmPINEnv+"\"")
		if strings.Contains(toml, "pin =") || hasPINEnv != (tt.kekType == config.KEKPKCS11) {
			t.Errorf("%s: PIN handling in\n%s", tt.name, toml)
		}
	}
	// The reason the local KEK goes with "internal": pgcloak refuses a
	// software KEK for confidential data.
	extra := encryptionTOML("postgres://postgres@127.0.0.1:5499/postgres", localKEKTOML("/tmp/x/kek.key"), "confidential", "bench")
	if _, err := config.Parse("bench.toml", []byte(pgcloakConfig(PgcloakOpts{Upstream: "127.0.0.1:5499", ExtraTOML: extra}))); err == nil {
		t.Error("a local KEK for confidential columns was accepted")
	}
}

// The script reads and writes both secret columns of one random row that
// exists, with values pgbench turns into literals (-M simple) or
// parameters, and is the same for both tables.
func TestAccountsScript(t *testing.T) {
	enc, plain := AccountsScript(EncTable), AccountsScript(PlainTable)
	if strings.ReplaceAll(enc, EncTable, PlainTable) != plain {
		t.Errorf("scripts differ beyond the table name:\n%s\n%s", enc, plain)
	}
	for _, want := range []string{
		`\set aid random(1, 10000)`,
		"SELECT abalance, email, balance_secret FROM enc_accounts WHERE aid = :aid;",
		"UPDATE enc_accounts SET email = :email, balance_secret = :balance WHERE aid = :aid;",
	} {
		if !strings.Contains(enc, want) {
			t.Errorf("script lacks %q:\n%s", want, enc)
		}
	}
	// Every variable used is set, and the statement count matches.
	set := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\\set (\w+) `).FindAllStringSubmatch(enc, -1) {
		set[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`:(\w+)`).FindAllStringSubmatch(enc, -1) {
		if !set[m[1]] {
			t.Errorf("variable :%s is never set", m[1])
		}
	}
	if n := strings.Count(enc, ";\n"); n != 2 {
		t.Errorf("%d statements", n)
	}
}

func TestAccountsRow(t *testing.T) {
	e1, b1, f1 := accountsRow(1)
	e2, b2, _ := accountsRow(AccountsRows)
	if e1 == e2 || b1 == b2 || !strings.HasSuffix(e1, "@example.com") || len(f1) != 84 {
		t.Errorf("rows %q %d %q / %q %d", e1, b1, f1, e2, b2)
	}
}
