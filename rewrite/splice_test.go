package rewrite

import (
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// splice does what the proxy does with Literals: replace each span with a
// bytea literal.
func splice(sql string, lits []LiteralAction) string {
	var b strings.Builder
	prev := 0
	for _, l := range lits {
		b.WriteString(sql[prev:l.Span.Offset])
		b.WriteString(`'\xc10a01'::bytea`)
		prev = l.Span.End()
	}
	b.WriteString(sql[prev:])
	return b.String()
}

// TestSpliceLeavesValidSQLWithoutPlaintext: replacing every literal span of
// a supported statement yields SQL that still parses and no longer contains
// the literal's text, and the same encrypted columns are then fed by bytea
// literals (a second Analyze sees literals at the new positions only).
func TestSpliceLeavesValidSQLWithoutPlaintext(t *testing.T) {
	cat := testCatalog()
	n := 0
	for _, tc := range supported {
		plan, err := Analyze(tc.sql, cat, nil)
		if err != nil || len(plan.Literals) == 0 {
			continue
		}
		n++
		out := splice(tc.sql, plan.Literals)
		if _, err := pg_query.Parse(out); err != nil {
			t.Fatalf("%s: spliced text does not parse: %v\n%s", tc.name, err, out)
		}
		for _, l := range plan.Literals {
			if lit := tc.sql[l.Span.Offset:l.Span.End()]; strings.Contains(out, lit) {
				t.Fatalf("%s: literal %s survived splicing:\n%s", tc.name, lit, out)
			}
		}
		again, err := Analyze(out, cat, nil)
		if err != nil {
			t.Fatalf("%s: re-analyze: %v", tc.name, err)
		}
		if len(again.Literals) != len(plan.Literals) {
			t.Fatalf("%s: %d literals after splicing, want %d", tc.name, len(again.Literals), len(plan.Literals))
		}
		for _, l := range again.Literals {
			if got := out[l.Span.Offset:l.Span.End()]; got != `'\xc10a01'::bytea` {
				t.Fatalf("%s: span %q after splicing", tc.name, got)
			}
		}
	}
	if n < 5 {
		t.Fatalf("only %d cases with literals", n)
	}
}
