package proxy

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// benchCloak resolves the test schema against a real server once and
// returns a session's filters over it, with the in-memory key source.
func benchCloak(b *testing.B) (*cloakUp, *cloakDown, *catView) {
	b.Helper()
	c := pgtest.New(b, pgtest.Opts{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.SuperDSN())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE customers (id int PRIMARY KEY, name text, ssn bytea, age bytea, secret bytea, nick bytea)`); err != nil {
		b.Fatal(err)
	}
	cat, _, err := catalog.Resolve(ctx, conn, cloakColumns)
	if err != nil {
		b.Fatal(err)
	}
	cs, err := newCloakServer(&Encryption{Catalogs: staticCatalogs{cat}, Keys: newTestKeys(b),
		Policies: map[string]Policy{"confidential": {PlaintextRoles: []string{"app"}, OnDenied: DeniedError}}})
	if err != nil {
		b.Fatal(err)
	}
	s := &session{log: zerolog.Nop(), user: "app", database: "postgres"}
	s.stopCtx, s.stopCancel = context.WithCancelCause(context.Background())
	cl := newCloak(cs, s, nil)
	v, err := cl.view()
	if err != nil {
		b.Fatal(err)
	}
	return newCloakUp(cl), newCloakDown(cl), v
}

type staticCatalogs struct{ cat *catalog.Catalog }

func (s staticCatalogs) Catalog(context.Context, string) (*catalog.Catalog, error) { return s.cat, nil }
func (s staticCatalogs) Refresh(context.Context, string) (*catalog.Catalog, error) { return s.cat, nil }
func (s staticCatalogs) Invalidate(string)                                         {}

// BenchmarkCloakBind: the client→server cost of one execution of a prepared
// INSERT with two encrypted parameters (text and int4, text format).
func BenchmarkCloakBind(b *testing.B) {
	up, _, _ := benchCloak(b)
	parse := appendParse(nil, "ins", `INSERT INTO customers (id, ssn, age) VALUES ($1, $2, $3)`, nil)
	if _, err := up.filter(parse, nil); err != nil {
		b.Fatal(err)
	}
	bind, at := startMsg(nil, 'B')
	bind = appendCString(appendCString(bind, ""), "ins")
	bind = appendInt16(bind, 0)
	bind = appendInt16(bind, 3)
	for _, v := range []string{"42", "078-05-1120", "37"} {
		bind = appendInt32(bind, int32(len(v)))
		bind = append(bind, v...)
	}
	bind = appendInt16(bind, 0)
	bind = finishMsg(bind, at)
	var out []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var err error
		if out, err = up.filter(bind, out[:0]); err != nil {
			b.Fatal(err)
		}
		up.c.q.pop()
	}
}

// BenchmarkCloakDataRow: the server→client cost of one row with two
// encrypted columns (text and int4) and two plain ones, text format.
func BenchmarkCloakDataRow(b *testing.B) {
	up, down, v := benchCloak(b)
	ssn, age := v.byName["public.customers.ssn"], v.byName["public.customers.age"]
	desc := &rowDesc{active: true, cols: []descCol{{}, {info: ssn, mode: modeDecrypt}, {info: age, mode: modeDecrypt}, {}}}
	row, at := startMsg(nil, 'D')
	row = appendInt16(row, 4)
	row = appendInt32(row, 2)
	row = append(row, "42"...)
	for _, c := range []struct {
		ci *colInfo
		v  string
	}{{ssn, "078-05-1120"}, {age, "37"}} {
		env, err := up.seal(c.ci, 0, []byte(c.v), 0)
		if err != nil {
			b.Fatal(err)
		}
		val := appendByteaText(nil, env)
		row = appendInt32(row, int32(len(val)))
		row = append(row, val...)
	}
	row = appendInt32(row, 4)
	row = append(row, "name"...)
	row = finishMsg(row, at)
	var out []byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var err error
		if out, err = down.dataRow(row, out[:0], desc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCloakPlanCached: planning a statement already in the plan
// cache (the per-statement cost of a simple-protocol client).
func BenchmarkCloakPlanCached(b *testing.B) {
	up, _, _ := benchCloak(b)
	sql := `SELECT ssn, age FROM customers WHERE id = 42`
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if p, _, err := up.plan(sql); err != nil || p == nil {
			b.Fatal(p, err)
		}
	}
}
