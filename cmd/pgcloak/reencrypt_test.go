package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/local"
	"github.com/pgcloak/pgcloak/internal/pgtest"
	"github.com/pgcloak/pgcloak/keyring"
)

// reencryptConfig: one local KEK, the internal classification, and the
// encrypted column public.people.email. The application table lives in the
// key-store database (one database is enough for the CLI's logic).
const reencryptConfig = `[upstream]
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
`

const peopleCtx = "public.people.email"

// TestReencryptCLI runs pgcloak reencrypt, the reference checks of keys
// set-state / schedule-deletion and keys compromise in-process against one
// throwaway cluster.
func TestReencryptCLI(t *testing.T) {
	c := pgtest.New(t, pgtest.Opts{})
	if c == nil {
		return
	}
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, c *pgtest.Cluster)
	}{
		{"RunStatusDryRun", testReencryptRun},
		{"Retirement", testRetirementCheck},
		{"Compromise", testCompromise},
		{"CompromiseLeftRows", testCompromiseLeftRows},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, c) })
	}
}

// newPeopleEnv initialises the key store and creates public.people with n
// rows sealed under internal version 1.
func newPeopleEnv(t *testing.T, c *pgtest.Cluster, n int) *keysEnv {
	t.Helper()
	e := newKeysEnv(t, c, reencryptConfig)
	e.ok("keys", "init")
	e.exec("CREATE TABLE people (id int PRIMARY KEY, email bytea)")
	e.addPeople(1, n, 1)
	return e
}

// sealer returns the key of internal version v, loaded as the proxy
// would (a disabled version too).
func (e *keysEnv) peopleKey(v uint32) *envelope.Key {
	e.t.Helper()
	kek, err := local.New(local.Opts{KeyFile: filepath.Join(e.dir, "dev.key")})
	if err != nil {
		e.t.Fatal(err)
	}
	defer kek.Close()
	s, err := keyring.New(e.ctx, keyring.StoreOpts{DSN: e.dsn, KEKs: map[string]hsm.KEK{"dev": kek}, Actor: "test", CheckpointEvery: -1})
	if err != nil {
		e.t.Fatal(err)
	}
	defer s.Close()
	ring, err := s.Keyring(e.ctx, "internal")
	if err != nil {
		e.t.Fatal(err)
	}
	dek, err := s.Loader(keyring.LoaderOpts{AllowDisabled: true}).LoadDEK(e.ctx, ring.ID, v)
	if err != nil {
		e.t.Fatal(err)
	}
	defer dek.Zero()
	k, err := envelope.NewKey(ring.ID, v, dek)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

func (e *keysEnv) addPeople(from, to int, v uint32) {
	e.t.Helper()
	k := e.peopleKey(v)
	conn, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for id := from; id <= to; id++ {
		val, err := k.Seal(nil, nil, peopleCtx, fmt.Appendf(nil, "p%d@example.org", id))
		if err != nil {
			e.t.Fatal(err)
		}
		if _, err := conn.Exec(e.ctx, "INSERT INTO people VALUES ($1, $2)", id, val); err != nil {
			e.t.Fatal(err)
		}
	}
}

// peopleVersions counts people rows per stored key version.
func (e *keysEnv) peopleVersions() map[uint32]int {
	e.t.Helper()
	conn, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(e.ctx, "SELECT email FROM people WHERE email IS NOT NULL")
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[uint32]int{}
	var v []byte
	if _, err := pgx.ForEachRow(rows, []any{&v}, func() error {
		out[binary.BigEndian.Uint32(v[9:13])]++
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *keysEnv) auditEvents() string {
	e.t.Helper()
	return e.queryString("SELECT string_agg(event, ' ' ORDER BY seq) FROM pgcloak.audit_log")
}

func testReencryptRun(t *testing.T, c *pgtest.Cluster) {
	e := newPeopleEnv(t, c, 30)
	e.ok("keys", "rotate", "internal")

	e.fails(exitUsage, `--dsn`, "reencrypt")
	e.fails(exitUsage, `--column nope.x: not an encrypted column`, "reencrypt", "--dsn", e.dsn, "--column", "nope.x")
	e.fails(exitUsage, `--batch-size`, "reencrypt", "--dsn", e.dsn, "--batch-size", "0")

	out := e.ok("reencrypt", "--dsn", e.dsn, "--dry-run")
	if !regexp.MustCompile(`public\.people\.email\s+internal\s+1\s+decrypt_only\s+30\s+re-encrypt`).MatchString(out) ||
		!strings.Contains(out, "30 row(s) would be re-encrypted (dry run") {
		t.Fatalf("dry run:\n%s", out)
	}
	plans := decodeJSON[[]planJSON](t, e.ok("reencrypt", "--dsn", e.dsn, "--dry-run", "--json"))
	if len(plans) != 1 || plans[0].Remaining != 30 || plans[0].Active != 2 || plans[0].PKColumns[0] != "id" {
		t.Fatalf("dry run --json: %+v", plans)
	}
	if got := e.peopleVersions(); got[1] != 30 {
		t.Fatalf("dry run changed rows: %v", got)
	}

	out = e.ok("reencrypt", "--dsn", e.dsn, "--batch-size", "7", "--rate", "0")
	if !strings.Contains(out, "public.people.email: re-encrypting to internal version 2 (job 1), 0/30 rows") ||
		!strings.Contains(out, "public.people.email: done, 30 row(s) re-encrypted to internal version 2 (job 1)") {
		t.Fatalf("run output:\n%s", out)
	}
	if got := e.peopleVersions(); got[2] != 30 || len(got) != 1 {
		t.Fatalf("versions after the run: %v", got)
	}
	jobs := decodeJSON[[]jobJSON](t, e.ok("reencrypt", "status", "--json"))
	if len(jobs) != 1 || jobs[0].State != "done" || jobs[0].RowsDone != 30 || jobs[0].RowsTotal == nil || *jobs[0].RowsTotal != 30 ||
		jobs[0].Table != "public.people" || jobs[0].Column != "email" {
		t.Fatalf("status --json: %+v", jobs)
	}
	if out := e.ok("reencrypt", "status"); !regexp.MustCompile(`1\s+public\.people\.email\s+internal\s+older\s+2\s+done\s+30/30`).MatchString(out) {
		t.Fatalf("status:\n%s", out)
	}
	if out := e.ok("reencrypt", "--dsn", e.dsn); !strings.Contains(out, "nothing to re-encrypt") {
		t.Fatalf("second run:\n%s", out)
	}
	if ev := e.auditEvents(); strings.Count(ev, "reencrypt.start") != 1 || strings.Count(ev, "reencrypt.finish") != 1 {
		t.Fatalf("audit: %s", ev)
	}
	e.ok("audit", "verify")

	// A table without a primary key is refused, by name.
	e.exec("ALTER TABLE people DROP CONSTRAINT people_pkey")
	e.ok("keys", "rotate", "internal")
	out = e.fails(exitRefused, `refused`, "reencrypt", "--dsn", e.dsn)
	if !strings.Contains(out, "table public.people has no primary key") {
		t.Fatalf("no primary key:\n%s", out)
	}
}

func testRetirementCheck(t *testing.T, c *pgtest.Cluster) {
	e := newPeopleEnv(t, c, 12)
	e.ok("keys", "rotate", "internal")
	before := e.states()

	e.fails(exitUsage, `refusing to retire internal version 1 without counting the rows that still reference it: pass --dsn`,
		"keys", "set-state", "internal", "1", "retired", "--yes")
	out := e.fails(exitRefused, `refusing to retire internal version 1: 12 row\(s\) still reference it`,
		"keys", "set-state", "internal", "1", "retired", "--yes", "--dsn", e.dsn)
	if !strings.Contains(out, "public.people.email: 12 row(s) reference internal version 1") {
		t.Fatalf("counts per column missing:\n%s", out)
	}
	if after := e.states(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("refusals changed states: %v → %v", before, after)
	}

	// Re-encrypted: nothing references version 1 any more.
	e.ok("reencrypt", "--dsn", e.dsn, "--rate", "0")
	_, _, errOut := e.cli("keys", "set-state", "internal", "1", "retired", "--yes", "--dsn", e.dsn)
	if !strings.Contains(errOut, "no row references internal version 1 (1 encrypted column(s) checked)") || e.states()["internal/1"] != "retired" {
		t.Fatalf("retire after re-encryption: %s, state %s", errOut, e.states()["internal/1"])
	}

	// Version 2 (decrypt_only after another rotation) is used by 12 rows:
	// --force retires it, loudly, and the audit log says so with counts.
	e.ok("keys", "rotate", "internal")
	code, _, errOut := e.cli("keys", "set-state", "internal", "2", "retired", "--yes", "--dsn", e.dsn, "--force", "--reason", "drill")
	if code != 0 || !strings.Contains(errOut, "WARNING: --force: retire internal version 2 although 12 row(s) still reference it") {
		t.Fatalf("forced retirement: exit %d\n%s", code, errOut)
	}
	details := e.queryString(`SELECT details::text FROM pgcloak.audit_log WHERE event = 'key.forced' ORDER BY seq DESC LIMIT 1`)
	for _, want := range []string{`"rows: public.people.email": "12"`, `"total": "12"`, `"to": "retired"`, `"counted": "yes"`} {
		if !strings.Contains(details, want) {
			t.Errorf("key.forced details lack %s: %s", want, details)
		}
	}
	// schedule-deletion refuses with the counts too; --force without --dsn
	// is recorded as not counted.
	e.fails(exitRefused, `refusing to schedule the deletion of internal version 2: 12 row\(s\)`,
		"keys", "schedule-deletion", "internal", "2", "--in", "7d", "--yes", "--dsn", e.dsn)
	code, _, errOut = e.cli("keys", "schedule-deletion", "internal", "2", "--in", "7d", "--yes", "--force")
	if code != 0 || !strings.Contains(errOut, "WITHOUT counting") || e.states()["internal/2"] != "pending_deletion" {
		t.Fatalf("forced deletion without --dsn: exit %d\n%s", code, errOut)
	}
	details = e.queryString(`SELECT details::text FROM pgcloak.audit_log WHERE event = 'key.forced' ORDER BY seq DESC LIMIT 1`)
	if !strings.Contains(details, `"counted": "no"`) || !strings.Contains(details, `"to": "pending_deletion"`) {
		t.Errorf("key.forced details: %s", details)
	}
	e.ok("keys", "schedule-deletion", "internal", "1", "--in", "7d", "--yes", "--dsn", e.dsn)
	e.ok("audit", "verify")
}

func testCompromise(t *testing.T, c *pgtest.Cluster) {
	e := newPeopleEnv(t, c, 5)
	e.ok("keys", "rotate", "internal")
	e.addPeople(6, 14, 2) // version 2 is active and compromised

	e.fails(exitUsage, `--dsn`, "keys", "compromise", "internal", "2", "--yes")
	e.fails(exitUsage, `audit is a audit key ring`, "keys", "compromise", "audit", "1", "--yes", "--dsn", e.dsn)
	e.fails(exitRefused, `7 to 30 days`, "keys", "compromise", "internal", "2", "--yes", "--dsn", e.dsn, "--deletion-window", "3d")
	if e.states()["internal/2"] != "active" {
		t.Fatal("a refused compromise changed the state")
	}

	out := e.ok("keys", "compromise", "internal", "2", "--yes", "--dsn", e.dsn, "--rate", "0")
	for _, want := range []string{"1/3 internal version 2 disabled (was active)", "internal version 3 is now active",
		"2/3 re-encrypting the rows of internal version 2 to version 3", "3/3 internal version 2: pending_deletion",
		"9 row(s) re-encrypted to version 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	st := e.states()
	if st["internal/2"] != "pending_deletion" || st["internal/3"] != "active" || st["internal/1"] != "decrypt_only" {
		t.Fatalf("states after the compromise: %v", st)
	}
	if got := e.peopleVersions(); got[2] != 0 || got[3] != 9 || got[1] != 5 {
		t.Fatalf("versions after the compromise: %v (version 1 is not compromised and waits for a routine run)", got)
	}
	prior := e.queryString(`SELECT prior_state || ' ' || (deletion_after - state_changed_at)::text FROM pgcloak.key_versions kv
		JOIN pgcloak.keyrings kr ON kr.id = kv.keyring_id WHERE kr.name = 'internal' AND version = 2`)
	if prior != "disabled 7 days" {
		t.Errorf("prior state and window: %q", prior)
	}
	ev := e.auditEvents()
	if !regexp.MustCompile(`key\.compromise .*key\.state .*key\.create key\.rotate .*reencrypt\.start .*key\.disabled_access .*reencrypt\.finish .*key\.state .*key\.compromise`).MatchString(ev) {
		t.Fatalf("audit sequence: %s", ev)
	}
	completed := e.queryString(`SELECT details::text FROM pgcloak.audit_log WHERE event = 'key.compromise' ORDER BY seq DESC LIMIT 1`)
	if !strings.Contains(completed, `"step": "completed"`) || !strings.Contains(completed, `"rows_reencrypted": "9"`) || !strings.Contains(completed, `"new_active": "3"`) {
		t.Errorf("completion entry: %s", completed)
	}
	// Rerun: nothing more to do.
	if out := e.ok("keys", "compromise", "internal", "2", "--yes", "--dsn", e.dsn); !strings.Contains(out, "compromise response was completed") {
		t.Fatalf("rerun:\n%s", out)
	}
	e.ok("audit", "verify")
}

func testCompromiseLeftRows(t *testing.T, c *pgtest.Cluster) {
	e := newPeopleEnv(t, c, 6)
	e.ok("keys", "rotate", "internal")
	// Row 4 holds a version-1 ciphertext of another column: it cannot be
	// decrypted, so it cannot be re-encrypted.
	k := e.peopleKey(1)
	bad, err := k.Seal(nil, nil, "public.other.col", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(e.ctx, "UPDATE people SET email = $1 WHERE id = 4", bad); err != nil {
		t.Fatal(err)
	}
	out := e.fails(exitRefused, `internal version 1 is disabled and its rows were re-encrypted where possible, but 1 row\(s\) still reference it`,
		"keys", "compromise", "internal", "1", "--yes", "--dsn", e.dsn, "--rate", "0")
	if !strings.Contains(out, "row (4) under key ring") || !strings.Contains(out, "public.people.email: 1 row(s) reference internal version 1") {
		t.Fatalf("output:\n%s", out)
	}
	if st := e.states(); st["internal/1"] != "disabled" {
		t.Fatalf("state after a refused deletion: %v", st)
	}
	if got := e.peopleVersions(); got[1] != 1 || got[2] != 5 {
		t.Fatalf("versions: %v", got)
	}
	// The rerun continues (no second disable) and, forced, schedules.
	out = e.ok("keys", "compromise", "internal", "1", "--yes", "--dsn", e.dsn, "--force")
	if !strings.Contains(out, "was already disabled") || e.states()["internal/1"] != "pending_deletion" {
		t.Fatalf("forced rerun:\n%s\nstates %v", out, e.states())
	}
	if ev := e.auditEvents(); strings.Count(ev, "key.forced") != 1 || !strings.Contains(ev, "key.compromise") {
		t.Fatalf("audit: %s", ev)
	}
}
