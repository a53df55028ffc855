package catalog

import "testing"

func TestCatalogIndexes(t *testing.T) {
	cat := newCatalog([]Entry{
		{Column: Column{Schema: "s", Table: "t", Column: "a"}, Resolved: true, TableOID: 100, AttNum: 2, TypeOID: ByteaOID},
		{Column: Column{Schema: "s", Table: "t", Column: "b"}},
		{Column: Column{Schema: "s", Table: "t", Column: "a", Context: "dup"}, Resolved: true, TableOID: 100, AttNum: 2, TypeOID: ByteaOID},
		{Column: Column{Schema: "x", Table: "t", Column: "c"}, Resolved: true, TableOID: 200, AttNum: 1, TypeOID: 25},
	})
	if e := cat.Lookup(100, 2); e == nil || e.Context != "" {
		t.Fatalf("Lookup(100,2) = %+v, want the first entry", e)
	}
	if e := cat.Lookup(200, 1); e == nil || e.Bytea() {
		t.Fatalf("Lookup(200,1) = %+v", e)
	}
	if cat.Lookup(100, 1) != nil || cat.Lookup(300, 2) != nil {
		t.Fatal("lookup of an unconfigured attribute")
	}
	if n := len(cat.Table("s", "t")); n != 3 {
		t.Fatalf("Table(s.t): %d entries", n)
	}
	if s := cat.Schemas("t"); len(s) != 2 || s[0] != "s" || s[1] != "x" {
		t.Fatalf("Schemas(t) = %v", s)
	}
	if (Column{Schema: "a", Table: "b", Column: "c"}).ContextString() != "a.b.c" {
		t.Fatal("default context")
	}
	if ProblemKind(0).String() != "ProblemKind(0)" || NotBytea.String() != "not bytea" {
		t.Fatal("ProblemKind.String")
	}
}
