package rewrite

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// testCatalog: public.customers(ssn, email[search]), public.customers_archive(ssn,
// same context as customers.ssn), app.secrets(token[search]),
// public."MixedCase"("Secret"), app.customers(card), and a public column
// that is configured but not encrypted.
func testCatalog() *StaticCatalog {
	return NewStaticCatalog(7, []Column{
		{Schema: "public", Table: "customers", Name: "ssn", Encrypted: true, LogicalType: "text"},
		{Schema: "public", Table: "customers", Name: "email", Encrypted: true, Search: true, LogicalType: "varchar(80)"},
		{Schema: "public", Table: "customers", Name: "note", Encrypted: false, LogicalType: "text"},
		{Schema: "public", Table: "customers_archive", Name: "ssn", Context: "public.customers.ssn", Encrypted: true, LogicalType: "text"},
		{Schema: "app", Table: "secrets", Name: "token", Encrypted: true, Search: true, LogicalType: "text"},
		{Schema: "app", Table: "customers", Name: "card", Encrypted: true, LogicalType: "int8"},
		{Schema: "public", Table: "MixedCase", Name: "Secret", Encrypted: true, Search: true, LogicalType: "text"},
	})
}

// summary renders a plan compactly: params "$n:kind:column", literals
// "«text»:kind:column" (text sliced from sql by Span), blind columns
// "«text»:column", reads "column".
type summary struct {
	Params, Literals, Blind, Reads []string
}

func summarize(sql string, p *Plan) summary {
	var s summary
	for _, x := range p.Params {
		s.Params = append(s.Params, fmt.Sprintf("$%d:%s:%s", x.Index, x.Kind, x.Column.QualifiedName()))
	}
	for _, x := range p.Literals {
		s.Literals = append(s.Literals, fmt.Sprintf("«%s»=%s:%s:%s", sql[x.Span.Offset:x.Span.End()], x.Value, x.Kind, x.Column.QualifiedName()))
	}
	for _, x := range p.BlindColumns {
		s.Blind = append(s.Blind, fmt.Sprintf("«%s»:%s", sql[x.Span.Offset:x.Span.End()], x.Column.QualifiedName()))
	}
	for _, st := range p.Statements {
		for _, c := range st.Reads {
			s.Reads = append(s.Reads, c.QualifiedName())
		}
	}
	return s
}

func eqStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (s summary) String() string {
	return fmt.Sprintf("params=%q literals=%q blind=%q reads=%q", s.Params, s.Literals, s.Blind, s.Reads)
}

func (s summary) equal(o summary) bool {
	return eqStrings(s.Params, o.Params) && eqStrings(s.Literals, o.Literals) &&
		eqStrings(s.Blind, o.Blind) && eqStrings(s.Reads, o.Reads)
}

func mustRefusal(t *testing.T, sql string, err error, column, construct string) {
	t.Helper()
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("%s: want *Refusal, got %v", sql, err)
	}
	if r.Column != column || r.Construct != construct {
		t.Fatalf("%s: refusal (%s | %s), want (%s | %s)", sql, r.Column, r.Construct, column, construct)
	}
	if !strings.Contains(r.Error(), column) || !strings.Contains(r.Error(), construct) {
		t.Fatalf("%s: Error() %q does not name column and construct", sql, r.Error())
	}
}
