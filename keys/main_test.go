package keys

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/hsmfake"
	"github.com/pgcloak/pgcloak/internal/pgtest"
	"github.com/pgcloak/pgcloak/keyring"
)

// One throwaway cluster for the package; each test gets its own database.
var shared = pgtest.Shared{Name: "keys"}

func TestMain(m *testing.M) { os.Exit(shared.Run(m)) }

// env is one test's key-store database with a migrated Store (fake KEK
// "hsm") and an encryption key ring "confidential" (version 1 active).
type env struct {
	t     *testing.T
	ctx   context.Context
	dsn   string
	pool  *pgxpool.Pool
	kek   *hsmfake.KEK
	store *keyring.Store
	ring  keyring.Keyring
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
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
	e.store = e.newStore(keyring.StoreOpts{Pool: pool})
	if _, err := e.store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	e.ring, _, err = e.store.EnsureKeyring(ctx, keyring.KeyringSpec{
		Name: "confidential", Purpose: keyring.PurposeEncryption, Classification: "confidential", KEK: "hsm",
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// newStore returns a Store with the env's fake KEK "hsm" on opts.Pool or
// opts.DSN.
func (e *env) newStore(opts keyring.StoreOpts) *keyring.Store {
	e.t.Helper()
	opts.KEKs = map[string]hsm.KEK{"hsm": e.kek}
	opts.Actor = "tester"
	opts.CheckpointEvery = -1
	opts.OnError = func(err error) { e.t.Logf("store background error: %v", err) }
	s, err := keyring.New(e.ctx, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(s.Close)
	return s
}

// source returns a Source on the env's store; zero opts fields get the
// package defaults. It is closed at cleanup.
func (e *env) source(opts Opts) *Source {
	e.t.Helper()
	if opts.Store == nil {
		opts.Store = e.store
	}
	opts.Logger = zerolog.New(zerolog.NewTestWriter(e.t))
	s, err := New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = s.Close() })
	return s
}

// run starts s.Run and waits until it listens.
func (e *env) run(s *Source) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-s.listening:
	case <-time.After(20 * time.Second):
		e.t.Fatal("Run did not LISTEN within 20s")
	}
}

// must returns a function that fails the test on err and returns v:
// must(s.EncryptionKey(ctx, "confidential"))(t).
func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// timeTravel moves a pending_deletion version's window end into the past,
// bypassing the triggers, as if the window had elapsed.
func (e *env) timeTravel(ringID, version uint32) {
	e.t.Helper()
	c, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, q := range []string{
		"BEGIN",
		"SET LOCAL session_replication_role = replica", // user triggers off, this transaction only
		fmt.Sprintf("UPDATE pgcloak.key_versions SET deletion_after = now() - interval '1 hour' WHERE keyring_id = %d AND version = %d", ringID, version),
		"COMMIT",
	} {
		if _, err := c.Exec(e.ctx, q); err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
	}
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached in 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
