package rotation

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/keyring"
)

// proxyGrants are the pgcloak_proxy grants of docs/keys.md §5 "Database
// roles" (keyring/privileges_test.go runs that block as written and keeps
// it honest; this test only needs the proxy's part).
const proxyGrants = `
GRANT USAGE ON SCHEMA pgcloak TO pgcloak_proxy;
GRANT SELECT ON pgcloak.schema_migrations TO pgcloak_proxy;
GRANT SELECT ON pgcloak.keyrings, pgcloak.key_versions TO pgcloak_proxy;
GRANT UPDATE (encryptions) ON pgcloak.key_versions TO pgcloak_proxy;
GRANT SELECT ON pgcloak.audit_head, pgcloak.audit_checkpoints TO pgcloak_proxy;
GRANT INSERT ON pgcloak.audit_log, pgcloak.audit_checkpoints TO pgcloak_proxy;
`

// rotatorBlock returns the SQL of docs/keys.md §5 "The rotation role".
func rotatorBlock(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/keys.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "\n### The rotation role")
	if !ok {
		t.Fatal(`docs/keys.md has no "### The rotation role" subsection`)
	}
	if i := strings.Index(rest, "\n#"); i >= 0 {
		rest = rest[:i]
	}
	_, block, ok := strings.Cut(rest, "```sql\n")
	if !ok {
		t.Fatal(`"The rotation role" has no sql block`)
	}
	block, _, ok = strings.Cut(block, "```")
	if !ok {
		t.Fatal(`"The rotation role": unterminated sql block`)
	}
	return block
}

// execScript runs the statements of a script one by one, skipping the
// CREATE ROLE of a role that exists (roles are per cluster, and the
// cluster outlives one run of this test with -count).
func execScript(t *testing.T, e *env, script string) {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(script, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines = append(lines, l)
		}
	}
	for _, stmt := range strings.Split(strings.Join(lines, "\n"), ";") {
		stmt = strings.TrimSpace(stmt)
		if stmt == "" {
			continue
		}
		if f := strings.Fields(stmt); len(f) >= 3 && strings.EqualFold(f[0], "CREATE") && strings.EqualFold(f[1], "ROLE") {
			var exists bool
			if err := e.pool.QueryRow(e.ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", f[2]).Scan(&exists); err != nil {
				t.Fatal(err)
			}
			if exists {
				continue
			}
		}
		if _, err := e.pool.Exec(e.ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
}

// storeAs returns a Store whose sessions run as role (the superuser's
// connections with role set at start-up, as PGOPTIONS='-c role=…' does).
func (e *env) storeAs(role string) *keyring.Store {
	e.t.Helper()
	cfg, err := pgxpool.ParseConfig(e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["role"] = role
	pool, err := pgxpool.NewWithConfig(e.ctx, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	s, err := keyring.New(e.ctx, keyring.StoreOpts{
		Pool: pool, KEKs: map[string]hsm.KEK{"hsm": e.kek}, Actor: role + "@test", CheckpointEvery: -1,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// procAs is newProc with a Store running as role.
func (e *env) procAs(role string, policies []Policy) *proc {
	e.t.Helper()
	p := &proc{name: role, store: e.storeAs(role), logs: &logSink{t: e.t, name: role}}
	s, err := New(Opts{Store: p.store, Pool: p.store.Pool(), Policies: policies, CheckInterval: tick, Logger: zerolog.New(p.logs)})
	if err != nil {
		e.t.Fatal(err)
	}
	p.s = s
	e.t.Cleanup(s.Close)
	return p
}

// A proxy whose key-store role may not rotate (pgcloak_proxy) never
// stands for election, even alone with a due ring; one running as
// pgcloak_rotator, with exactly the grants docs/keys.md §5 lists, leads
// and rotates, and cannot schedule a deletion.
func TestRotationRole(t *testing.T) {
	e := newEnv(t)
	execScript(t, e, "CREATE ROLE pgcloak_proxy NOLOGIN;\n"+proxyGrants)
	execScript(t, e, rotatorBlock(t))

	for role, want := range map[string]bool{"pgcloak_proxy": false, "pgcloak_rotator": true} {
		got, ok, err := e.storeAs(role).MayRotate(e.ctx)
		if err != nil || ok != want || got != role {
			t.Errorf("MayRotate as %s = %q, %v, %v; want %v", role, got, ok, err, want)
		}
	}
	if _, ok, err := e.store().MayRotate(e.ctx); err != nil || !ok {
		t.Errorf("MayRotate as superuser = %v, %v", ok, err)
	}

	policies := []Policy{{Ring: "confidential", RotateAfter: time.Hour, RotateAfterEncryptions: 1 << 30}}
	e.makeDue(2 * time.Hour)
	proxy := e.procAs("pgcloak_proxy", policies)
	e.run(proxy)
	time.Sleep(8 * tick)
	if proxy.s.Leading() || e.lockHolder() != 0 || len(e.versions()) != 1 {
		t.Fatalf("pgcloak_proxy: leading %v, lock holder %d, %d versions; want no part in the election",
			proxy.s.Leading(), e.lockHolder(), len(e.versions()))
	}
	if n := proxy.logs.count("scheduled rotation off in this proxy: its key-store role may not rotate keys, so it does not stand for election (grant the rotation role, docs/keys.md §5)"); n != 1 {
		t.Errorf("pgcloak_proxy logged the refusal %d times, want once", n)
	}

	rotator := e.procAs("pgcloak_rotator", policies)
	e.run(rotator)
	waitFor(t, 10*time.Second, "rotation by pgcloak_rotator", func() bool { return rotator.logs.count("key rotated on schedule") == 1 })
	var dbUser string
	if err := e.pool.QueryRow(e.ctx, `SELECT db_user FROM pgcloak.audit_log WHERE event = 'key.rotate' AND version = 2`).Scan(&dbUser); err != nil || dbUser != "pgcloak_rotator" {
		t.Errorf("key.rotate of version 2 appended by %q (%v), want pgcloak_rotator", dbUser, err)
	}
	if proxy.s.Leading() {
		t.Error("pgcloak_proxy leads")
	}

	// Beyond rotation: retiring is possible (availability), scheduling a
	// deletion is not.
	st := rotator.store
	if _, err := st.SetState(e.ctx, "confidential", 1, keyring.StateRetired, "test"); err != nil {
		t.Fatalf("rotator retiring version 1: %v", err)
	}
	_, err := st.ScheduleDeletion(e.ctx, "confidential", 1, keyring.MinDeletionWindow, "test")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("rotator scheduling a deletion = %v, want permission denied", err)
	}
	_, err = st.Pool().Exec(e.ctx, "UPDATE pgcloak.key_versions SET wrapped_dek = NULL WHERE keyring_id = $1 AND version = 1", int64(e.ring.ID))
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("rotator destroying a DEK = %v, want permission denied", err)
	}
}
