package rotation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
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

// One throwaway cluster for the package; each test gets its own database,
// so the advisory lock (per database) is each test's own.
var shared = pgtest.Shared{Name: "rotation"}

func TestMain(m *testing.M) { os.Exit(shared.Run(m)) }

// env is one test's key-store database: a migrated schema, a fake KEK
// "hsm" and the encryption key ring "confidential" (version 1 active).
type env struct {
	t    *testing.T
	ctx  context.Context
	dsn  string
	pool *pgxpool.Pool // the test's own connections (queries, time travel)
	kek  *hsmfake.KEK
	ring keyring.Keyring
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
	st := e.store()
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	e.ring, _, err = st.EnsureKeyring(ctx, keyring.KeyringSpec{
		Name: "confidential", Purpose: keyring.PurposeEncryption, Classification: "confidential", KEK: "hsm",
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// store returns a Store with a pool of its own, as another process would
// have. It is closed at cleanup.
func (e *env) store() *keyring.Store {
	e.t.Helper()
	s, err := keyring.New(e.ctx, keyring.StoreOpts{
		DSN:             e.dsn,
		KEKs:            map[string]hsm.KEK{"hsm": e.kek},
		Actor:           "tester",
		CheckpointEvery: -1,
		OnError:         func(err error) { e.t.Logf("store background error: %v", err) },
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(s.Close)
	return s
}

// proc is one simulated proxy: its own key store pool and a Scheduler.
type proc struct {
	name  string
	store *keyring.Store
	s     *Scheduler
	logs  *logSink
	stop  func() // cancels Run and waits for it
}

// newProc builds a Scheduler on a store of its own. policies nil: one
// policy for "confidential" with limits that are never reached.
func (e *env) newProc(name string, interval time.Duration, policies []Policy) *proc {
	e.t.Helper()
	if policies == nil {
		policies = []Policy{{Ring: "confidential", RotateAfter: 24 * time.Hour, RotateAfterEncryptions: 1 << 30}}
	}
	p := &proc{name: name, store: e.store(), logs: &logSink{t: e.t, name: name}}
	s, err := New(Opts{
		Store:         p.store,
		Pool:          p.store.Pool(),
		Policies:      policies,
		CheckInterval: interval,
		Logger:        zerolog.New(p.logs),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	p.s = s
	e.t.Cleanup(s.Close)
	return p
}

// run starts p's Scheduler.
func (e *env) run(p *proc) {
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- p.s.Run(ctx) }()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("%s: Run: %v", p.name, err)
			}
		})
	}
	e.t.Cleanup(p.stop)
}

// versions returns the ring's versions (number → state).
func (e *env) versions() map[uint32]keyring.Version {
	e.t.Helper()
	st := e.store()
	vs, err := st.Versions(e.ctx, "confidential")
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[uint32]keyring.Version{}
	for _, v := range vs {
		out[v.Version] = v
	}
	return out
}

// rotations returns the reasons of the key.rotate audit entries of
// versions after the first, in order.
func (e *env) rotations() []string {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, `SELECT coalesce(details->>'reason', '') FROM pgcloak.audit_log
		WHERE event = 'key.rotate' AND keyring = 'confidential' AND details ? 'previous' ORDER BY seq`)
	if err != nil {
		e.t.Fatal(err)
	}
	reasons, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		e.t.Fatal(err)
	}
	return reasons
}

// makeDue moves the activation of the ring's active version back by d,
// bypassing the triggers, as if it had been active that much longer.
func (e *env) makeDue(d time.Duration) {
	e.t.Helper()
	c, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, q := range []string{
		"BEGIN",
		"SET LOCAL session_replication_role = replica", // user triggers off, this transaction only
		fmt.Sprintf(`UPDATE pgcloak.key_versions SET activated_at = activated_at - interval '%d seconds'
			WHERE keyring_id = %d AND state = 'active'`, int64(d/time.Second), e.ring.ID),
		"COMMIT",
	} {
		if _, err := c.Exec(e.ctx, q); err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
	}
}

// The halves of LockKey as pg_locks shows them.
const (
	lockClassID = LockKey >> 32
	lockObjID   = LockKey & 0xffffffff
)

// lockHolder returns the backend pid holding LockKey in the test's
// database, or 0.
func (e *env) lockHolder() int32 {
	e.t.Helper()
	var pid int32
	err := e.pool.QueryRow(e.ctx, `SELECT coalesce(max(pid), 0) FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND classid = $1 AND objid = $2 AND objsubid = 1`,
		lockClassID, lockObjID).Scan(&pid)
	if err != nil {
		e.t.Fatal(err)
	}
	return pid
}

// leaders returns the procs that say they lead.
func leaders(ps ...*proc) []*proc {
	var out []*proc
	for _, p := range ps {
		if p.s.Leading() {
			out = append(out, p)
		}
	}
	return out
}

// waitFor polls cond for up to limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached in %v", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logSink keeps a Scheduler's JSON log lines and echoes them to the test
// log.
type logSink struct {
	t    *testing.T
	name string
	mu   sync.Mutex
	msgs []map[string]any
}

func (l *logSink) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(p), &m); err != nil {
		return 0, err
	}
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
	l.t.Logf("%s: %s", l.name, strings.TrimSpace(string(p)))
	return len(p), nil
}

// count returns how many lines had message msg.
func (l *logSink) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m["message"] == msg {
			n++
		}
	}
	return n
}

// lines returns the lines with message msg.
func (l *logSink) lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, m := range l.msgs {
		if m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}
