package keyring

// The least-privilege database roles of docs/keys.md §5 ("Database
// roles"), proven against the real migrations: the role, schema and GRANT
// SQL is read from the document itself, so the documentation and the code
// cannot drift apart unnoticed.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/hsmfake"
	"github.com/pgcloak/pgcloak/keyring/audit"
)

// keysDoc is docs/keys.md, relative to this package's directory (where go
// test runs).
const keysDoc = "../docs/keys.md"

// The roles §5 creates.
var docRoles = []string{"pgcloak_owner", "pgcloak_admin", "pgcloak_proxy", "pgcloak_auditor"}

// Steps of the §5 SQL block, numbered by its "-- N." comment lines.
const (
	stepRoles      = 1 // as a superuser: roles
	stepSchema     = 2 // as a superuser, in the key-store database: the schema
	stepMigrations = 3 // shell (pgcloak keys init as pgcloak_owner): no SQL
	stepGrants     = 4 // as pgcloak_owner, after every migration: grants
)

var (
	leastPrivHeading = regexp.MustCompile(`^##\s+(?:\d+\.\s+)?Least privilege\s*$`)
	stepComment      = regexp.MustCompile(`^--\s*(\d+)\.\s`)
	ownerGrant       = regexp.MustCompile(`(?i)GRANT\s+pgcloak_owner\s+TO\s+(\w+)\s*;`)
	ownerShell       = regexp.MustCompile(`PGUSER=(\w+)\s+PGOPTIONS='([^']*)'\s+pgcloak keys init`)
)

// roleDoc is what the test takes from docs/keys.md §5.
type roleDoc struct {
	steps map[int]string // SQL by step number
	// dba is the member of pgcloak_owner that step 1 names and step 3
	// migrates as (an existing DBA: the test creates it), with
	// ownerOptions (PGOPTIONS) selecting the role.
	dba, ownerOptions string
}

// roleSteps extracts the ```sql blocks of the "### Database roles"
// subsection of the "## … Least privilege" section of doc and splits them
// into steps at their "-- N. …" comment lines. It fails when the section,
// the blocks or an expected step cannot be found, or when the document
// has a step this test does not know how to run.
func roleSteps(doc string) (*roleDoc, error) {
	lines := strings.Split(strings.ReplaceAll(doc, "\r\n", "\n"), "\n")
	start := -1
	for i, l := range lines {
		if leastPrivHeading.MatchString(l) {
			start = i
			break
		}
	}
	if start < 0 {
		return nil, errors.New(`no "## 5. Least privilege" section`)
	}
	end := len(lines)
	for i := start + 1; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "## ") {
			end = i
			break
		}
	}
	sub := -1
	for i := start + 1; i < end; i++ {
		if strings.TrimSpace(lines[i]) == "### Database roles" {
			sub = i
			break
		}
	}
	if sub < 0 {
		return nil, errors.New(`§5 has no "### Database roles" subsection`)
	}
	var (
		sql    []string
		in     bool
		blocks int
	)
	for i := sub + 1; i < end; i++ {
		l := lines[i]
		if !in && strings.HasPrefix(l, "### ") {
			break
		}
		switch {
		case !in && strings.TrimSpace(l) == "```sql":
			in, blocks = true, blocks+1
		case in && strings.TrimSpace(l) == "```":
			in = false
		case in:
			sql = append(sql, l)
		}
	}
	if in {
		return nil, errors.New(`§5 "Database roles": unterminated ` + "```sql" + ` block`)
	}
	if blocks == 0 {
		return nil, errors.New(`§5 "Database roles" has no ` + "```sql" + ` block`)
	}

	steps := map[int]string{}
	cur := 0
	for _, l := range sql {
		if m := stepComment.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			if _, dup := steps[n]; dup {
				return nil, fmt.Errorf("§5 SQL: step %d appears twice", n)
			}
			cur, steps[n] = n, ""
			continue
		}
		if cur == 0 {
			if statements(l) != "" {
				return nil, fmt.Errorf("§5 SQL: statement before the first \"-- 1.\" step comment: %q", l)
			}
			continue
		}
		steps[cur] += l + "\n"
	}
	for n, s := range steps {
		switch n {
		case stepRoles, stepSchema, stepGrants:
			if statements(s) == "" {
				return nil, fmt.Errorf("§5 SQL: step %d has no statement", n)
			}
		case stepMigrations:
			if statements(s) != "" {
				return nil, fmt.Errorf("§5 SQL: step %d (migrations, a shell command) now holds SQL; teach privileges_test.go when to run it", n)
			}
		default:
			return nil, fmt.Errorf("§5 SQL: unknown step %d; teach privileges_test.go when and as whom to run it", n)
		}
	}
	for _, n := range []int{stepRoles, stepSchema, stepMigrations, stepGrants} {
		if _, ok := steps[n]; !ok {
			return nil, fmt.Errorf(`§5 SQL: no "-- %d." step comment (found steps %v)`, n, stepNumbers(steps))
		}
	}
	for _, r := range docRoles {
		if !regexp.MustCompile(`(?i)CREATE ROLE\s+` + r + `\b`).MatchString(steps[stepRoles]) {
			return nil, fmt.Errorf("§5 SQL: step %d does not create role %s", stepRoles, r)
		}
	}
	if !regexp.MustCompile(`(?i)CREATE SCHEMA\s+pgcloak\s+AUTHORIZATION\s+pgcloak_owner\b`).MatchString(steps[stepSchema]) {
		return nil, fmt.Errorf("§5 SQL: step %d does not create schema pgcloak owned by pgcloak_owner", stepSchema)
	}
	g := ownerGrant.FindStringSubmatch(steps[stepRoles])
	if g == nil {
		return nil, fmt.Errorf("§5 SQL: step %d grants pgcloak_owner to nobody", stepRoles)
	}
	m := ownerShell.FindStringSubmatch(steps[stepMigrations])
	if m == nil {
		return nil, fmt.Errorf("§5 SQL: step %d has no \"PGUSER=… PGOPTIONS='…' pgcloak keys init\" line", stepMigrations)
	}
	if m[1] != g[1] {
		return nil, fmt.Errorf("§5 SQL: step %d migrates as %s, but step %d grants pgcloak_owner to %s", stepMigrations, m[1], stepRoles, g[1])
	}
	return &roleDoc{steps: steps, dba: g[1], ownerOptions: m[2]}, nil
}

// statements returns s without "--" comments and blank space.
func statements(s string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(s, "\n") {
		if i := strings.Index(l, "--"); i >= 0 {
			l = l[:i]
		}
		b.WriteString(strings.TrimSpace(l))
	}
	return b.String()
}

func stepNumbers(steps map[int]string) []int {
	var ns []int
	for n := range 10 {
		if _, ok := steps[n]; ok {
			ns = append(ns, n)
		}
	}
	return ns
}

func TestPrivilegeDocParse(t *testing.T) {
	const good = "## 5. Least privilege\n\n### Database roles\n\ntext\n\n```sql\n" +
		"-- 1. roles\nCREATE ROLE pgcloak_owner NOLOGIN;\nCREATE ROLE pgcloak_admin LOGIN; -- pw\nGRANT pgcloak_owner TO bob; -- DBA\n" +
		"CREATE ROLE pgcloak_proxy LOGIN;\nCREATE ROLE pgcloak_auditor LOGIN;\n\n" +
		"-- 2. schema\nCREATE SCHEMA pgcloak AUTHORIZATION pgcloak_owner;\n\n" +
		"-- 3. migrations (shell):\n--      PGUSER=bob PGOPTIONS='-c role=pgcloak_owner' pgcloak keys init\n\n" +
		"-- 4. grants\nGRANT SELECT ON pgcloak.keyrings TO pgcloak_proxy;\n```\n\n### HSM user\n\n```sql\nDROP ROLE x;\n```\n"
	d, err := roleSteps(good)
	if err != nil {
		t.Fatal(err)
	}
	steps := d.steps
	if d.dba != "bob" || d.ownerOptions != "-c role=pgcloak_owner" {
		t.Errorf("DBA %q, PGOPTIONS %q", d.dba, d.ownerOptions)
	}
	if got := statements(steps[stepGrants]); got != "GRANT SELECT ON pgcloak.keyrings TO pgcloak_proxy;" {
		t.Errorf("step 4 = %q", got)
	}
	if strings.Contains(steps[stepGrants], "DROP") {
		t.Errorf("a block of the next subsection leaked into step 4")
	}
	for name, bad := range map[string]string{
		"no section":       strings.Replace(good, "Least privilege", "Privileges", 1),
		"no subsection":    strings.Replace(good, "### Database roles", "### Roles", 1),
		"no sql block":     strings.Replace(good, "```sql\n-- 1.", "```\n-- 1.", 1),
		"missing step":     strings.Replace(good, "-- 2. schema", "-- schema", 1),
		"unknown step":     strings.Replace(good, "-- 4. grants", "-- 5. grants", 1),
		"sql in step 3":    strings.Replace(good, "--      PGUSER", "SELECT 1; -- PGUSER", 1),
		"no shell line":    strings.Replace(good, "PGOPTIONS=", "PGOPTS=", 1),
		"other DBA":        strings.Replace(good, "PGUSER=bob", "PGUSER=carol", 1),
		"no owner member":  strings.Replace(good, "GRANT pgcloak_owner TO bob;", "", 1),
		"role not created": strings.Replace(good, "CREATE ROLE pgcloak_proxy LOGIN;", "", 1),
		"schema owner":     strings.Replace(good, "AUTHORIZATION pgcloak_owner", "", 1),
		"unterminated":     strings.Replace(good, "pgcloak_proxy;\n```\n\n### HSM user\n\n```sql\nDROP ROLE x;\n```\n", "pgcloak_proxy;\n", 1),
	} {
		if _, err := roleSteps(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// privEnv is the §5 setup: a key-store database whose schema and grants
// come from docs/keys.md, and one Store per role.
type privEnv struct {
	t     *testing.T
	ctx   context.Context
	super *pgx.Conn // superuser, for checking what the roles did
}

// denied asserts a refusal for lack of privilege (SQLSTATE 42501).
func denied(t *testing.T, what string, err error) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("%s: want permission denied (SQLSTATE 42501), got %v", what, err)
	}
}

// must fails the test unless err is nil.
func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// num runs a one-value integer query as the superuser.
func (p *privEnv) num(q string, args ...any) int64 {
	p.t.Helper()
	var n int64
	if err := p.super.QueryRow(p.ctx, q, args...).Scan(&n); err != nil {
		p.t.Fatalf("%s: %v", q, err)
	}
	return n
}

// str runs a one-value text query as the superuser.
func (p *privEnv) str(q string, args ...any) string {
	p.t.Helper()
	var s string
	if err := p.super.QueryRow(p.ctx, q, args...).Scan(&s); err != nil {
		p.t.Fatalf("%s: %v", q, err)
	}
	return s
}

func (p *privEnv) state(ring string, v uint32) string {
	p.t.Helper()
	return p.str(`SELECT kv.state FROM pgcloak.key_versions kv JOIN pgcloak.keyrings kr ON kr.id = kv.keyring_id
		WHERE kr.name = $1 AND kv.version = $2`, ring, int64(v))
}

func (p *privEnv) head() int64 { return p.num("SELECT seq FROM pgcloak.audit_head") }

// TestPrivileges runs the §5 SQL on a fresh database, migrates as
// pgcloak_owner and proves, through the keyring API, what each role may
// and may not do.
func TestPrivileges(t *testing.T) {
	doc, err := os.ReadFile(keysDoc)
	if err != nil {
		t.Fatalf("read %s: %v", keysDoc, err)
	}
	d, err := roleSteps(string(doc))
	if err != nil {
		t.Fatalf("%s: cannot find the role SQL this test checks: %v", keysDoc, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	db, cluster := shared.Database(ctx, t)
	if cluster == nil {
		return
	}
	// Roles are cluster-wide: drop them (and the database that holds
	// their objects) when done, after every Store has closed.
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), cluster.SuperDSN())
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer c.Close(context.Background())
		for _, q := range []string{
			"DROP DATABASE " + pgx.Identifier{db}.Sanitize() + " WITH (FORCE)",
			"DROP ROLE IF EXISTS " + strings.Join(append(append([]string(nil), docRoles...), d.dba), ", "),
		} {
			if _, err := c.Exec(context.Background(), q); err != nil {
				t.Errorf("cleanup: %s: %v", q, err)
			}
		}
	})
	super, err := pgx.Connect(ctx, cluster.DSN("postgres", "", db))
	must(t, "connect as superuser", err)
	t.Cleanup(func() { _ = super.Close(context.Background()) })
	p := &privEnv{t: t, ctx: ctx, super: super}

	// Steps 1 and 2 as a superuser, verbatim. The doc's LOGIN roles have
	// no password: they log in over the Unix socket ("local … trust").
	_, err = super.Exec(ctx, "CREATE ROLE "+pgx.Identifier{d.dba}.Sanitize()+" LOGIN")
	must(t, "create the DBA of step 1", err)
	for _, n := range []int{stepRoles, stepSchema} {
		_, err := super.Exec(ctx, d.steps[n], pgx.QueryExecModeSimpleProtocol)
		must(t, fmt.Sprintf("docs/keys.md §5 step %d", n), err)
	}

	keks := map[string]hsm.KEK{"hsm": hsmfake.New(), "hsm2": hsmfake.New()}
	// One DSN without a user, as in a shared pgcloak.toml; PGUSER and
	// PGOPTIONS select the role per process (§5).
	dsn := fmt.Sprintf("host='%s' port=%d dbname=%s sslmode=disable",
		strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(cluster.SocketDir()), cluster.Port(), db)
	open := func(user, options string, o StoreOpts) *Store {
		t.Helper()
		t.Setenv("PGUSER", user)
		t.Setenv("PGOPTIONS", options)
		o.DSN, o.KEKs, o.Actor = dsn, keks, user+"@test"
		o.OnError = func(err error) { t.Errorf("%s: background error: %v", user, err) }
		s, err := New(ctx, o)
		must(t, "open store as "+user, err)
		t.Cleanup(s.Close)
		must(t, "connect as "+user, s.Pool().Ping(ctx)) // the pool parsed the env in New
		return s
	}

	// Step 3: migrations as pgcloak_owner, through a member (SET ROLE by
	// PGOPTIONS).
	owner := open(d.dba, d.ownerOptions, StoreOpts{})
	var cu, su string
	must(t, "whoami", owner.Pool().QueryRow(ctx, "SELECT current_user, session_user").Scan(&cu, &su))
	if cu != "pgcloak_owner" || su != d.dba {
		t.Fatalf("PGOPTIONS role: current_user %q, session_user %q", cu, su)
	}
	ms, err := Migrations()
	must(t, "migrations", err)
	applied, err := owner.Migrate(ctx)
	must(t, "migrate as pgcloak_owner", err)
	if len(applied) != len(ms) {
		t.Fatalf("migrate as pgcloak_owner applied %v, want all %d", applied, len(ms))
	}
	if n := p.num(`SELECT count(*) FROM pg_class WHERE relnamespace = 'pgcloak'::regnamespace
		AND relkind IN ('r', 'S') AND relowner <> 'pgcloak_owner'::regrole`); n != 0 {
		t.Errorf("%d tables or sequences in pgcloak not owned by pgcloak_owner", n)
	}
	if n := p.num(`SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgcloak'::regnamespace
		AND prosecdef AND proowner = 'pgcloak_owner'::regrole`); n < 2 {
		t.Errorf("%d SECURITY DEFINER functions owned by pgcloak_owner, want the 2 audit append triggers", n)
	}

	// Step 4: the grants, as pgcloak_owner.
	_, err = owner.Pool().Exec(ctx, d.steps[stepGrants], pgx.QueryExecModeSimpleProtocol)
	must(t, fmt.Sprintf("docs/keys.md §5 step %d as pgcloak_owner", stepGrants), err)

	admin := open("pgcloak_admin", "", StoreOpts{CheckpointEvery: -1})
	proxy := open("pgcloak_proxy", "", StoreOpts{CheckpointEvery: -1})
	auditor := open("pgcloak_auditor", "", StoreOpts{CheckpointEvery: -1})

	// Each role's subtest builds on the previous one's state; a later one
	// runs unless an earlier one stopped short.
	var conf Keyring
	t.Run("admin", func(t *testing.T) { conf = privAdmin(t, p.with(t), admin, len(ms)) })
	if conf.ID == 0 {
		t.FailNow()
	}
	var proxyEntry audit.Entry
	t.Run("proxy", func(t *testing.T) { proxyEntry = privProxy(t, p.with(t), proxy, admin, conf, len(ms)) })
	if proxyEntry.Seq == 0 {
		t.FailNow()
	}
	t.Run("auditor", func(t *testing.T) { privAuditor(t, p.with(t), auditor, proxyEntry) })
}

func (p *privEnv) with(t *testing.T) *privEnv { return &privEnv{t: t, ctx: p.ctx, super: p.super} }

// privAdmin: pgcloak_admin creates rings and versions, changes states,
// schedules and cancels deletion, exports, re-wraps and checkpoints; it
// may neither change nor delete audit entries nor run DDL.
func privAdmin(t *testing.T, p *privEnv, admin *Store, latest int) Keyring {
	ctx := p.ctx
	v, err := admin.SchemaVersion(ctx)
	must(t, "schema version", err)
	if v != latest {
		t.Errorf("schema version = %d, want %d", v, latest)
	}
	_, created, err := admin.EnsureKeyring(ctx, KeyringSpec{Name: "audit", Purpose: PurposeAudit, KEK: "hsm"})
	must(t, "EnsureKeyring audit", err)
	conf, created2, err := admin.EnsureKeyring(ctx, KeyringSpec{Name: "confidential", Purpose: PurposeEncryption,
		Classification: "confidential", KEK: "hsm"})
	must(t, "EnsureKeyring confidential", err)
	if !created || !created2 {
		t.Fatalf("EnsureKeyring created = %v, %v; want new rings", created, created2)
	}
	if n := p.num(`SELECT count(*) FROM pgcloak.keyrings kr JOIN pgcloak.key_versions kv ON kv.keyring_id = kr.id
		WHERE kr.created_by = 'pgcloak_admin@test' AND kv.state = 'active' AND kv.state_changed_role = 'pgcloak_admin'`); n != 2 {
		t.Fatalf("%d rings with an active version created by pgcloak_admin, want 2", n)
	}

	for _, want := range []uint32{2, 3} {
		v, err := admin.Rotate(ctx, "confidential", "privileges test")
		must(t, "Rotate", err)
		if v.Version != want || v.State != StateActive {
			t.Fatalf("Rotate = version %d %s, want %d active", v.Version, v.State, want)
		}
	}
	for ver, want := range map[uint32]string{1: "decrypt_only", 2: "decrypt_only", 3: "active"} {
		if got := p.state("confidential", ver); got != want {
			t.Errorf("after Rotate: version %d is %s, want %s", ver, got, want)
		}
	}

	_, err = admin.SetState(ctx, "confidential", 1, StateRetired, "privileges test")
	must(t, "SetState retired", err)
	if got := p.str(`SELECT state || ' ' || state_changed_role FROM pgcloak.key_versions
		WHERE keyring_id = $1 AND version = 1`, int64(conf.ID)); got != "retired pgcloak_admin" {
		t.Errorf("after SetState: %q, want retired by pgcloak_admin", got)
	}
	_, err = admin.ScheduleDeletion(ctx, "confidential", 1, 7*24*time.Hour, "privileges test")
	must(t, "ScheduleDeletion", err)
	if got := p.state("confidential", 1); got != "pending_deletion" {
		t.Errorf("after ScheduleDeletion: %s, want pending_deletion", got)
	}
	_, err = admin.CancelDeletion(ctx, "confidential", 1, "privileges test")
	must(t, "CancelDeletion", err)
	if got := p.state("confidential", 1); got != "retired" {
		t.Errorf("after CancelDeletion: %s, want retired", got)
	}

	exp, err := admin.ExportWrapped(ctx, "")
	must(t, "ExportWrapped", err)
	wrapped := 0
	for _, kr := range exp.Keyrings {
		for _, v := range kr.Versions {
			if len(v.WrappedDEK) > 0 {
				wrapped++
			}
		}
	}
	if len(exp.Keyrings) != 2 || wrapped != 4 {
		t.Errorf("ExportWrapped: %d rings, %d wrapped DEKs; want 2 and 4", len(exp.Keyrings), wrapped)
	}
	if n := p.num(`SELECT count(*) FROM pgcloak.audit_log WHERE event = $1 AND db_user = 'pgcloak_admin'`,
		audit.EventKeyExport); n != 1 {
		t.Errorf("%d key.export entries by pgcloak_admin, want 1", n)
	}

	n, err := admin.RewrapAll(ctx, "hsm", "hsm2")
	must(t, "RewrapAll", err)
	if n != 4 {
		t.Errorf("RewrapAll re-wrapped %d versions, want 4", n)
	}
	if left := p.num(`SELECT (SELECT count(*) FROM pgcloak.key_versions WHERE kek_name <> 'hsm2')
		+ (SELECT count(*) FROM pgcloak.keyrings WHERE kek_name <> 'hsm2')`); left != 0 {
		t.Errorf("after RewrapAll %d versions or rings are not on hsm2", left)
	}

	before := p.num("SELECT count(*) FROM pgcloak.audit_checkpoints")
	cp, err := admin.Checkpoint(ctx)
	must(t, "Checkpoint", err)
	if head := p.head(); cp.Seq != head || p.num("SELECT count(*) FROM pgcloak.audit_checkpoints") != before+1 {
		t.Errorf("Checkpoint at seq %d, head %d: no new checkpoint of the head", cp.Seq, head)
	}

	for _, q := range []string{
		"UPDATE pgcloak.audit_log SET actor = 'x' WHERE seq = 1",
		"DELETE FROM pgcloak.audit_log WHERE seq = 1",
		"UPDATE pgcloak.audit_checkpoints SET actor = 'x'",
		"CREATE TABLE pgcloak.admin_ddl (i int)",
	} {
		_, err := admin.Pool().Exec(ctx, q)
		denied(t, "admin: "+q, err)
	}
	return conf
}

// privProxy: pgcloak_proxy loads active and decrypt_only DEKs, appends
// audit entries and checkpoints and flushes counters; every change of
// keys or of the audit log, and reading the log, is refused with 42501.
// It returns the entry the proxy appended.
func privProxy(t *testing.T, p *privEnv, proxy, admin *Store, conf Keyring, latest int) audit.Entry {
	ctx := p.ctx
	v, err := proxy.SchemaVersion(ctx)
	must(t, "schema version", err)
	rings, err := proxy.Keyrings(ctx)
	must(t, "Keyrings", err)
	if v != latest || len(rings) != 2 {
		t.Errorf("proxy sees schema %d and %d rings, want %d and 2", v, len(rings), latest)
	}

	for _, ver := range []uint32{3, 2} { // active, decrypt_only
		dek, err := proxy.LoadDEK(ctx, conf.ID, ver)
		must(t, fmt.Sprintf("LoadDEK version %d (%s)", ver, p.state("confidential", ver)), err)
		ref, err := admin.LoadDEK(ctx, conf.ID, ver)
		must(t, "LoadDEK as admin", err)
		if dek.Len() != DEKSize || !dek.Equal(ref) {
			t.Errorf("LoadDEK version %d: the proxy's DEK differs from the admin's", ver)
		}
		dek.Zero()
		ref.Zero()
	}
	head := p.head()
	_, err = proxy.LoadDEK(ctx, conf.ID, 1) // retired: refused and audited
	if !errors.Is(err, ErrKeyRetired) {
		t.Errorf("LoadDEK retired version = %v, want ErrKeyRetired", err)
	}
	if got := p.str("SELECT event || ' ' || db_user FROM pgcloak.audit_log WHERE seq = $1", head+1); got != audit.EventAccessDenied+" pgcloak_proxy" {
		t.Errorf("entry after the refused load = %q, want the denial by pgcloak_proxy", got)
	}

	e, err := proxy.Audit(ctx, audit.Record{Event: "test.proxy", Keyring: "confidential", Version: 3})
	must(t, "Audit", err)
	if e.Seq != head+2 || e.DBUser != "pgcloak_proxy" || p.head() != e.Seq {
		t.Errorf("Audit appended seq %d by %q, head %d; want seq %d by pgcloak_proxy at the head", e.Seq, e.DBUser, p.head(), head+2)
	}

	cp, err := proxy.Checkpoint(ctx)
	must(t, "Checkpoint", err)
	if cp.Seq != e.Seq || p.num("SELECT count(*) FROM pgcloak.audit_checkpoints WHERE seq = $1 AND actor = 'pgcloak_proxy@test'", e.Seq) != 1 {
		t.Errorf("Checkpoint at seq %d: no checkpoint of seq %d written by the proxy", cp.Seq, e.Seq)
	}

	const countQ = "SELECT encryptions FROM pgcloak.key_versions WHERE keyring_id = $1 AND version = 3"
	enc := p.num(countQ, int64(conf.ID))
	proxy.CountEncryptions(conf.ID, 3, 5)
	must(t, "Flush", proxy.Flush(ctx))
	if got := p.num(countQ, int64(conf.ID)); got != enc+5 || proxy.UnflushedEncryptions(conf.ID, 3) != 0 {
		t.Errorf("after Flush: encryptions %d (was %d), want +5", got, enc)
	}
	_, err = proxy.Pool().Exec(ctx, "UPDATE pgcloak.key_versions SET encryptions = 0 WHERE keyring_id = $1 AND version = 3", int64(conf.ID))
	if !errors.Is(mapDBError(err), ErrImmutable) {
		t.Errorf("proxy lowering a counter = %v, want the trigger's refusal", err)
	}

	// Refused: key changes through the API, with nothing changed.
	versions := p.num("SELECT count(*) FROM pgcloak.key_versions")
	_, err = proxy.Rotate(ctx, "confidential", "proxy")
	denied(t, "Rotate", err)
	_, err = proxy.SetState(ctx, "confidential", 2, StateRetired, "proxy")
	denied(t, "SetState", err)
	_, _, err = proxy.EnsureKeyring(ctx, KeyringSpec{Name: "proxy_ring", Purpose: PurposeEncryption, KEK: "hsm2"})
	denied(t, "EnsureKeyring (create)", err)
	if got := p.num("SELECT count(*) FROM pgcloak.key_versions"); got != versions || p.state("confidential", 2) != "decrypt_only" ||
		p.num("SELECT count(*) FROM pgcloak.keyrings") != 2 {
		t.Errorf("a refused proxy call changed the key store")
	}
	// Refused: reading the audit log.
	_, err = proxy.AuditTail(ctx, 1)
	denied(t, "AuditTail", err)
	_, err = proxy.VerifyAudit(ctx)
	denied(t, "VerifyAudit", err)
	// Refused: what the API never does, as direct SQL.
	for _, q := range []string{
		"UPDATE pgcloak.key_versions SET state = 'retired' WHERE version = 2",
		"DELETE FROM pgcloak.key_versions WHERE version = 1",
		"INSERT INTO pgcloak.keyrings (name, purpose, kek_name, created_by, updated_by) VALUES ('x', 'encryption', 'hsm', 'p', 'p')",
		"UPDATE pgcloak.keyrings SET kek_name = 'evil'",
		// no WHERE: that would need SELECT, refused on its own
		"UPDATE pgcloak.audit_log SET actor = 'x'",
		"DELETE FROM pgcloak.audit_log",
		"TRUNCATE pgcloak.audit_log",
		"SELECT count(*) FROM pgcloak.audit_log",
		"UPDATE pgcloak.audit_head SET seq = 0",
		"DELETE FROM pgcloak.audit_checkpoints",
		"SELECT count(*) FROM pgcloak.reencrypt_jobs",
		"DELETE FROM pgcloak.reencrypt_jobs",
	} {
		_, err := proxy.Pool().Exec(ctx, q)
		denied(t, "proxy: "+q, err)
	}
	if got := p.head(); got != e.Seq {
		t.Errorf("head moved from %d to %d during the refused calls", e.Seq, got)
	}
	return e
}

// privAuditor: pgcloak_auditor verifies the log (checkpoint MACs
// included) and reads its tail, and cannot write anything.
func privAuditor(t *testing.T, p *privEnv, auditor *Store, last audit.Entry) {
	ctx := p.ctx
	r, err := auditor.VerifyAudit(ctx)
	must(t, "VerifyAudit", err)
	entries, cps := p.num("SELECT count(*) FROM pgcloak.audit_log"), p.num("SELECT count(*) FROM pgcloak.audit_checkpoints")
	if !r.OK() || r.Entries != entries || int64(r.VerifiedMACs) != cps || cps != 2 || r.LastCheckpoint != last.Seq {
		t.Errorf("VerifyAudit: %+v; want OK, %d entries, %d verified checkpoints up to seq %d", r, entries, cps, last.Seq)
	}
	tail, err := auditor.AuditTail(ctx, 3)
	must(t, "AuditTail", err)
	if len(tail) != 3 || tail[2].Seq != last.Seq || tail[2].Hash != last.Hash || tail[2].Event != "test.proxy" {
		t.Errorf("AuditTail(3) = %d entries, last %+v; want the proxy's entry %d last", len(tail), tail[len(tail)-1], last.Seq)
	}
	vs, err := auditor.List(ctx)
	must(t, "List", err)
	if len(vs) != 4 {
		t.Errorf("List: %d versions, want 4", len(vs))
	}

	_, err = auditor.Audit(ctx, audit.Record{Event: "test.auditor"})
	denied(t, "Audit", err)
	_, err = auditor.Rotate(ctx, "confidential", "auditor")
	denied(t, "Rotate", err)
	for _, q := range []string{
		"UPDATE pgcloak.key_versions SET encryptions = encryptions + 1",
		"SELECT count(*) FROM pgcloak.reencrypt_jobs",
	} {
		_, err := auditor.Pool().Exec(ctx, q)
		denied(t, "auditor: "+q, err)
	}
	if got := p.head(); got != last.Seq {
		t.Errorf("head moved from %d to %d: the auditor wrote", last.Seq, got)
	}
}
