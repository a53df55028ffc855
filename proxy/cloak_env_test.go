package proxy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// Tests of the encryption layer against a real PostgreSQL server, with an
// in-memory key source (the real one is tested in package keys and, end to
// end, in integration/).

// testKeys is a KeySource over fixed keys: ring 1 ("confidential"),
// ring 2 ("restricted"), versions added with add.
type testKeys struct {
	mu        sync.Mutex
	keys      map[[2]uint32]*envelope.Key
	active    map[string]*envelope.Key
	destroyed map[[2]uint32]bool
	count     map[[2]uint32]int
}

func newTestKeys(t testing.TB) *testKeys {
	k := &testKeys{keys: map[[2]uint32]*envelope.Key{}, active: map[string]*envelope.Key{},
		destroyed: map[[2]uint32]bool{}, count: map[[2]uint32]int{}}
	k.add(t, "confidential", 1, 1)
	k.add(t, "restricted", 2, 1)
	k.add(t, "internal", 3, 1)
	return k
}

// add creates version v of ring id and makes it the active one of class.
func (k *testKeys) add(t testing.TB, class string, id, v uint32) *envelope.Key {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	key, err := envelope.NewKey(id, v, secret.New(raw))
	if err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[[2]uint32{id, v}] = key
	k.active[class] = key
	return key
}

func (k *testKeys) EncryptionKey(_ context.Context, class string) (*envelope.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if key := k.active[class]; key != nil {
		return key, nil
	}
	return nil, fmt.Errorf("no key for %s", class)
}

func (k *testKeys) Key(_ context.Context, id, v uint32) (*envelope.Key, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.destroyed[[2]uint32{id, v}] {
		return nil, fmt.Errorf("ring %d version %d: %w", id, v, ErrKeyDestroyed)
	}
	if key := k.keys[[2]uint32{id, v}]; key != nil {
		return key, nil
	}
	return nil, errors.New("unknown key version")
}

func (k *testKeys) Encrypted(key *envelope.Key, n int) {
	k.mu.Lock()
	k.count[[2]uint32{key.KeyringID(), key.Version()}] += n
	k.mu.Unlock()
}

// testCatalogs resolves through one pool per database.
type testCatalogs struct {
	r   *catalog.Resolver
	dsn func(db string) string
	mu  sync.Mutex
	dbs map[string]*pgxpool.Pool
}

func (c *testCatalogs) pool(ctx context.Context, db string) (*pgxpool.Pool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.dbs[db]; p != nil {
		return p, nil
	}
	p, err := pgxpool.New(ctx, c.dsn(db))
	if err != nil {
		return nil, err
	}
	c.dbs[db] = p
	return p, nil
}

func (c *testCatalogs) Catalog(ctx context.Context, db string) (*catalog.Catalog, error) {
	p, err := c.pool(ctx, db)
	if err != nil {
		return nil, err
	}
	cat, _, err := c.r.Catalog(ctx, db, p)
	return cat, err
}

func (c *testCatalogs) Refresh(ctx context.Context, db string) (*catalog.Catalog, error) {
	p, err := c.pool(ctx, db)
	if err != nil {
		return nil, err
	}
	cat, _, err := c.r.Refresh(ctx, db, p)
	return cat, err
}

func (c *testCatalogs) Invalidate(db string) { c.r.Invalidate(db) }

// testAuditor collects read audits.
type testAuditor struct {
	mu  sync.Mutex
	got []ReadAudit
}

func (a *testAuditor) AuditRead(r ReadAudit) {
	a.mu.Lock()
	a.got = append(a.got, r)
	a.mu.Unlock()
}

func (a *testAuditor) all() []ReadAudit {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]ReadAudit(nil), a.got...)
}

// cloakEnv is a cluster, a proxy with encryption, and helpers.
type cloakEnv struct {
	t       *testing.T
	ctx     context.Context
	cluster *pgtest.Cluster
	proxy   *testProxy
	keys    *testKeys
	audit   *testAuditor
	direct  *pgx.Conn // superuser, straight to PostgreSQL
}

// cloakColumns is the configuration of the test schema (see newCloakEnv).
var cloakColumns = []catalog.Column{
	{Schema: "public", Table: "customers", Column: "ssn", Type: "text", Classification: "confidential", Search: "none"},
	{Schema: "public", Table: "customers", Column: "age", Type: "int4", Classification: "confidential", Search: "none"},
	{Schema: "public", Table: "customers", Column: "secret", Type: "text", Classification: "restricted", Search: "none"},
	{Schema: "public", Table: "customers", Column: "nick", Type: "varchar(20)", Classification: "internal", Search: "none"},
}

func newCloakEnv(t *testing.T, extra []catalog.Column, ddl ...string) *cloakEnv {
	t.Helper()
	return newCloakEnvWith(t, nil, extra, ddl...)
}

func newCloakEnvPolicies(t *testing.T, policies map[string]Policy) *cloakEnv {
	t.Helper()
	return newCloakEnvWith(t, policies, nil)
}

func newCloakEnvWith(t *testing.T, policies map[string]Policy, extra []catalog.Column, ddl ...string) *cloakEnv {
	t.Helper()
	if policies == nil {
		policies = map[string]Policy{
			"internal":     {PlaintextRoles: []string{"app", "postgres", "analyst"}, OnDenied: DeniedCiphertext},
			"confidential": {PlaintextRoles: []string{"app", "postgres"}, OnDenied: DeniedMask},
			"restricted":   {PlaintextRoles: []string{"app", "postgres"}, OnDenied: DeniedNull, AuditReads: true},
		}
	}
	c := pgtest.New(t, pgtest.Opts{})
	if c == nil {
		t.Fatal("no PostgreSQL") // pgtest.New reports the missing binaries
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	for _, u := range []string{"app", "analyst", "auditor"} {
		if err := c.AddUser(ctx, u, "pw-"+u, pgtest.MethodTrust); err != nil {
			t.Fatal(err)
		}
	}
	direct, err := pgx.Connect(ctx, c.SuperDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = direct.Close(context.Background()) })
	stmts := append([]string{
		`CREATE TABLE customers (id int PRIMARY KEY, name text, ssn bytea, age bytea, secret bytea, nick bytea)`,
		`GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC`,
	}, ddl...)
	stmts = append(stmts, `GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC`)
	for _, s := range stmts {
		if _, err := direct.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	cols := append(append([]catalog.Column(nil), cloakColumns...), extra...)
	r, err := catalog.NewResolver(catalog.ResolverOpts{Columns: cols, MinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	cats := &testCatalogs{r: r, dbs: map[string]*pgxpool.Pool{}, dsn: func(db string) string { return c.DSN("postgres", "", db) }}
	t.Cleanup(func() {
		for _, p := range cats.dbs {
			p.Close()
		}
	})
	env := &cloakEnv{t: t, ctx: ctx, cluster: c, keys: newTestKeys(t), audit: &testAuditor{}, direct: direct}
	env.proxy = startProxy(t, c.Addr(), func(o *Opts) {
		o.Encryption = &Encryption{
			Catalogs: cats,
			Keys:     env.keys,
			Auditor:  env.audit,
			Policies: policies,
		}
	})
	return env
}

// connect opens a pgx connection through the proxy as user.
func (e *cloakEnv) connect(user string, mode pgx.QueryExecMode) *pgx.Conn {
	e.t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable", user, e.proxy.addr))
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = mode
	conn, err := pgx.ConnectConfig(e.ctx, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// rawColumn reads a column directly from PostgreSQL.
func (e *cloakEnv) rawColumn(table, col string, id int) []byte {
	e.t.Helper()
	var b []byte
	if err := e.direct.QueryRow(e.ctx, fmt.Sprintf(`SELECT %s FROM %s WHERE id = $1`, col, table), id).Scan(&b); err != nil {
		e.t.Fatal(err)
	}
	return b
}

var execModes = []pgx.QueryExecMode{
	pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec,
	pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
}

// typedCase is one logical type with a value to store in it.
type typedCase struct {
	typ   string // logical type (config spelling)
	col   string
	value any // Go value sent as the parameter
}

var typedCases = []typedCase{
	{"text", "v_text", "héllo wörld, ünïcode ✓"},
	{"varchar(10)", "v_varchar", "abc  "},
	{"int2", "v_int2", int16(-12)},
	{"int4", "v_int4", int32(123456)},
	{"int8", "v_int8", int64(-9007199254740993)},
	{"numeric(12,2)", "v_numeric", float64(1234.5)},
	{"float4", "v_float4", float32(1.5)},
	{"float8", "v_float8", float64(-2.25e-300)},
	{"bool", "v_bool", true},
	{"date", "v_date", time.Date(2024, 1, 31, 0, 0, 0, 0, time.UTC)},
	{"timestamp", "v_timestamp", time.Date(2024, 1, 31, 12, 34, 56, 789123000, time.UTC)},
	{"timestamptz", "v_timestamptz", time.Date(1999, 12, 31, 23, 59, 59, 500000000, time.UTC)},
	{"uuid", "v_uuid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
	{"json", "v_json", `{"b": 1, "a": [1, 2]}`},
	{"jsonb", "v_jsonb", `{"bb": 1, "a": [1, 2], "a": "dup"}`},
	{"bytea", "v_bytea", []byte{0, 1, 2, 0xfe, 0xff}},
}

func typedEnv(t *testing.T) *cloakEnv {
	var cols []catalog.Column
	ddl := "CREATE TABLE typed (id int PRIMARY KEY"
	for _, c := range typedCases {
		cols = append(cols, catalog.Column{Schema: "public", Table: "typed", Column: c.col, Type: c.typ, Classification: "confidential", Search: "none"})
		ddl += ", " + c.col + " bytea"
	}
	return newCloakEnv(t, cols, ddl+")")
}

// sameValue compares two scanned values; times by instant.
func sameValue(a, b any) bool {
	if ta, ok := a.(time.Time); ok {
		tb, ok := b.(time.Time)
		return ok && ta.Equal(tb)
	}
	return reflect.DeepEqual(a, b)
}

// pgCode returns the SQLSTATE and message of a server error.
func pgCode(err error) (string, string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.Message
	}
	return "", fmt.Sprint(err)
}

func (e *cloakEnv) seed(conn *pgx.Conn, id int) {
	e.t.Helper()
	if _, err := conn.Exec(e.ctx, `INSERT INTO customers (id, name, ssn, age, secret, nick) VALUES ($1, 'n', '123-45-6789', $2, 'top secret', 'nicky')`, id, 33); err != nil {
		e.t.Fatalf("seed: %v", err)
	}
}
