package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/hsm/local"
	"github.com/pgcloak/pgcloak/internal/pgtest"
	"github.com/pgcloak/pgcloak/keyring"
)

// TestKeyStoreCLI runs the key-management verbs (keys …, kek rotate,
// audit …) against one throwaway PostgreSQL cluster; each subtest gets its
// own key-store database and configuration.
func TestKeyStoreCLI(t *testing.T) {
	c := pgtest.New(t, pgtest.Opts{})
	if c == nil {
		return
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, c *pgtest.Cluster)
	}{
		{"InitIdempotent", testKeysInit},
		{"RotateAndList", testKeysRotateList},
		{"Lifecycle", testKeysLifecycle},
		{"ExportWrapped", testKeysExportWrapped},
		{"ConfirmNonTerminal", testKeysConfirmNonTerminal},
		{"ConfirmTerminal", testKeysConfirmTerminal},
		{"AuditVerifyTamper", testAuditVerifyTamper},
		{"AuditTail", testAuditTail},
		{"SoftHSM", testKeysSoftHSM},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, c) })
	}
}

// localConfig is a configuration with one local KEK ("dev"), the internal
// classification under it and one column searched by equality. %s is the
// key-store DSN.
const localConfig = `[upstream]
addr = "127.0.0.1:5432"

[keystore]
dsn = "%s"

[kek.dev]
type = "local"
key_file = "dev.key"

[classification.internal]
kek = "dev"

[[column]]
table = "public.people"
column = "email"
type = "text"
classification = "internal"
search = "equality"
`

var keystoreDBs atomic.Int64

// keysEnv is one subtest's key-store database and configuration file.
type keysEnv struct {
	t   *testing.T
	ctx context.Context
	dir string
	dsn string
	cfg string
}

// newKeysEnv creates a database and writes conf (a format with one %s for
// the DSN) as pgcloak.toml in a temp dir with a fresh local key dev.key.
func newKeysEnv(t *testing.T, c *pgtest.Cluster, conf string) *keysEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	db := fmt.Sprintf("keys_cli_%d", keystoreDBs.Add(1))
	if err := c.CreateDatabase(ctx, db, ""); err != nil {
		t.Fatal(err)
	}
	e := &keysEnv{t: t, ctx: ctx, dir: t.TempDir(), dsn: c.DSN("postgres", "", db)}
	if err := local.Generate(filepath.Join(e.dir, "dev.key")); err != nil {
		t.Fatal(err)
	}
	e.writeConfig(conf)
	return e
}

func (e *keysEnv) writeConfig(conf string) {
	e.t.Helper()
	e.cfg = writeFile(e.t, e.dir, "pgcloak.toml", fmt.Sprintf(conf, e.dsn))
}

// cli runs pgcloak --config <env's file> args….
func (e *keysEnv) cli(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	return runCLI(e.t, append([]string{"--config", e.cfg}, args...)...)
}

// ok runs the command and fails the test unless it exits 0.
func (e *keysEnv) ok(args ...string) string {
	e.t.Helper()
	code, out, errOut := e.cli(args...)
	if code != 0 {
		e.t.Fatalf("pgcloak %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fails runs the command and fails the test unless it exits with code and
// stderr matches re. It returns stdout + stderr.
func (e *keysEnv) fails(code int, re string, args ...string) string {
	e.t.Helper()
	got, out, errOut := e.cli(args...)
	if got != code || !regexp.MustCompile(re).MatchString(errOut) {
		e.t.Fatalf("pgcloak %s: exit %d, want %d and stderr matching %q\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), got, code, re, out, errOut)
	}
	return out + errOut
}

// exec runs SQL as the superuser on the env's database.
func (e *keysEnv) exec(sql ...string) {
	e.t.Helper()
	conn, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, q := range sql {
		if _, err := conn.Exec(e.ctx, q); err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
	}
}

// decodeJSON parses s into a T or fails the test.
func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
	if dec.More() {
		t.Fatalf("trailing data after the JSON value:\n%s", s)
	}
	return v
}

// states maps "ring/version" to state from `keys list --json`.
func (e *keysEnv) states() map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, v := range decodeJSON[[]versionJSON](e.t, e.ok("keys", "list", "--json")) {
		out[fmt.Sprintf("%s/%d", v.Keyring, v.Version)] = v.State
	}
	return out
}

func testKeysInit(t *testing.T, c *pgtest.Cluster) {
	e := newKeysEnv(t, c, localConfig)
	for _, args := range [][]string{{"keys", "list"}, {"keys", "rotate", "internal"}, {"audit", "verify"}} {
		e.fails(exitUsage, `no key store yet \(schema pgcloak\): run pgcloak keys init`, args...)
	}
	out := e.ok("keys", "init")
	for _, want := range []string{"applied migrations 1, 2, 3", "3 key ring(s) created, 0 updated, 0 unchanged"} {
		if !strings.Contains(out, want) {
			t.Errorf("first keys init lacks %q:\n%s", want, out)
		}
	}
	for _, re := range []string{
		`(?m)^internal\s+encryption\s+internal\s+dev\s+1\s+created$`,
		`(?m)^internal:search\s+search\s+internal\s+dev\s+1\s+created$`,
		`(?m)^audit\s+audit\s+-\s+dev\s+1\s+created$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("first keys init: no line matching %s:\n%s", re, out)
		}
	}
	entries := len(decodeJSON[[]json.RawMessage](t, e.ok("audit", "tail", "-n", "1000", "--json")))
	if entries == 0 {
		t.Fatal("keys init wrote no audit entry")
	}

	type initJSON struct {
		Migrations []int `json:"migrations_applied"`
		Keyrings   []struct {
			Name          string `json:"name"`
			Purpose       string `json:"purpose"`
			KEK           string `json:"kek"`
			Status        string `json:"status"`
			ActiveVersion uint32 `json:"active_version"`
		} `json:"keyrings"`
	}
	var second initJSON
	if err := json.Unmarshal([]byte(e.ok("keys", "init", "--json")), &second); err != nil {
		t.Fatal(err)
	}
	if len(second.Migrations) != 0 || len(second.Keyrings) != 3 {
		t.Fatalf("second keys init: %+v", second)
	}
	for _, r := range second.Keyrings {
		if r.Status != "exists" || r.ActiveVersion != 1 || r.KEK != "dev" {
			t.Errorf("second keys init changed %+v", r)
		}
	}
	if n := len(decodeJSON[[]json.RawMessage](t, e.ok("audit", "tail", "-n", "1000", "--json"))); n != entries {
		t.Errorf("second keys init appended %d audit entries; want none", n-entries)
	}
	if got := e.states(); len(got) != 3 || got["internal/1"] != "active" || got["internal:search/1"] != "active" || got["audit/1"] != "active" {
		t.Errorf("versions after init: %v", got)
	}

	// A classification moved to another KEK in the file: refused, exit 3,
	// pointing at kek rotate.
	conf := strings.Replace(localConfig, "[classification.internal]\nkek = \"dev\"",
		"[kek.dev2]\ntype = \"local\"\nkey_file = \"dev2.key\"\n\n[classification.internal]\nkek = \"dev2\"", 1)
	if err := local.Generate(filepath.Join(e.dir, "dev2.key")); err != nil {
		t.Fatal(err)
	}
	e.writeConfig(conf)
	e.fails(exitRefused, `wrapped by KEK "dev", not "dev2".*kek rotate`, "keys", "init")
}

func testKeysRotateList(t *testing.T, c *pgtest.Cluster) {
	e := newKeysEnv(t, c, localConfig)
	e.ok("keys", "init")
	out := e.ok("keys", "rotate", "internal", "--reason", "test rotation")
	if !strings.Contains(out, "rotated internal: version 2 is active") || !strings.Contains(out, "version 1 is decrypt_only") {
		t.Errorf("keys rotate output:\n%s", out)
	}
	v3 := decodeJSON[versionJSON](t, e.ok("keys", "rotate", "internal", "--json", "--actor", "alice@test"))
	if v3.Version != 3 || v3.State != "active" || v3.CreatedBy != "alice@test" || v3.Keyring != "internal" || v3.Classification != "internal" {
		t.Errorf("second rotation: %+v", v3)
	}

	list := decodeJSON[[]versionJSON](t, e.ok("keys", "list", "--json"))
	want := map[string]string{"internal/1": "decrypt_only", "internal/2": "decrypt_only", "internal/3": "active",
		"internal:search/1": "active", "audit/1": "active"}
	if len(list) != len(want) {
		t.Fatalf("keys list --json has %d versions, want %d: %+v", len(list), len(want), list)
	}
	for _, v := range list {
		key := fmt.Sprintf("%s/%d", v.Keyring, v.Version)
		if want[key] != v.State {
			t.Errorf("%s: state %q, want %q", key, v.State, want[key])
		}
		if v.CreatedAt.IsZero() || v.ActivatedAt.IsZero() {
			t.Errorf("%s: created %v, activated %v", key, v.CreatedAt, v.ActivatedAt)
		}
	}

	table := e.ok("keys", "list")
	if !regexp.MustCompile(`(?m)^RING\s+PURPOSE\s+CLASSIFICATION\s+VERSION\s+STATE\s+CREATED\s+ACTIVATED\s+ENCRYPTIONS\s+DELETION AFTER$`).MatchString(table) {
		t.Errorf("keys list header:\n%s", table)
	}
	for _, re := range []string{
		`(?m)^internal\s+encryption\s+internal\s+1\s+decrypt_only\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+\d{4}-.*\s+0\s+-$`,
		`(?m)^internal\s+encryption\s+internal\s+3\s+active\s`,
	} {
		if !regexp.MustCompile(re).MatchString(table) {
			t.Errorf("keys list: no line matching %s:\n%s", re, table)
		}
	}

	show := e.ok("keys", "show", "internal")
	if !regexp.MustCompile(`(?m)^3\s+active\s+dev\s`).MatchString(show) || !strings.Contains(show, "test rotation") {
		t.Errorf("keys show internal:\n%s", show)
	}
	shown := decodeJSON[struct {
		Keyring  keyringJSON   `json:"keyring"`
		Versions []versionJSON `json:"versions"`
	}](t, e.ok("keys", "show", "internal", "--json"))
	if shown.Keyring.Name != "internal" || shown.Keyring.KEK != "dev" || len(shown.Versions) != 3 {
		t.Errorf("keys show --json: %+v", shown)
	}
	// Version 1 was demoted by the first rotation, whose reason it records.
	one := decodeJSON[versionJSON](t, e.ok("keys", "show", "internal", "1", "--json"))
	if one.Version != 1 || one.State != "decrypt_only" || one.StateReason != "test rotation" || one.ActivatedAt.IsZero() {
		t.Errorf("keys show internal 1 --json: %+v", one)
	}
	if out := e.ok("keys", "show", "internal", "1"); !regexp.MustCompile(`(?m)^state\s+decrypt_only$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^wrapped dek\s+stored$`).MatchString(out) {
		t.Errorf("keys show internal 1:\n%s", out)
	}
	e.fails(exitUsage, `not found: key ring "nope"`, "keys", "show", "nope")
	e.fails(exitUsage, `not found: internal version 9`, "keys", "show", "internal", "9")
	e.fails(exitUsage, `not found: key ring "nope"`, "keys", "rotate", "nope")
}

func testKeysLifecycle(t *testing.T, c *pgtest.Cluster) {
	e := newKeysEnv(t, c, localConfig)
	e.ok("keys", "init")

	// Refusals by the lifecycle: exit 3 with the reason.
	e.fails(exitRefused, `internal version 1: active → retired is not allowed: the active version is replaced by rotating`,
		"keys", "set-state", "internal", "1", "retired", "--yes")
	e.fails(exitRefused, `active → decrypt_only is not allowed`, "keys", "set-state", "internal", "1", "decrypt_only")
	e.fails(exitRefused, `only a retired or disabled version can be scheduled`,
		"keys", "schedule-deletion", "internal", "1", "--in", "14d", "--yes")
	e.fails(exitUsage, `unknown key state "frozen"`, "keys", "set-state", "internal", "1", "frozen")
	e.fails(exitUsage, `key versions start at 1`, "keys", "set-state", "internal", "0", "retired")

	e.ok("keys", "rotate", "internal")
	e.fails(exitRefused, `decrypt_only → active is not allowed: a version never becomes active again`,
		"keys", "set-state", "internal", "1", "active")
	out := e.ok("keys", "set-state", "internal", "1", "retired", "--reason", "rows re-encrypted", "--yes", "--dsn", e.dsn)
	if !strings.Contains(out, "internal version 1: retired (was decrypt_only)") {
		t.Errorf("set-state retired:\n%s", out)
	}
	if out := e.ok("keys", "set-state", "internal", "1", "retired", "--yes"); !strings.Contains(out, "already retired") {
		t.Errorf("set-state to the current state:\n%s", out)
	}
	// Deletion windows outside 7–30 days are refused before anything changes.
	for _, in := range []string{"3d", "31d", "6d23h"} {
		e.fails(exitRefused, `deletion window.*7 to 30 days`, "keys", "schedule-deletion", "internal", "1", "--in", in, "--yes")
	}
	e.fails(exitUsage, `--in: invalid duration`, "keys", "schedule-deletion", "internal", "1", "--in", "two weeks", "--yes")
	if st := e.states()["internal/1"]; st != "retired" {
		t.Fatalf("after refused schedules: %s", st)
	}
	sched := decodeJSON[versionJSON](t, e.ok("keys", "schedule-deletion", "internal", "1", "--in", "14d", "--yes", "--json", "--dsn", e.dsn))
	if sched.State != "pending_deletion" || sched.PriorState != "retired" {
		t.Fatalf("schedule-deletion --json: %+v", sched)
	}
	if d := sched.DeletionAfter.Sub(sched.StateChangedAt); d < 14*24*time.Hour-time.Minute || d > 14*24*time.Hour+time.Minute {
		t.Errorf("deletion window %v, want 14 days", d)
	}
	if out := e.ok("keys", "cancel-deletion", "internal", "1"); !strings.Contains(out, "deletion cancelled: internal version 1: retired") {
		t.Errorf("cancel-deletion:\n%s", out)
	}
	e.fails(exitRefused, `not pending deletion`, "keys", "cancel-deletion", "internal", "1")
	e.ok("keys", "schedule-deletion", "internal", "1", "--in", "7d", "--yes", "--dsn", e.dsn)

	// Nothing is due yet: destroy-due destroys nothing.
	if out := e.ok("keys", "destroy-due", "--yes"); !strings.Contains(out, "nothing to destroy") {
		t.Errorf("destroy-due before the window ended:\n%s", out)
	}
	// Let the window end (the triggers forbid shortening it: bypass them).
	e.exec("SET session_replication_role = replica",
		`UPDATE pgcloak.key_versions SET deletion_after = now() - interval '1 minute'
		 WHERE version = 1 AND keyring_id = (SELECT id FROM pgcloak.keyrings WHERE name = 'internal')`)
	destroyed := decodeJSON[[]versionJSON](t, e.ok("keys", "destroy-due", "--yes", "--json"))
	if len(destroyed) != 1 || destroyed[0].Keyring != "internal" || destroyed[0].Version != 1 ||
		destroyed[0].State != "deleted" || !destroyed[0].Destroyed {
		t.Fatalf("destroy-due --json: %+v", destroyed)
	}
	if out := e.ok("keys", "show", "internal", "1"); !regexp.MustCompile(`(?m)^wrapped dek\s+destroyed$`).MatchString(out) {
		t.Errorf("show after destroy:\n%s", out)
	}
	e.fails(exitRefused, `deleted → decrypt_only is not allowed`, "keys", "set-state", "internal", "1", "decrypt_only")

	// Disabling the active version rotates in the same transaction.
	out = e.ok("keys", "set-state", "internal", "2", "disabled", "--reason", "suspected compromise", "--yes")
	if !strings.Contains(out, "internal version 2: disabled (was active)") || !strings.Contains(out, "internal version 3 is now active") {
		t.Errorf("disable active:\n%s", out)
	}
	if out := e.ok("keys", "set-state", "internal", "2", "decrypt-only"); !strings.Contains(out, "decrypt_only (was disabled)") {
		t.Errorf("re-enable:\n%s", out)
	}

	// The whole lifecycle left an intact, checkpointed audit chain.
	out = e.ok("audit", "verify")
	m := regexp.MustCompile(`^audit chain intact: (\d+) entries, last checkpoint at seq (\d+)\n$`).FindStringSubmatch(out)
	if m == nil || m[1] != m[2] {
		t.Errorf("audit verify after the lifecycle (want every entry checkpointed):\n%s", out)
	}
}

func testKeysExportWrapped(t *testing.T, c *pgtest.Cluster) {
	e := newKeysEnv(t, c, localConfig)
	e.ok("keys", "init")
	e.ok("keys", "rotate", "internal")
	out := filepath.Join(e.dir, "backup.json")
	if msg := e.ok("keys", "export-wrapped", "--out", out); !strings.Contains(msg, "exported 4 version(s) of 3 key ring(s)") {
		t.Errorf("export-wrapped:\n%s", msg)
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("export file: %v, %v", st, err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	checkExport(t, e, data, 4)

	// Never overwrite a backup.
	e.fails(exitUsage, `already exists`, "keys", "export-wrapped", "--out", out)
	// One ring, to stdout.
	checkExport(t, e, []byte(e.ok("keys", "export-wrapped", "internal")), 2)
	e.fails(exitUsage, `not found: key ring "nope"`, "keys", "export-wrapped", "nope")

	// The export is audited.
	tail := decodeJSON[[]struct {
		Event   string            `json:"event"`
		Details map[string]string `json:"details"`
	}](t, e.ok("audit", "tail", "-n", "2", "--json"))
	if len(tail) != 2 || tail[0].Event != "key.export" || tail[1].Event != "key.export" || tail[1].Details["scope"] != "internal" {
		t.Errorf("audit entries of the exports: %+v", tail)
	}
}

// checkExport checks an export: only the documented fields, every wrapped
// DEK longer than a bare key and different from every other, and none of
// the plaintext DEKs (unwrapped here with the test's local KEK) anywhere in
// it.
func checkExport(t *testing.T, e *keysEnv, data []byte, versions int) {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatalf("export is not JSON: %v", err)
	}
	checkKeys(t, "export", raw, "format", "exported_at", "exported_by", "keyrings")
	if raw["format"] != "pgcloak-wrapped-deks/v1" {
		t.Errorf("format %v", raw["format"])
	}
	type wrappedVersion struct {
		ring    string
		id      uint32
		purpose string
		version uint32
		wrapped []byte
	}
	var all []wrappedVersion
	for _, r := range raw["keyrings"].([]any) {
		ring := r.(map[string]any)
		checkKeys(t, "keyring", ring, "id", "name", "purpose", "classification", "environment", "kek", "versions")
		for _, v := range ring["versions"].([]any) {
			ver := v.(map[string]any)
			checkKeys(t, "version", ver, "version", "state", "kek", "kek_key_id", "dek_format", "wrapped_dek",
				"created_at", "deletion_after", "deleted_at")
			var b []byte
			if err := json.Unmarshal(must(json.Marshal(ver["wrapped_dek"])), &b); err != nil {
				t.Fatalf("wrapped_dek is not base64: %v", err)
			}
			if len(b) <= 32 {
				t.Errorf("%s version %v: wrapped DEK has %d bytes: not wrapped", ring["name"], ver["version"], len(b))
			}
			all = append(all, wrappedVersion{ring["name"].(string), uint32(ring["id"].(float64)), ring["purpose"].(string),
				uint32(ver["version"].(float64)), b})
		}
	}
	if len(all) != versions {
		t.Fatalf("export holds %d versions, want %d", len(all), versions)
	}
	p, err := local.New(local.Opts{KeyFile: filepath.Join(e.dir, "dev.key")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	text := string(data)
	for i, a := range all {
		for _, b := range all[i+1:] {
			if string(a.wrapped) == string(b.wrapped) {
				t.Errorf("%s/%d and %s/%d have the same wrapped DEK", a.ring, a.version, b.ring, b.version)
			}
		}
		dek := unwrapExported(t, p, a.id, a.ring, a.purpose, a.version, a.wrapped)
		for _, enc := range encodings(dek) {
			if strings.Contains(text, enc) {
				t.Fatalf("%s/%d: the plaintext DEK appears in the export", a.ring, a.version)
			}
		}
	}
}

// checkKeys fails unless m's keys are among allowed (omitempty fields may
// be absent).
func checkKeys(t *testing.T, what string, m map[string]any, allowed ...string) {
	t.Helper()
	for k := range m {
		ok := false
		for _, a := range allowed {
			ok = ok || k == a
		}
		if !ok {
			t.Errorf("%s has an unexpected field %q", what, k)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// unwrapExported unwraps an exported DEK with the test's local KEK and
// returns its bytes (32).
func unwrapExported(t *testing.T, p *local.Provider, ringID uint32, ring, purpose string, version uint32, wrapped []byte) []byte {
	t.Helper()
	dek, err := p.Unwrap(context.Background(), wrapped, keyring.DEKAssociatedData(ringID, ring, keyring.Purpose(purpose), version))
	if err != nil {
		t.Fatalf("%s/%d: exported wrapped DEK does not unwrap: %v", ring, version, err)
	}
	if dek.Len() != keyring.DEKSize {
		t.Fatalf("%s/%d: unwrapped DEK has %d bytes", ring, version, dek.Len())
	}
	return append([]byte(nil), dek.Expose()...)
}

// encodings are the ways a key could appear in a JSON file.
func encodings(b []byte) []string {
	return []string{base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b), hex.EncodeToString(b), strings.ToUpper(hex.EncodeToString(b))}
}
