package rewrite

import (
	"errors"
	"testing"
)

// FuzzPlan: Analyze never panics, and its results are consistent: spans lie
// inside the text and do not overlap, parameter indices are positive, and
// MentionsConfigured never misses a statement Analyze acts on.
func FuzzPlan(f *testing.F) {
	for _, tc := range supported {
		f.Add(tc.sql)
	}
	for _, tc := range refused {
		f.Add(tc.sql)
	}
	for _, s := range otherTables {
		f.Add(s)
	}
	cat := testCatalog()
	f.Fuzz(func(t *testing.T, sql string) {
		if len(sql) > 4096 {
			return
		}
		plan, err := Analyze(sql, cat, nil)
		var r *Refusal
		var pe *ParseError
		switch {
		case errors.As(err, &r):
			if !MentionsConfigured(sql, cat) {
				t.Fatalf("refused but not mentioned: %q", sql)
			}
			return
		case errors.As(err, &pe):
			return
		case err != nil:
			t.Fatalf("unexpected error type %T", err)
		}
		if !plan.Empty() && !MentionsConfigured(sql, cat) {
			t.Fatalf("plan but not mentioned: %q", sql)
		}
		end := 0
		for _, l := range plan.Literals {
			if l.Span.Offset < end || l.Span.Length <= 0 || l.Span.End() > len(sql) {
				t.Fatalf("bad literal span %+v in %q", l.Span, sql)
			}
			end = l.Span.End()
		}
		for _, b := range plan.BlindColumns {
			if b.Span.Offset < 0 || b.Span.Length <= 0 || b.Span.End() > len(sql) {
				t.Fatalf("bad column span %+v in %q", b.Span, sql)
			}
		}
		for _, p := range plan.Params {
			if p.Index < 1 || p.Kind == 0 {
				t.Fatalf("bad param %+v", p)
			}
		}
	})
}
