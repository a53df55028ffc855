package catalog

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// problemLog records OnProblems calls.
type problemLog struct {
	mu    sync.Mutex
	calls []string // "db: problem"
}

func (l *problemLog) hook(db string, ps []Problem) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range ps {
		l.calls = append(l.calls, db+": "+p.String())
	}
}

func (l *problemLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.calls
	l.calls = nil
	return c
}

// TestSource resolves per database over the DSN with the database
// replaced, as a role with nothing but LOGIN (and CONNECT, which PUBLIC
// has by default), its password taken from PGPASSWORD.
func TestSource(t *testing.T) {
	c := pgtest.New(t, pgtest.Opts{})
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, db := range []string{"app1", "app2"} {
		if err := c.CreateDatabase(ctx, db, ""); err != nil {
			t.Fatal(err)
		}
	}
	super := func(db string) *pgx.Conn {
		conn, err := pgx.Connect(ctx, c.DSN("postgres", "", db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		return conn
	}
	app1, app2 := super("app1"), super("app2")
	exec(t, ctx, app1, `CREATE TABLE customers (id int, ssn bytea)`)
	if err := c.AddUser(ctx, "pgcloak_proxy", "s3cret-pw", pgtest.MethodSCRAM); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PGPASSWORD", "s3cret-pw")

	r, err := NewResolver(ResolverOpts{Columns: []Column{{Schema: "public", Table: "customers", Column: "ssn", Type: "text", Classification: "confidential"}}})
	if err != nil {
		t.Fatal(err)
	}
	var log problemLog
	// The DSN names database postgres, which has no such table: a resolved
	// column proves the database was replaced.
	s, err := NewSource(SourceOpts{Resolver: r, DSN: c.DSN("pgcloak_proxy", "", "postgres"), MaxDatabases: 1, OnProblems: log.hook})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	cat1, err := s.Catalog(ctx, "app1")
	if err != nil {
		t.Fatal(err)
	}
	a := attr(t, ctx, app1, "public", "customers", "ssn")
	if e := cat1.Lookup(a.TableOID, a.AttNum); e == nil || !e.Bytea() {
		t.Fatalf("app1: ssn not resolved: %+v", cat1.Entries())
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("app1 has no problems, OnProblems said %q", got)
	}
	var appName string
	if err := app1.QueryRow(ctx, `SELECT application_name FROM pg_stat_activity WHERE usename = 'pgcloak_proxy' AND datname = 'app1'`).Scan(&appName); err != nil || appName != "pgcloak catalog" {
		t.Errorf("catalog connection: application_name %q, %v", appName, err)
	}

	// app2 lacks the table: a problem, reported once per generation.
	cat2, err := s.Catalog(ctx, "app2")
	if err != nil {
		t.Fatal(err)
	}
	if got := log.take(); len(got) != 1 || !strings.HasPrefix(got[0], "app2: public.customers.ssn: table public.customers does not exist") {
		t.Errorf("app2: OnProblems said %q", got)
	}
	if s.Databases() != 1 {
		t.Errorf("%d pools open, MaxDatabases is 1", s.Databases())
	}
	s.Invalidate("app2")
	if again, err := s.Catalog(ctx, "app2"); err != nil || again.Generation() != cat2.Generation() {
		t.Fatalf("re-resolution without change: %v, generation %d → %d", err, cat2.Generation(), again.Generation())
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("same generation reported again: %q", got)
	}
	// The table appears: a new generation without problems.
	exec(t, ctx, app2, `CREATE TABLE customers (ssn text)`)
	s.Invalidate("app2")
	cat3, err := s.Catalog(ctx, "app2")
	if err != nil || cat3.Generation() == cat2.Generation() {
		t.Fatalf("after CREATE TABLE: %v, generation %d", err, cat3.Generation())
	}
	if got := log.take(); len(got) != 1 || !strings.Contains(got[0], "must be bytea") {
		t.Errorf("app2 with a text column: OnProblems said %q", got)
	}
	// Refresh within MinInterval answers from the snapshot.
	if c, err := s.Refresh(ctx, "app2"); err != nil || c != cat3 {
		t.Errorf("Refresh right after a resolution: %v, same %v", err, c == cat3)
	}

	if _, err := s.Catalog(ctx, ""); err == nil {
		t.Error("Catalog of database \"\" succeeded")
	}
	// A database the role may not connect to: an error naming it.
	exec(t, ctx, app1, `CREATE DATABASE closed`, `REVOKE CONNECT ON DATABASE closed FROM PUBLIC`)
	_, err = s.Catalog(ctx, "closed")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" || !strings.Contains(err.Error(), `"closed"`) {
		t.Errorf("Catalog(closed) = %v; want 42501 naming the database", err)
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Error("error message contains the password")
	}

	// After Close, snapshots are still served; resolutions fail.
	s.Close()
	if c, err := s.Catalog(ctx, "app1"); err != nil || c != cat1 {
		t.Errorf("Catalog after Close: %v", err)
	}
	s.Invalidate("app1")
	if _, err := s.Catalog(ctx, "app1"); !errors.Is(err, ErrSourceClosed) {
		t.Errorf("resolution after Close = %v; want ErrSourceClosed", err)
	}
}

// TestSourceConcurrent: concurrent callers for several databases share
// resolutions and pools (run with -race).
func TestSourceConcurrent(t *testing.T) {
	c := pgtest.New(t, pgtest.Opts{})
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dbs := []string{"a", "b", "c"}
	for _, db := range dbs {
		if err := c.CreateDatabase(ctx, db, ""); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := NewResolver(ResolverOpts{Columns: []Column{{Schema: "public", Table: "t", Column: "x", Type: "text", Classification: "internal"}}, MinInterval: -1})
	var calls sync.Map
	s, err := NewSource(SourceOpts{Resolver: r, DSN: c.SuperDSN(), MaxDatabases: 2, OnProblems: func(db string, _ []Problem) {
		if _, dup := calls.LoadOrStore(db, true); dup {
			t.Errorf("%s reported twice for one generation", db)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			db := dbs[i%len(dbs)]
			for range 10 {
				var err error
				if i%2 == 0 {
					_, err = s.Catalog(ctx, db)
				} else {
					_, err = s.Refresh(ctx, db)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, db := range dbs {
		if _, ok := calls.Load(db); !ok {
			t.Errorf("%s: missing table never reported", db)
		}
	}
	if n := s.Databases(); n > 2 {
		t.Errorf("%d pools open, MaxDatabases is 2", n)
	}
}

func TestNewSourceErrors(t *testing.T) {
	r, _ := NewResolver(ResolverOpts{})
	if _, err := NewSource(SourceOpts{DSN: "host=x"}); err == nil {
		t.Error("no Resolver accepted")
	}
	if _, err := NewSource(SourceOpts{Resolver: r}); err == nil {
		t.Error("no DSN accepted")
	}
	_, err := NewSource(SourceOpts{Resolver: r, DSN: "postgres://u:hunter2@h:notaport/db"})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad DSN: %v", err)
	}
}
