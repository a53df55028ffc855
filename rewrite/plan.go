package rewrite

import (
	"fmt"
	"strconv"
)

// Kind says what the proxy must do with a value flowing into an encrypted
// column. The zero value is invalid.
type Kind int

const (
	// KindEncrypt: replace the value with its ciphertext (INSERT values,
	// UPDATE SET, ON CONFLICT DO UPDATE SET).
	KindEncrypt Kind = 1
	// KindBlindIndex: the value is compared for equality with the column
	// (col = v, col IN (…)); the proxy replaces it with what the column's
	// blind-index comparison needs, and rewrites the column reference
	// listed in Plan.BlindColumns.
	KindBlindIndex Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindEncrypt:
		return "encrypt"
	case KindBlindIndex:
		return "blind-index"
	}
	return "invalid(" + strconv.Itoa(int(k)) + ")"
}

// Span is a byte range of the statement text given to Analyze.
type Span struct {
	Offset, Length int
}

// End is Offset+Length.
func (s Span) End() int { return s.Offset + s.Length }

// ParamAction says that bind parameter $Index flows into Column.
type ParamAction struct {
	Index  int // 1-based, as in $1
	Column Column
	Kind   Kind
}

// LiteralAction says that the literal at Span (including any cast around
// it, e.g. '123'::int or CAST('1' AS int)) flows into Column: the proxy
// replaces exactly those bytes with an encrypted bytea literal.
type LiteralAction struct {
	Span   Span
	Value  string // the literal's value as parsed (escapes resolved); plaintext: never log it
	Column Column
	Kind   Kind
}

// BlindColumn is a column reference that a blind-index lookup compares.
type BlindColumn struct {
	Span   Span // the reference as written, e.g. c.ssn or "SSN"
	Column Column
}

// Statement describes one statement of a (possibly multi-statement) text.
type Statement struct {
	Span     Span
	Kind     string   // "SELECT", "INSERT", "UPDATE", "DELETE", "UTILITY", …
	Reads    []Column // encrypted columns whose values the statement returns
	Decrypts bool     // len(Reads) > 0
	// Fingerprint is pg_query's fingerprint of the statement, set when
	// Decrypts (for the audit of restricted columns).
	Fingerprint string
}

// Plan is the outcome of Analyze. It is immutable once returned and may be
// shared (Cache).
type Plan struct {
	Statements   []Statement
	Params       []ParamAction   // sorted by Index, one per parameter
	Literals     []LiteralAction // sorted by Span.Offset, non-overlapping
	BlindColumns []BlindColumn   // sorted by Span.Offset
}

// Empty reports whether the plan asks the proxy to change nothing and the
// statement reads no encrypted column.
func (p *Plan) Empty() bool {
	if len(p.Params)+len(p.Literals)+len(p.BlindColumns) > 0 {
		return false
	}
	for _, s := range p.Statements {
		if s.Decrypts {
			return false
		}
	}
	return true
}

// Refusal is returned when a statement uses an encrypted column in a way
// pgcloak cannot make correct (SQLSTATE 0A000). It never contains values.
type Refusal struct {
	Column    string // schema.table.column
	Construct string // e.g. "ORDER BY", "comparison <", "function lower()"
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("rewrite: %s is not supported on encrypted column %s", r.Construct, r.Column)
}

func refuse(c *Column, construct string) *Refusal {
	return &Refusal{Column: c.QualifiedName(), Construct: construct}
}

// ParseError is returned for text the parser rejects. It carries only the
// position (the parser's message may quote a plaintext value).
type ParseError struct {
	Position int // 1-based byte position, 0 if unknown
}

func (e *ParseError) Error() string {
	return "rewrite: syntax error at position " + strconv.Itoa(e.Position)
}
