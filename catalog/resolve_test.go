package catalog

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// connect starts one cluster per test function and returns a superuser
// connection to its postgres database.
func connect(t *testing.T) (context.Context, *pgx.Conn) {
	t.Helper()
	c := pgtest.New(t, pgtest.Opts{})
	if c == nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	conn, err := pgx.Connect(ctx, c.SuperDSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return ctx, conn
}

func exec(t *testing.T, ctx context.Context, conn *pgx.Conn, sqls ...string) {
	t.Helper()
	for _, s := range sqls {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// attr reads the real table OID and attnum of schema.table.column with a
// query independent of the one under test (regclass and attname lookups).
func attr(t *testing.T, ctx context.Context, conn *pgx.Conn, schema, table, column string) Attr {
	t.Helper()
	var a Attr
	var n int16
	err := conn.QueryRow(ctx, `SELECT $1::regclass::oid, (SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2)`,
		pgx.Identifier{schema, table}.Sanitize(), column).Scan(&a.TableOID, &n)
	if err != nil {
		t.Fatal(err)
	}
	a.AttNum = uint16(n)
	return a
}

func problemKinds(ps []Problem) map[string]ProblemKind {
	m := map[string]ProblemKind{}
	for _, p := range ps {
		m[p.Column.QualifiedName()] = p.Kind
	}
	return m
}

func TestResolve(t *testing.T) {
	ctx, conn := connect(t)
	if conn == nil {
		return
	}
	exec(t, ctx, conn,
		`CREATE TABLE people (id int, gone text, email bytea, note text)`,
		`ALTER TABLE people DROP COLUMN gone`, // leaves a dropped attribute before email
		`CREATE SCHEMA "Billing"`,
		`CREATE TABLE "Billing"."Cards" ("PAN" bytea, "pan" bytea, holder varchar(40))`,
		`CREATE VIEW people_v AS SELECT email FROM people`,
	)
	cols := []Column{
		{Schema: "public", Table: "people", Column: "email", Type: "text", Classification: "confidential"},
		{Schema: "Billing", Table: "Cards", Column: "PAN", Type: "text", Classification: "restricted", Context: "billing.cards.pan"},
		{Schema: "Billing", Table: "Cards", Column: "pan", Type: "int8", Classification: "internal"},
		{Schema: "public", Table: "people", Column: "note", Type: "text", Classification: "internal"},
		{Schema: "Billing", Table: "Cards", Column: "holder", Type: "varchar(40)", Classification: "internal"},
		{Schema: "public", Table: "missing", Column: "x", Type: "text", Classification: "internal"},
		{Schema: "billing", Table: "cards", Column: "pan", Type: "text", Classification: "internal"}, // unquoted spelling: another table
		{Schema: "public", Table: "people", Column: "gone", Type: "text", Classification: "internal"},
		{Schema: "public", Table: "people_v", Column: "email", Type: "text", Classification: "internal"},
		{Schema: "public", Table: "people", Column: "email", Type: "text", Classification: "internal", Context: "dup"},
	}
	cat, problems, err := Resolve(ctx, conn, cols)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]ProblemKind{
		"public.people.note":    NotBytea,
		"Billing.Cards.holder":  NotBytea,
		"public.missing.x":      TableMissing,
		"billing.cards.pan":     TableMissing,
		"public.people.gone":    ColumnMissing,
		"public.people_v.email": NotATable,
		"public.people.email":   DuplicateColumns, // the second entry
	}
	if got := problemKinds(problems); !mapsEqual(got, want) {
		t.Errorf("problems = %v\nwant %v", problems, want)
	}
	for _, p := range problems {
		if p.Index < 0 || p.Index >= len(cols) || cols[p.Index] != p.Column {
			t.Errorf("problem %v: Index %d does not point at its column", p, p.Index)
		}
		switch p.Kind {
		case NotBytea:
			if p.Column.Column == "holder" && p.Detail != "character varying(40)" {
				t.Errorf("holder: detail %q, want the actual type", p.Detail)
			}
		case NotATable:
			if p.Detail != "view" {
				t.Errorf("view: detail %q", p.Detail)
			}
		}
		if p.String() == "" {
			t.Errorf("empty message for %v", p.Kind)
		}
	}

	email := attr(t, ctx, conn, "public", "people", "email")
	if email.AttNum != 3 {
		t.Fatalf("test setup: email attnum %d, want 3 (after the dropped column)", email.AttNum)
	}
	e := cat.Lookup(email.TableOID, email.AttNum)
	if e == nil || e.QualifiedName() != "public.people.email" || e.ContextString() != "public.people.email" || !e.Bytea() || e.Classification != "confidential" {
		t.Fatalf("Lookup(email) = %+v", e)
	}
	pan := attr(t, ctx, conn, "Billing", "Cards", "PAN")
	if e := cat.Lookup(pan.TableOID, pan.AttNum); e == nil || e.Column.Column != "PAN" || e.ContextString() != "billing.cards.pan" || e.Type != "text" {
		t.Fatalf("Lookup(PAN) = %+v", e)
	}
	lower := attr(t, ctx, conn, "Billing", "Cards", "pan")
	if e := cat.Lookup(lower.TableOID, lower.AttNum); e == nil || e.Column.Column != "pan" || e.Type != "int8" {
		t.Fatalf("Lookup(pan) = %+v", e)
	}
	holder := attr(t, ctx, conn, "Billing", "Cards", "holder")
	if e := cat.Lookup(holder.TableOID, holder.AttNum); e == nil || e.Bytea() || e.SQLType != "character varying(40)" {
		t.Fatalf("Lookup(holder) = %+v: a non-bytea column must still be recognised in results", e)
	}
	if e := cat.Lookup(email.TableOID, 1); e != nil {
		t.Errorf("Lookup(people.id) = %+v, want nil", e)
	}
	if !cat.KnownTable(pan.TableOID) || cat.KnownTable(1) {
		t.Error("KnownTable")
	}

	var names []string
	for _, e := range cat.Table("Billing", "Cards") {
		names = append(names, e.Column.Column)
	}
	if !slices.Equal(names, []string{"PAN", "pan", "holder"}) {
		t.Errorf("Table(Billing.Cards) = %v", names)
	}
	if es := cat.Table("public", "missing"); len(es) != 1 || es[0].Resolved {
		t.Errorf("Table(public.missing) = %+v: an unresolved table must still be known by name", es)
	}
	if got := cat.Schemas("cards"); !slices.Equal(got, []string{"billing"}) {
		t.Errorf("Schemas(cards) = %v", got)
	}
	if cat.Table("public", "nothing") != nil || cat.Schemas("nothing") != nil {
		t.Error("lookup of an unconfigured table")
	}
	if len(cat.Entries()) != len(cols) {
		t.Errorf("%d entries for %d columns", len(cat.Entries()), len(cols))
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestResolverRefresh: renaming keeps the attnum and the configured
// context; DROP + ADD moves the column to a new attnum, which a refresh
// picks up (rate-limited on misses, immediate after Invalidate).
func TestResolverRefresh(t *testing.T) {
	ctx, conn := connect(t)
	if conn == nil {
		return
	}
	exec(t, ctx, conn, `CREATE TABLE t (id int, secret bytea)`)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := NewResolver(ResolverOpts{
		Columns:     []Column{{Schema: "public", Table: "t", Column: "secret", Type: "text", Classification: "internal"}},
		MinInterval: 10 * time.Second,
		Now:         func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Catalog(ctx, "db", nil); err == nil {
		t.Fatal("Catalog without a connection and without a snapshot succeeded")
	}
	cat1, problems, err := r.Catalog(ctx, "db", conn)
	if err != nil || len(problems) != 0 {
		t.Fatal(err, problems)
	}
	a1 := attr(t, ctx, conn, "public", "t", "secret")
	if cat1.Lookup(a1.TableOID, a1.AttNum) == nil || cat1.Generation() == 0 {
		t.Fatalf("first resolution: %+v", cat1.Entries())
	}
	if c, _, _ := r.Catalog(ctx, "db", nil); c != cat1 {
		t.Fatal("Catalog did not return the cached snapshot")
	}
	// Nothing changed: a refresh keeps the snapshot and its generation.
	now = now.Add(time.Minute)
	if c, _, err := r.Refresh(ctx, "db", conn); err != nil || c != cat1 {
		t.Fatalf("refresh without change: %v, same snapshot %v", err, c == cat1)
	}

	exec(t, ctx, conn, `ALTER TABLE t DROP COLUMN secret`, `ALTER TABLE t ADD COLUMN secret bytea`)
	a2 := attr(t, ctx, conn, "public", "t", "secret")
	if a2.AttNum == a1.AttNum {
		t.Fatalf("test setup: attnum did not change (%d)", a2.AttNum)
	}
	// A miss within MinInterval of the last resolution does not query.
	now = now.Add(5 * time.Second)
	if c, _, _ := r.Refresh(ctx, "db", conn); c != cat1 || c.Lookup(a2.TableOID, a2.AttNum) != nil {
		t.Fatal("refresh within MinInterval re-resolved")
	}
	now = now.Add(6 * time.Second)
	cat2, _, err := r.Refresh(ctx, "db", conn)
	if err != nil {
		t.Fatal(err)
	}
	if cat2.Generation() <= cat1.Generation() || cat2.Lookup(a2.TableOID, a2.AttNum) == nil || cat2.Lookup(a1.TableOID, a1.AttNum) != nil {
		t.Fatalf("refresh after DROP+ADD: generation %d→%d, entries %+v", cat1.Generation(), cat2.Generation(), cat2.Entries())
	}
	if cat1.Lookup(a1.TableOID, a1.AttNum) == nil {
		t.Fatal("the old snapshot changed")
	}

	// Invalidate (DDL) re-resolves at once, whatever the interval.
	exec(t, ctx, conn, `ALTER TABLE t ALTER COLUMN secret TYPE text`)
	r.Invalidate("db")
	cat3, problems, err := r.Catalog(ctx, "db", conn)
	if err != nil || cat3.Generation() <= cat2.Generation() || len(problems) != 1 || problems[0].Kind != NotBytea || problems[0].Detail != "text" {
		t.Fatalf("after Invalidate: %v gen %d problems %v", err, cat3.Generation(), problems)
	}
	// Other databases have their own snapshot.
	if _, _, err := r.Catalog(ctx, "other", nil); err == nil {
		t.Fatal("database other shares the snapshot of db")
	}
}

// TestRenamedColumn: a column renamed in the database is configured under
// its new name with the old context; attnum and context are preserved. Under
// the old name it is a ColumnMissing problem.
func TestRenamedColumn(t *testing.T) {
	ctx, conn := connect(t)
	if conn == nil {
		return
	}
	exec(t, ctx, conn, `CREATE TABLE p (ssn bytea)`)
	before := attr(t, ctx, conn, "public", "p", "ssn")
	exec(t, ctx, conn, `ALTER TABLE p RENAME COLUMN ssn TO tax_id`)
	cat, problems, err := Resolve(ctx, conn, []Column{
		{Schema: "public", Table: "p", Column: "tax_id", Type: "text", Classification: "internal", Context: "public.p.ssn"},
		{Schema: "public", Table: "p", Column: "ssn", Type: "text", Classification: "internal", Context: "old"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := cat.Lookup(before.TableOID, before.AttNum)
	if e == nil || e.Column.Column != "tax_id" || e.ContextString() != "public.p.ssn" {
		t.Fatalf("renamed column: %+v", e)
	}
	if len(problems) != 1 || problems[0].Kind != ColumnMissing || problems[0].Column.Column != "ssn" {
		t.Fatalf("problems %v", problems)
	}
}

// TestPartitions: partitions and inheritance children (at any depth, with
// their own attribute numbers) map to the configured column of their
// ancestor; configuring a partition as well is a DuplicateColumns problem;
// attaching a partition later changes the snapshot on refresh.
func TestPartitions(t *testing.T) {
	ctx, conn := connect(t)
	if conn == nil {
		return
	}
	exec(t, ctx, conn,
		`CREATE TABLE ev (region text, secret bytea) PARTITION BY LIST (region)`,
		`CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu') PARTITION BY LIST (region)`,
		`CREATE TABLE ev_eu_de PARTITION OF ev_eu FOR VALUES IN ('de')`,
		// Created on its own with another column order, then attached.
		`CREATE TABLE ev_us (pad int, secret bytea, region text)`,
		`ALTER TABLE ev_us DROP COLUMN pad`,
		`ALTER TABLE ev ATTACH PARTITION ev_us FOR VALUES IN ('us')`,
		`CREATE TABLE base (secret bytea)`,
		`CREATE TABLE derived (extra int) INHERITS (base)`,
	)
	cols := []Column{
		{Schema: "public", Table: "ev", Column: "secret", Type: "text", Classification: "internal"},
		{Schema: "public", Table: "base", Column: "secret", Type: "text", Classification: "internal"},
	}
	cat, problems, err := Resolve(ctx, conn, cols)
	if err != nil || len(problems) != 0 {
		t.Fatal(err, problems)
	}
	us := attr(t, ctx, conn, "public", "ev_us", "secret")
	if us.AttNum != 2 {
		t.Fatalf("test setup: ev_us.secret attnum %d, want 2", us.AttNum)
	}
	for _, tc := range []struct {
		table, want string
	}{
		{"ev", "public.ev.secret"}, {"ev_eu", "public.ev.secret"}, {"ev_eu_de", "public.ev.secret"},
		{"ev_us", "public.ev.secret"}, {"base", "public.base.secret"}, {"derived", "public.base.secret"},
	} {
		a := attr(t, ctx, conn, "public", tc.table, "secret")
		if e := cat.Lookup(a.TableOID, a.AttNum); e == nil || e.QualifiedName() != tc.want || !cat.KnownTable(a.TableOID) {
			t.Errorf("Lookup(%s.secret) = %+v, want %s", tc.table, e, tc.want)
		}
	}
	if e := cat.Lookup(us.TableOID, 1); e != nil {
		t.Errorf("Lookup(ev_us attnum 1, dropped) = %+v", e)
	}

	_, problems, err = Resolve(ctx, conn, append(cols, Column{Schema: "public", Table: "ev_us", Column: "secret", Type: "text", Classification: "internal", Context: "x"}))
	if err != nil || len(problems) != 1 || problems[0].Kind != DuplicateColumns || problems[0].Column.Table != "ev_us" {
		t.Fatalf("partition configured too: %v %v", err, problems)
	}

	r, err := NewResolver(ResolverOpts{Columns: cols, MinInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	cat1, _, err := r.Catalog(ctx, "db", conn)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, ctx, conn, `CREATE TABLE ev_ap PARTITION OF ev FOR VALUES IN ('ap')`)
	ap := attr(t, ctx, conn, "public", "ev_ap", "secret")
	cat2, _, err := r.Refresh(ctx, "db", conn)
	if err != nil || cat2.Generation() == cat1.Generation() || cat2.Lookup(ap.TableOID, ap.AttNum) == nil {
		t.Fatalf("new partition after refresh: %v, generation %d→%d", err, cat1.Generation(), cat2.Generation())
	}
}
