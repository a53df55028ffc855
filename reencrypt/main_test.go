package reencrypt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/hsmfake"
	"github.com/pgcloak/pgcloak/internal/pgtest"
	"github.com/pgcloak/pgcloak/keyring"
)

// One throwaway cluster for the package; each test gets its own database,
// which holds both the key store (schema pgcloak) and the application
// tables (schema public).
var shared = pgtest.Shared{Name: "reencrypt"}

func TestMain(m *testing.M) { os.Exit(shared.Run(m)) }

// env is one test's database: a migrated key store with the audit ring and
// an encryption ring "confidential" (fake KEK "hsm"), and a session for the
// application tables.
type env struct {
	t      *testing.T
	ctx    context.Context
	dsn    string
	pool   *pgxpool.Pool
	store  *keyring.Store
	kek    *hsmfake.KEK
	ringID uint32
	db     *pgx.Conn // the engine's session
	logs   *bytes.Buffer
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	name, cluster := shared.Database(ctx, t)
	if cluster == nil {
		return nil
	}
	e := &env{t: t, ctx: ctx, dsn: cluster.DSN("postgres", "", name), logs: &bytes.Buffer{}}
	pool, err := pgxpool.New(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.pool = pool
	e.kek = hsmfake.New()
	store, err := keyring.New(ctx, keyring.StoreOpts{Pool: pool, KEKs: map[string]hsm.KEK{"hsm": e.kek}, Actor: "tester",
		OnError: func(err error) { t.Errorf("store background error: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []keyring.KeyringSpec{
		{Name: "audit", Purpose: keyring.PurposeAudit, KEK: "hsm"},
		{Name: "confidential", Purpose: keyring.PurposeEncryption, Classification: "confidential", KEK: "hsm"},
		{Name: "internal", Purpose: keyring.PurposeEncryption, Classification: "internal", KEK: "hsm"},
	} {
		r, _, err := store.EnsureKeyring(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if r.Name == "confidential" {
			e.ringID = r.ID
		}
	}
	e.db = e.conn()
	return e
}

func (e *env) conn() *pgx.Conn {
	e.t.Helper()
	c, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(e.ctx, sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// key returns the envelope key of a version of a ring (any loadable state).
func (e *env) key(ring string, version uint32) *envelope.Key {
	e.t.Helper()
	kr, err := e.store.Keyring(e.ctx, ring)
	if err != nil {
		e.t.Fatal(err)
	}
	dek, err := e.store.Loader(keyring.LoaderOpts{AllowDisabled: true}).LoadDEK(e.ctx, kr.ID, version)
	if err != nil {
		e.t.Fatalf("load %s version %d: %v", ring, version, err)
	}
	defer dek.Zero()
	k, err := envelope.NewKey(kr.ID, version, dek)
	if err != nil {
		e.t.Fatal(err)
	}
	return k
}

// seal encrypts plain for column context ctxStr under ring/version.
func (e *env) seal(ring string, version uint32, ctxStr, plain string) []byte {
	e.t.Helper()
	b, err := e.key(ring, version).Seal(nil, nil, ctxStr, []byte(plain))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// open decrypts a stored value with the version its header names.
func (e *env) open(ctxStr string, val []byte) (string, envelope.Header) {
	e.t.Helper()
	h, err := envelope.ParseHeader(val)
	if err != nil {
		e.t.Fatalf("stored value is not an envelope: %v", err)
	}
	var ring string
	rings, err := e.store.Keyrings(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, r := range rings {
		if r.ID == h.KeyringID {
			ring = r.Name
		}
	}
	p, err := e.key(ring, h.KeyVersion).Open(nil, val, ctxStr)
	if err != nil {
		e.t.Fatalf("open ring %d version %d: %v", h.KeyringID, h.KeyVersion, err)
	}
	return string(p), h
}

func (e *env) rotate() uint32 {
	e.t.Helper()
	v, err := e.store.Rotate(e.ctx, "confidential", "test")
	if err != nil {
		e.t.Fatal(err)
	}
	return v.Version
}

// col is a configured confidential column of public.<table>.
func col(table, column string) catalog.Column {
	return catalog.Column{Schema: "public", Table: table, Column: column, Type: "text", Classification: "confidential"}
}

// run builds an engine with test defaults (no rate limit, logs into
// e.logs) and runs it.
func (e *env) run(ctx context.Context, o Opts) (*Report, error) {
	e.t.Helper()
	o.Store, o.DB = e.store, e.db
	if o.Rate == 0 {
		o.Rate = -1
	}
	if o.Owner == "" {
		o.Owner = "test:" + e.t.Name()
	}
	o.Log = zerolog.New(e.logs)
	eng, err := New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	return eng.Run(ctx)
}

// versions returns the header versions stored in table.column, by
// primary key text (NULL values omitted).
func (e *env) versions(table, column, pk string) map[string]uint32 {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, fmt.Sprintf("SELECT %s::text, %s FROM %s WHERE %s IS NOT NULL", pk, column, table, column))
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]uint32{}
	var (
		k string
		v []byte
	)
	_, err = pgx.ForEachRow(rows, []any{&k, &v}, func() error {
		if len(v) >= 13 {
			out[k] = binary.BigEndian.Uint32(v[9:13])
		} else {
			out[k] = 0
		}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) result(rep *Report, column string) ColumnResult {
	e.t.Helper()
	for _, r := range rep.Columns {
		if r.Plan.Column.QualifiedName() == column {
			return r
		}
	}
	e.t.Fatalf("no result for %s in %+v", column, rep)
	return ColumnResult{}
}

// auditEvents returns the events of the audit log, in order.
func (e *env) auditEvents() []string {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, "SELECT event FROM pgcloak.audit_log ORDER BY seq")
	if err != nil {
		e.t.Fatal(err)
	}
	evs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func count(evs []string, ev string) int {
	n := 0
	for _, x := range evs {
		if x == ev {
			n++
		}
	}
	return n
}
