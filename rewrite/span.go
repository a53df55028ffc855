package rewrite

import (
	"sort"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// tokens is the scanner's view of the statement text, used to find where a
// literal (and its casts) or a column reference ends: the parser records
// only where nodes start.
type tokens struct {
	sql  string
	toks []*pg_query.ScanToken
}

func scanTokens(sql string) (*tokens, error) {
	r, err := pg_query.Scan(sql)
	if err != nil {
		return nil, err
	}
	return &tokens{sql: sql, toks: r.Tokens}, nil
}

// at returns the index of the token starting at pos, or -1.
func (t *tokens) at(pos int32) int {
	i := sort.Search(len(t.toks), func(i int) bool { return t.toks[i].Start >= pos })
	if i < len(t.toks) && t.toks[i].Start == pos {
		return i
	}
	return -1
}

// from returns the index of the first token starting at or after pos.
func (t *tokens) from(pos int32) int {
	return sort.Search(len(t.toks), func(i int) bool { return t.toks[i].Start >= pos })
}

func (t *tokens) is(i int, tok pg_query.Token) bool {
	return i >= 0 && i < len(t.toks) && t.toks[i].Token == tok
}

func (t *tokens) text(i int) string {
	return strings.ToLower(t.sql[t.toks[i].Start:t.toks[i].End])
}

// matching returns the index of the token closing the bracket at i.
func (t *tokens) matching(i int) int {
	open, closing := t.toks[i].Token, pg_query.Token_ASCII_41
	if open == pg_query.Token_ASCII_91 {
		closing = pg_query.Token_ASCII_93
	}
	depth := 0
	for j := i; j < len(t.toks); j++ {
		switch t.toks[j].Token {
		case open:
			depth++
		case closing:
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// constSpan is the span of an A_Const at loc, including a leading sign.
func (t *tokens) constSpan(loc int32) (Span, bool) {
	i := t.at(loc)
	if i < 0 {
		return Span{}, false
	}
	if t.is(i, pg_query.Token_ASCII_45) || t.is(i, pg_query.Token_ASCII_43) {
		i++
		if i >= len(t.toks) {
			return Span{}, false
		}
	}
	if t.is(i+1, pg_query.Token_UESCAPE) && t.is(i+2, pg_query.Token_SCONST) {
		i += 2 // U&'…' UESCAPE '!'
	}
	return Span{int(loc), int(t.toks[i].End - loc)}, true
}

// valueSpan is the span of a literal, possibly wrapped in casts.
func (t *tokens) valueSpan(n *pg_query.Node) (Span, bool) {
	if c := n.GetAConst(); c != nil {
		return t.constSpan(c.Location)
	}
	tc := n.GetTypeCast()
	if tc == nil || tc.Arg == nil {
		return Span{}, false
	}
	inner, ok := t.valueSpan(tc.Arg)
	if !ok {
		return Span{}, false
	}
	start, end := int32(inner.Offset), int32(inner.End())
	if tc.TypeName != nil && tc.TypeName.Location >= 0 && tc.TypeName.Location < start {
		// Prefix form: int '123'. A type modifier after the literal
		// (interval '1' day) is not part of the span: refuse.
		for _, m := range tc.TypeName.Typmods {
			if c := m.GetAConst(); c == nil || c.Location > start {
				return Span{}, false
			}
		}
		return Span{int(tc.TypeName.Location), int(end - tc.TypeName.Location)}, true
	}
	if i := t.at(tc.Location); i >= 0 && t.is(i, pg_query.Token_CAST) && tc.Location < start {
		// CAST(x AS type).
		j := i + 1
		if !t.is(j, pg_query.Token_ASCII_40) {
			return Span{}, false
		}
		k := t.matching(j)
		if k < 0 {
			return Span{}, false
		}
		return Span{int(tc.Location), int(t.toks[k].End - tc.Location)}, true
	}
	// Suffix form: x::type.
	i := t.from(end)
	if !t.is(i, pg_query.Token_TYPECAST) {
		return Span{}, false
	}
	last := -1
	for j := i + 1; j < len(t.toks); j++ {
		tok := t.toks[j]
		switch {
		case tok.Token == pg_query.Token_ASCII_40 || tok.Token == pg_query.Token_ASCII_91:
			if last < 0 {
				return Span{}, false
			}
			k := t.matching(j)
			if k < 0 {
				return Span{}, false
			}
			last, j = k, k
			continue
		case tok.Token == pg_query.Token_ASCII_46:
			last = j
			continue
		case tok.Token == pg_query.Token_IDENT:
			last = j
			continue
		case tok.KeywordKind == pg_query.KeywordKind_RESERVED_KEYWORD:
			if t.text(j) == "with" && j+1 < len(t.toks) && t.text(j+1) == "time" {
				last = j
				continue
			}
		case tok.KeywordKind != pg_query.KeywordKind_NO_KEYWORD:
			last = j
			continue
		}
		break
	}
	if last < 0 {
		return Span{}, false
	}
	return Span{int(start), int(t.toks[last].End - start)}, true
}

// refSpan is the span of a column reference (a.b."c") starting at loc.
func (t *tokens) refSpan(loc int32) (Span, bool) {
	i := t.at(loc)
	if i < 0 {
		return Span{}, false
	}
	last := -1
	for j := i; j < len(t.toks); j++ {
		tok := t.toks[j]
		if tok.Token == pg_query.Token_IDENT || tok.KeywordKind != pg_query.KeywordKind_NO_KEYWORD {
			last = j
			if t.is(j+1, pg_query.Token_ASCII_46) {
				j++
				continue
			}
		}
		break
	}
	if last < 0 {
		return Span{}, false
	}
	return Span{int(loc), int(t.toks[last].End - loc)}, true
}
