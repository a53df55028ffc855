package keyring

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/hsmfake"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// One throwaway cluster for the package; each test gets its own database.
var shared = pgtest.Shared{Name: "keyring"}

func TestMain(m *testing.M) { os.Exit(shared.Run(m)) }

// env is one test's key-store database, a fake KEK named "hsm" and a
// migrated Store.
type env struct {
	t     *testing.T
	ctx   context.Context
	dsn   string
	pool  *pgxpool.Pool
	kek   *hsmfake.KEK
	store *Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	name, cluster := shared.Database(ctx, t)
	if cluster == nil {
		return nil
	}
	e := &env{t: t, ctx: ctx, dsn: cluster.DSN("postgres", "", name), kek: hsmfake.New()}
	pool, err := pgxpool.New(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.pool = pool
	e.store = e.newStore(StoreOpts{})
	if _, err := e.store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// As `keys init` does: the audit key ring, so checkpoints work.
	if _, _, err := e.store.EnsureKeyring(ctx, KeyringSpec{Name: "audit", Purpose: PurposeAudit, KEK: "hsm"}); err != nil {
		t.Fatal(err)
	}
	return e
}

// newStore returns a Store on the env's pool; zero fields get test
// defaults (KEK "hsm" = the fake, actor "tester").
func (e *env) newStore(opts StoreOpts) *Store {
	e.t.Helper()
	if opts.Pool == nil && opts.DSN == "" {
		opts.Pool = e.pool
	}
	if opts.KEKs == nil {
		opts.KEKs = map[string]hsm.KEK{"hsm": e.kek}
	}
	if opts.Actor == "" {
		opts.Actor = "tester"
	}
	if opts.OnError == nil {
		opts.OnError = func(err error) { e.t.Errorf("store background error: %v", err) }
	}
	s, err := New(e.ctx, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(s.Close)
	return s
}

// ring creates an encryption key ring "confidential" and returns it.
func (e *env) ring(name string) Keyring {
	e.t.Helper()
	kr, created, err := e.store.EnsureKeyring(e.ctx, KeyringSpec{
		Name: name, Purpose: PurposeEncryption, Classification: "confidential", KEK: "hsm",
	})
	if err != nil || !created {
		e.t.Fatalf("EnsureKeyring(%s) = %v, created %v", name, err, created)
	}
	return kr
}

// conn is a dedicated superuser connection to the env's database, for
// direct SQL (what an operator or an attacker with the owner's rights does).
func (e *env) conn() *pgx.Conn {
	e.t.Helper()
	c, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// exec runs SQL as the superuser and fails the test on error.
func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// timeTravel moves a pending_deletion version's window end into the past,
// bypassing the triggers, as if the window had elapsed.
func (e *env) timeTravel(ringID, version uint32, ago time.Duration) {
	e.t.Helper()
	c := e.conn()
	for _, q := range []string{
		"BEGIN",
		"SET LOCAL session_replication_role = replica", // user triggers off, this transaction only
		fmt.Sprintf("UPDATE pgcloak.key_versions SET deletion_after = now() - interval '%d seconds' WHERE keyring_id = %d AND version = %d",
			int(ago.Seconds()), ringID, version),
		"COMMIT",
	} {
		if _, err := c.Exec(e.ctx, q); err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
	}
}

// must fails the test on err and returns v: e.must(s.Rotate(…)).
func (e *env) must(v Version, err error) Version {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}
