package config

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// want is one expected problem: its line and a fragment of its message.
type want struct {
	line int
	msg  string
}

// problemsOf parses doc and returns its problems (nil when valid).
func problemsOf(t *testing.T, doc string) Problems {
	t.Helper()
	_, err := Parse("test.toml", []byte(doc))
	if err == nil {
		return nil
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse error is %T, want Problems: %v", err, err)
	}
	return ps
}

// checkProblems asserts that ps is exactly wants, in order.
func checkProblems(t *testing.T, ps Problems, wants []want) {
	t.Helper()
	ok := len(ps) == len(wants)
	for i := 0; ok && i < len(ps); i++ {
		ok = ps[i].Line == wants[i].line && strings.Contains(ps[i].Msg, wants[i].msg) && ps[i].File == "test.toml"
	}
	if !ok {
		t.Errorf("problems:\n%v\nwant:", ps)
		for _, w := range wants {
			t.Errorf("  line %d: …%s…", w.line, w.msg)
		}
	}
}

func TestParseProblems(t *testing.T) {
	const up = "[upstream]\naddr = \"127.0.0.1:5432\"\n" // lines 1-2
	const kekHSM = `
[kek.hsm]
type = "pkcs11"
module = "/m.so"
token_label = "t"
pin_env = "PIN"
key_label = "k"
` // lines +1..+6
	tests := []struct {
		name  string
		doc   string
		wants []want
	}{
		{"minimal is valid", up, nil},
		{"empty file", "", []want{{1, "[upstream] is missing"}}},
		{"syntax error", up + "[server\nlisten = 1\n", []want{{3, "invalid TOML"}}},
		{"duplicate key is a TOML error", up + "addr = \"x:1\"\n", []want{{3, "invalid TOML"}}},
		{"unknown section", up + "[serve]\nlisten = \"x:1\"\n", []want{{3, `[serve]: unknown section (did you mean "server"?)`}}},
		{"unknown top-level key", "listen = \"a:1\"\n" + up, []want{{1, "listen: unknown top-level key"}}},
		{"typo with suggestion", up + "[server]\nlisten = \"a:1\"\nshutdown_timout = \"3s\"\n",
			[]want{{5, `server.shutdown_timout: unknown key (did you mean "shutdown_timeout"?)`}}},
		{"unknown key lists known keys", up + "[log]\ncolour = true\n", []want{{4, "known keys: level, format"}}},
		{"unknown key in inline table", "upstream = { addr = \"a:1\", tsl = \"require\" }\n",
			[]want{{1, `upstream.tsl: unknown key (did you mean "tls"?)`}}},
		{"wrong type", up + "[server]\nlisten = 6432\n", []want{{4, "server.listen: must be a string, not an integer (6432)"}}},
		{"wrong type array", up + "[server]\nlisten = [\"a:1\"]\n", []want{{4, "must be a string, not an array"}}},
		{"section is not a table", "server = \"a:1\"\n" + up, []want{{1, "server: must be a table, not a string"}}},
		{"every problem reported", up + "[server]\nlisten = 1\nhandshake_timeout = \"soon\"\nmax_message_len = \"1 TB\"\nfoo = 1\n",
			[]want{{4, "server.listen: must be a string"}, {5, `invalid duration "soon"`}, {6, `invalid size "1 TB"`}, {7, "server.foo: unknown key"}}},
		{"listen port 0 allowed", up + "[server]\nlisten = \"127.0.0.1:0\"\n", nil},
		{"listen without port", up + "[server]\nlisten = \"127.0.0.1\"\n", []want{{4, "server.listen: \"127.0.0.1\" is not host:port"}}},
		{"listen port out of range", up + "[server]\nlisten = \":70000\"\n", []want{{4, "port must be a number in 0..65535"}}},
		{"tls_cert without tls_key", up + "[server]\ntls_cert = \"c.pem\"\n", []want{{4, "tls_cert: set without server.tls_key"}}},
		{"tls_key without tls_cert", up + "[server]\n\ntls_key = \"k.pem\"\n", []want{{5, "tls_key: set without server.tls_cert"}}},
		{"empty path", up + "[server]\ntls_cert = \"\"\ntls_key = \"k\"\n", []want{{4, "must not be empty"}, {5, "tls_key: set without"}}},
		{"zero duration", up + "[server]\nshutdown_timeout = \"0s\"\n", []want{{4, "must be greater than zero"}}},
		{"message length bounds", up + "[server]\nmax_message_len = 100\n", []want{{4, "server.max_message_len: 100 is outside"}}},
		{"event loop bounds", up + "[server]\nevent_loops = 99\n", []want{{4, "server.event_loops: 99 is outside -1..64"}}},
		{"event loop type", up + "[server]\nevent_loops = \"two\"\n", []want{{4, "server.event_loops"}}},
		{"upstream addr missing", "[upstream]\ntls = \"disable\"\n", []want{{1, "upstream.addr: required"}}},
		{"upstream addr without host", "[upstream]\naddr = \":5432\"\n", []want{{2, `":5432" has no host`}}},
		{"upstream port 0", "[upstream]\naddr = \"h:0\"\n", []want{{2, "port must be a number in 1..65535"}}},
		{"upstream tls enum", "[upstream]\naddr = \"h:1\"\ntls = \"on\"\n", []want{{3, `upstream.tls: "on" is not one of "disable", "prefer", "require" or "verify-full"`}}},
		{"tls_ca without verify-full", "[upstream]\naddr = \"h:1\"\ntls = \"require\"\ntls_ca = \"ca.pem\"\n",
			[]want{{4, `upstream.tls_ca: only used with tls = "verify-full"`}}},
		{"tls_server_name with default prefer", "[upstream]\naddr = \"h:1\"\ntls_server_name = \"db\"\n",
			[]want{{3, `tls is "prefer"`}}},
		{"verify-full with host", "[upstream]\naddr = \"db.example:5432\"\ntls = \"verify-full\"\n", nil},
		{"verify-full with ip only", "[upstream]\naddr = \"10.0.0.1:5432\"\ntls = \"verify-full\"\n", []want{{3, "upstream.tls: verify-full checks the server certificate against a host name, but upstream.addr has the IP address 10.0.0.1"}}},
		{"verify-full with ipv6 only", "[upstream]\naddr = \"[::1]:5432\"\ntls = \"verify-full\"\n", []want{{3, "IP address ::1"}}},
		{"verify-full with ip and server name", "[upstream]\naddr = \"10.0.0.1:5432\"\ntls = \"verify-full\"\ntls_server_name = \"db\"\n", nil},
		{"keystore password in URL", up + "[keystore]\ndsn = \"postgres://u:pw@h/db\"\n", []want{{4, "must not contain a password"}}},
		{"keystore password in key=value", up + "[keystore]\ndsn = \"host=h user=u password=pw\"\n", []want{{4, "must not contain a password"}}},
		{"keystore password in URL query", up + "[keystore]\ndsn = \"postgresql://u@h/db?password=pw\"\n", []want{{4, "must not contain a password"}}},
		{"keystore garbage", up + "[keystore]\ndsn = \"db\"\n", []want{{4, "not a connection string"}}},
		{"keystore password key", up + "[keystore]\ndsn = \"host=h\"\npassword = \"pw\"\n", []want{{5, "keystore.password: secrets must not be written"}}},
		{"valid pkcs11 kek", up + kekHSM, nil},
		{"kek without type", up + "[kek.x]\nkey_file = \"k\"\n", []want{{3, "kek.x.type: required"}}},
		{"kek bad type", up + "[kek.x]\ntype = \"vault\"\n", []want{{4, `kek.x.type: "vault" is not one of "pkcs11", "local" or "awskms"`}}},
		{"kek field of another type", up + "[kek.x]\ntype = \"local\"\nkey_file = \"k\"\nmodule = \"/m.so\"\n",
			[]want{{6, "kek.x.module: not used by a local kek (it belongs to type pkcs11)"}}},
		{"pkcs11 missing fields", up + "[kek.x]\ntype = \"pkcs11\"\nmodule = \"/m.so\"\n",
			[]want{{3, "token_label: required"}, {3, "pin_env: required"}, {3, "key_label: required"}}},
		{"inline pin refused", up + kekHSM + "pin = \"1234\"\n", []want{{10, "kek.hsm.pin: secrets must not be written in the configuration file; put the PIN in an environment variable and name that variable with pin_env"}}},
		{"inline pin of wrong type not echoed", up + kekHSM + "so_pin = 987654\n", []want{{10, "kek.hsm.so_pin: secrets must not"}}},
		{"pin in pin_env", up + strings.Replace(kekHSM, `"PIN"`, `"123456"`, 1), []want{{8, "must name an environment variable"}}},
		{"pin_env of wrong type hides value", up + strings.Replace(kekHSM, `"PIN"`, `123456`, 1), []want{{8, "pin_env: must be a string, not an integer"}}},
		{"aws secret refused", up + "[kek.k]\ntype = \"awskms\"\nkey_id = \"alias/x\"\nsecret_access_key = \"abc\"\n", []want{{6, "AWS credentials come from the AWS environment"}}},
		{"inline key refused", up + "[kek.k]\ntype = \"local\"\nkey = \"00ff\"\n", []want{{3, "key_file: required"}, {5, "kek.k.key: secrets must not"}}},
		{"awskms bad endpoint", up + "[kek.k]\ntype = \"awskms\"\nkey_id = \"alias/x\"\nendpoint = \"localhost:4566\"\n", []want{{6, "endpoint: must be an http(s) URL"}}},
		{"kek name", up + "[kek.\"my kek\"]\ntype = \"local\"\nkey_file = \"k\"\n", []want{{3, "a kek name may only contain"}}},
		{"kek is not a table", up + "[kek]\nhsm = \"x\"\n", []want{{4, "kek.hsm: must be a table"}}},
		{"unknown classification level", up + "[classification.secret]\nkek = \"x\"\n", []want{{3, `classification.secret: unknown classification level (want "public", "internal", "confidential" or "restricted")`}}},
		{"public with encryption fields", up + "[classification.public]\nkek = \"x\"\non_denied = \"null\"\n",
			[]want{{4, "classification.public.kek: public columns are not encrypted"}, {5, "classification.public.on_denied: public"}}},
		{"classification needs kek", up + "[keystore]\ndsn = \"host=h\"\n[classification.internal]\nrotate_after = \"30d\"\n", []want{{5, "classification.internal.kek: required"}}},
		{"classification unknown kek", up + "[keystore]\ndsn = \"host=h\"\n[classification.internal]\nkek = \"hsm\"\n", []want{{6, "no [kek.hsm] is defined"}}},
		{"confidential with local kek", up + "[keystore]\ndsn = \"host=h\"\n[kek.dev]\ntype = \"local\"\nkey_file = \"k\"\n[classification.confidential]\nkek = \"dev\"\n",
			[]want{{9, "confidential data needs an HSM- or KMS-held key"}}},
		{"restricted with local kek", up + "[keystore]\ndsn = \"host=h\"\n[kek.dev]\ntype = \"local\"\nkey_file = \"k\"\n[classification.restricted]\nkek = \"dev\"\n",
			[]want{{9, "restricted data needs an HSM- or KMS-held key"}}},
		{"internal with local kek", up + "[keystore]\ndsn = \"host=h\"\n[kek.dev]\ntype = \"local\"\nkey_file = \"k\"\n[classification.internal]\nkek = \"dev\"\n", nil},
		{"confidential with hsm kek", up + "[keystore]\ndsn = \"host=h\"\n" + kekHSM + "[classification.confidential]\nkek = \"hsm\"\n", nil},
		{"keystore required when encrypting", up + kekHSM + "[classification.confidential]\nkek = \"hsm\"\n", []want{{10, "keystore.dsn: required because [classification.confidential] encrypts"}}},
		{"rotation bounds", up + "[keystore]\ndsn = \"host=h\"\n" + kekHSM + "[classification.confidential]\nkek = \"hsm\"\nrotate_after_encryptions = 5_000_000_000\nrotate_after = \"-1d\"\n",
			[]want{{14, "rotate_after_encryptions: 5000000000 is outside 1..4294967296"}, {15, `invalid duration "-1d"`}}},
		{"rotation check interval", up + "[rotation]\ncheck_interval = \"250ms\"\n", nil},
		{"rotation check interval bounds", up + "[rotation]\ncheck_interval = \"10ms\"\n", []want{{4, "rotation.check_interval: 10ms is outside 100ms..24h0m0s"}}},
		{"rotation check interval too long", up + "[rotation]\ncheck_interval = \"2d\"\n", []want{{4, "rotation.check_interval: 48h0m0s is outside"}}},
		{"rotation check interval type", up + "[rotation]\ncheck_interval = 60\n", []want{{4, "rotation.check_interval: must be a duration string"}}},
		{"rotation check interval zero", up + "[rotation]\ncheck_interval = \"0s\"\n", []want{{4, "must be greater than zero"}}},
		{"rotation unknown key", up + "[rotation]\ninterval = \"1m\"\n", []want{{4, "rotation.interval: unknown key (known keys: check_interval, compromised_reads)"}}},
		{"compromised reads", up + "[rotation]\ncompromised_reads = \"allow\"\n", nil},
		{"compromised reads bad", up + "[rotation]\ncompromised_reads = \"maybe\"\n", []want{{4, "rotation.compromised_reads"}}},
		{"rotation typo", up + "[rotation]\ncheck_intervall = \"1m\"\n", []want{{4, `rotation.check_intervall: unknown key (did you mean "check_interval"?)`}}},
		{"rotation is not a table", "rotation = \"1m\"\n" + up, []want{{1, "rotation: must be a table"}}},
		{"plaintext roles", up + "[keystore]\ndsn = \"host=h\"\n" + kekHSM + "[classification.confidential]\nkek = \"hsm\"\nplaintext_roles = [\"app\", 7,\n  \"app\"]\n",
			[]want{{14, "plaintext_roles[2]: must be a string, not an integer"}}},
		{"plaintext roles duplicate", up + "[keystore]\ndsn = \"host=h\"\n" + kekHSM + "[classification.confidential]\nkek = \"hsm\"\nplaintext_roles = [\"app\", \"app\"]\n",
			[]want{{14, `"app" is listed twice`}}},
		{"column valid public", up + "[[column]]\ntable = \"t\"\ncolumn = \"c\"\ntype = \"text\"\nclassification = \"public\"\n", nil},
		{"column missing everything", up + "\n[[column]]\nsearch = \"equality\"\n",
			[]want{{4, "column[1].table: required"}, {4, "column[1].column: required"}, {4, "column[1].type: required"}, {4, "column[1].classification: required"}}},
		{"column written as a table", up + "[column]\ntable = \"t\"\n", []want{{3, "write [[column]]"}}},
		{"column bad values", up + "[[column]]\ntable = \"a.b.c\"\ncolumn = \"x.y\"\ntype = \"int4(3)\"\nclassification = \"secret\"\nsearch = \"range\"\n",
			[]want{{4, `column[1].table: "a.b.c": give "schema.table" or "table"`}, {5, `column[1].column: "x.y": give the bare column name`},
				{6, "int4 takes no modifier"}, {7, `column[1].classification: "secret" is not one of`}, {8, `column[1].search: "range" is not one of "none" or "equality"`}}},
		{"column undefined classification", up + "[[column]]\ntable = \"t\"\ncolumn = \"c\"\ntype = \"text\"\nclassification = \"internal\"\n",
			[]want{{7, `column[1].classification: "internal" is not defined: add [classification.internal]`}}},
		{"duplicate column across spellings", up + "[[column]]\ntable = \"public.t\"\ncolumn = \"c\"\ntype = \"text\"\nclassification = \"public\"\n" +
			"[[column]]\ntable = \"T\"\ncolumn = \"C\"\ntype = \"text\"\nclassification = \"public\"\n",
			[]want{{8, "column[2]: public.t.c is already configured at line 3"}}},
		{"quoted identifiers keep case", up + "[[column]]\ntable = \"public.t\"\ncolumn = \"c\"\ntype = \"text\"\nclassification = \"public\"\n" +
			"[[column]]\ntable = \"T\"\ncolumn = '\"C\"'\ntype = \"text\"\nclassification = \"public\"\n", nil},
		{"public search", up + "[[column]]\ntable = \"t\"\ncolumn = \"c\"\ntype = \"text\"\nclassification = \"public\"\nsearch = \"equality\"\n",
			[]want{{8, "public columns are not encrypted and need no blind index"}}},
		{"array of inline column tables", "column = [\n  { table = \"t\", column = \"c\", type = \"text\", classification = \"public\" },\n  { table = \"t\", column = \"d\", type = \"text\", classification = \"public\", colour = 1 },\n]\n" + up,
			[]want{{3, "column[2].colour: unknown key"}}},
		{"log enums", up + "[log]\nlevel = \"loud\"\nformat = \"xml\"\n", []want{{4, `log.level: "loud" is not one of`}, {5, `log.format: "xml" is not one of "json" or "console"`}}},
		{"dotted keys", "upstream.addr = \"h:1\"\nserver.listen = 5\n", []want{{2, "server.listen: must be a string"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkProblems(t, problemsOf(t, tc.doc), tc.wants)
		})
	}
}

func TestEncryptedColumnsAndContexts(t *testing.T) {
	doc := `[upstream]
addr = "h:1"
[keystore]
dsn = "host=h"
[kek.hsm]
type = "pkcs11"
module = "/m.so"
token_label = "t"
pin_env = "PIN"
key_label = "k"
[classification.confidential]
kek = "hsm"
[[column]]
table = "t"
column = "a"
type = "json"
classification = "confidential"
search = "equality"
[[column]]
table = "t"
column = "b"
type = "text"
classification = "confidential"
context = "public.t.a"
`
	checkProblems(t, problemsOf(t, doc), []want{
		{18, "json has no equality operator"},
		{24, `column[2].context: "public.t.a" is already the context of column[1] (line 13)`},
	})
}

// TestBadExample checks testdata/bad.toml against its own "# want:" comments:
// every marked line must have a problem containing the text after "want:",
// and no other line may have one.
func TestBadExample(t *testing.T) {
	const file = "testdata/bad.toml"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	wantRE := regexp.MustCompile(`# want: (.*)$`)
	wants := map[int][]string{}
	for i, line := range strings.Split(string(data), "\n") {
		if m := wantRE.FindStringSubmatch(line); m != nil {
			for _, w := range strings.Split(m[1], "; ") {
				wants[i+1] = append(wants[i+1], strings.TrimSuffix(strings.TrimSpace(w), "..."))
			}
		}
	}
	if len(wants) < 10 {
		t.Fatalf("only %d annotated lines in %s", len(wants), file)
	}
	_, err = Parse(file, data)
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Parse(%s) = %v, want Problems", file, err)
	}
	got := map[int][]string{}
	for _, p := range ps {
		if p.File != file {
			t.Errorf("problem names file %q, want %q", p.File, file)
		}
		got[p.Line] = append(got[p.Line], p.Msg)
	}
	for line, ws := range wants {
		for _, w := range ws {
			found := false
			for _, m := range got[line] {
				found = found || strings.Contains(m, w)
			}
			if !found {
				t.Errorf("%s:%d: no problem containing %q (got %q)", file, line, w, got[line])
			}
		}
	}
	for line, ms := range got {
		if _, ok := wants[line]; !ok {
			t.Errorf("%s:%d: unexpected problem(s) %q", file, line, ms)
		}
	}
}

func TestExample(t *testing.T) {
	const file = "testdata/example.toml"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(file, data)
	if err != nil {
		t.Fatalf("Parse(%s):\n%v", file, err)
	}
	if got, want := cfg.Server.TLSCert, filepath.Join("testdata", "server.crt"); got != want {
		t.Errorf("TLSCert = %q, want %q (relative to the file)", got, want)
	}
	if cfg.Server.MaxMessageLen != 64<<20 {
		t.Errorf("MaxMessageLen = %d, want 64 MiB", cfg.Server.MaxMessageLen)
	}
	if cfg.Upstream.TLSCA != "/etc/pgcloak/db-ca.crt" {
		t.Errorf("absolute TLSCA changed to %q", cfg.Upstream.TLSCA)
	}
	if k := cfg.KEKs["hsm"]; k.Type != KEKPKCS11 || k.PINEnv != "PGCLOAK_HSM_PIN" || !k.HSMBacked() {
		t.Errorf("kek.hsm = %+v", k)
	}
	if k := cfg.KEKs["dev"]; k.HSMBacked() || k.KeyFile != filepath.Join("testdata", "dev-kek.key") {
		t.Errorf("kek.dev = %+v", k)
	}
	c := cfg.Classifications[LevelConfidential]
	if c.KEK != "hsm" || c.RotateAfter != 90*24*time.Hour || c.RotateAfterEncryptions != 1e9 || c.OnDenied != OnDeniedCiphertext {
		t.Errorf("confidential = %+v", c)
	}
	if r := cfg.Classifications[LevelRestricted]; r.RotateAfterEncryptions != DefaultRotateAfterEncryptions {
		t.Errorf("restricted default rotate_after_encryptions = %d", r.RotateAfterEncryptions)
	}
	if cfg.Rotation.CheckInterval != time.Minute {
		t.Errorf("rotation.check_interval = %v, want 1m", cfg.Rotation.CheckInterval)
	}
	if p := cfg.Classifications[LevelPublic]; p.Encrypted() || p.KEK != "" {
		t.Errorf("public = %+v", p)
	}
	wantCols := []Column{
		{"public", "customers", "ssn", "text", LevelConfidential, SearchEquality, "public.customers.ssn"},
		{"public", "customers", "email", "varchar(320)", LevelInternal, SearchNone, "public.customers.email"},
		{"billing", "cards", "pan", "varchar(19)", LevelRestricted, SearchNone, "billing.cards.card_number"},
		{"billing", "invoices", "amount", "numeric(12,2)", LevelConfidential, SearchNone, "billing.invoices.amount"},
		{"billing", "invoices", "issued_at", "timestamptz(3)", LevelPublic, SearchNone, "billing.invoices.issued_at"},
	}
	if len(cfg.Columns) != len(wantCols) {
		t.Fatalf("%d columns, want %d", len(cfg.Columns), len(wantCols))
	}
	for i, w := range wantCols {
		if cfg.Columns[i] != w {
			t.Errorf("column %d = %+v, want %+v", i+1, cfg.Columns[i], w)
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Parse("pgcloak.toml", []byte("[upstream]\naddr = \"127.0.0.1:5432\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Server
	if s.Listen != DefaultListen || s.ShutdownTimeout != 30*time.Second || s.HandshakeTimeout != 15*time.Second ||
		s.MaxMessageLen != 1<<30+1<<20 || s.TLSCert != "" {
		t.Errorf("server defaults = %+v", s)
	}
	if cfg.Upstream.TLS != "prefer" || cfg.Log.Level != "info" || cfg.Log.Format != "" {
		t.Errorf("defaults: upstream %+v log %+v", cfg.Upstream, cfg.Log)
	}
	cfg, err = Parse("x.toml", []byte(`[upstream]
addr = "h:1"
[keystore]
dsn = "host=h"
[kek.k]
type = "awskms"
key_id = "alias/k"
[classification.internal]
kek = "k"
`))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Classifications[LevelInternal]
	if c.RotateAfter != DefaultRotateAfter || c.RotateAfterEncryptions != 1<<30 || c.OnDenied != OnDeniedError || len(c.PlaintextRoles) != 0 {
		t.Errorf("classification defaults = %+v", c)
	}
	if cfg.Rotation.CheckInterval != time.Minute {
		t.Errorf("rotation.check_interval default = %v, want 1m", cfg.Rotation.CheckInterval)
	}
}

// The key-management policy rotates every 30 to 90 days, more often for
// more sensitive data: each level gets its own rotate_after default, and
// every level the same count limit, a quarter of the AES-GCM bound.
func TestRotationDefaultsPerLevel(t *testing.T) {
	cfg, err := Parse("x.toml", []byte(`[upstream]
addr = "h:1"
[keystore]
dsn = "host=h"
[kek.k]
type = "awskms"
key_id = "alias/k"
[classification.public]
[classification.internal]
kek = "k"
[classification.confidential]
kek = "k"
[classification.restricted]
kek = "k"
`))
	if err != nil {
		t.Fatal(err)
	}
	const day = 24 * time.Hour
	want := map[string]time.Duration{LevelInternal: 90 * day, LevelConfidential: 60 * day, LevelRestricted: 30 * day}
	prev := time.Duration(1 << 62)
	for _, level := range Levels()[1:] {
		c := cfg.Classifications[level]
		if c.RotateAfter != want[level] || DefaultRotateAfterFor(level) != want[level] {
			t.Errorf("%s: rotate_after default %v (DefaultRotateAfterFor %v), want %v", level, c.RotateAfter, DefaultRotateAfterFor(level), want[level])
		}
		if c.RotateAfter < 30*day || c.RotateAfter > 90*day || c.RotateAfter >= prev {
			t.Errorf("%s: rotate_after default %v is outside the policy (30 to 90 days, shorter for higher levels)", level, c.RotateAfter)
		}
		prev = c.RotateAfter
		if c.RotateAfterEncryptions != DefaultRotateAfterEncryptions || c.RotateAfterEncryptions > maxEncryptionsPerKey/4 {
			t.Errorf("%s: rotate_after_encryptions default %d", level, c.RotateAfterEncryptions)
		}
	}
	if p := cfg.Classifications[LevelPublic]; p.RotateAfter != 0 || p.RotateAfterEncryptions != 0 || DefaultRotateAfterFor(LevelPublic) != 0 {
		t.Errorf("public has rotation settings: %+v", p)
	}
}

func TestLoadChecksFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "server.crt"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "ca"), 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pgcloak.toml")
	doc := `[server]
tls_cert = "server.crt"
tls_key = "server.key"
[upstream]
addr = "db:5432"
tls = "verify-full"
tls_ca = "ca"
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("Load = %v, want Problems", err)
	}
	if len(ps) != 2 || ps[0].Line != 3 || !strings.Contains(ps[0].Msg, "server.tls_key: cannot read "+filepath.Join(dir, "server.key")) ||
		ps[1].Line != 7 || !strings.Contains(ps[1].Msg, "is a directory") || ps[0].File != path {
		t.Errorf("problems:\n%v", ps)
	}
	// The same document parsed in memory does not look at the disk.
	if _, err := Parse(path, []byte(doc)); err != nil {
		t.Errorf("Parse: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil || errors.As(err, &ps) {
		t.Errorf("Load(missing) = %v, want a plain error", err)
	}
}

func TestProblemsError(t *testing.T) {
	ps := Problems{{File: "a.toml", Line: 3, Msg: "x"}, {File: "a.toml", Line: 10, Msg: "y: z"}}
	if got, want := ps.Error(), "a.toml:3: x\na.toml:10: y: z"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var err error = ps
	if err.Error() != ps.Error() {
		t.Error("Problems does not behave as an error")
	}
}

func TestProblemsSortedByLine(t *testing.T) {
	// validate runs after decoding, so its problem (line 3) is found after
	// the decoding problem (line 5); the result must still be in line order.
	ps := problemsOf(t, "[upstream]\naddr = \"h:1\"\ntls_ca = \"x\"\n\nfoo = 1\n")
	checkProblems(t, ps, []want{{3, "tls_ca: only used with"}, {5, "upstream.foo: unknown key"}})
}

// FuzzParse: no input may panic, and a rejected input always comes with
// problems that carry a line.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"example.toml", "minimal.toml", "bad.toml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("[[column]]\n[column.x]\na=1\n[[column]]\n"))
	f.Add([]byte("kek = [1]\nclassification.public = {kek = 'x'}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("f.toml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		var ps Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("error %v is not a non-empty Problems", err)
		}
		for _, p := range ps {
			if p.Line < 1 || p.File != "f.toml" || p.Msg == "" {
				t.Fatalf("bad problem %+v", p)
			}
		}
	})
}

func TestCompromisedReads(t *testing.T) {
	const up = "[upstream]\naddr = \"127.0.0.1:5432\"\n"
	for _, c := range []struct{ text, want string }{
		{up, CompromisedReadsRefuse},
		{up + "[rotation]\ncompromised_reads = \"allow\"\n", CompromisedReadsAllow},
		{up + "[rotation]\ncompromised_reads = \"refuse\"\n", CompromisedReadsRefuse},
	} {
		cfg, err := Parse("t.toml", []byte(c.text))
		if err != nil {
			t.Fatalf("%q: %v", c.text, err)
		}
		if cfg.Rotation.CompromisedReads != c.want {
			t.Errorf("%q: compromised_reads %q, want %q", c.text, cfg.Rotation.CompromisedReads, c.want)
		}
	}
}
