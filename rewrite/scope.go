package rewrite

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// outCol is one output column of a derived relation (subquery, CTE,
// RETURNING): its name and, when it passes an encrypted column through
// unchanged, that column.
type outCol struct {
	name     string
	col      *Column
	fromStar bool // expanded from *: position among outputs unknown
}

// rel is one relation visible in a scope: a base table (its encrypted
// columns) or a derived relation (its outputs).
type rel struct {
	alias         string // alias, or the table/CTE name
	schema, table string // base table without alias: also matches schema.table
	cols          []outCol
}

func (r *rel) col(name string) *Column {
	for i := range r.cols {
		if r.cols[i].name == name {
			return r.cols[i].col
		}
	}
	return nil
}

func (r *rel) encrypted() []Column {
	var out []Column
	for _, c := range r.cols {
		if c.col != nil {
			out = append(out, *c.col)
		}
	}
	return out
}

func (r *rel) matches(q []string) bool {
	switch len(q) {
	case 1:
		return r.alias == q[0]
	case 2, 3:
		q = q[len(q)-2:]
		return r.schema != "" && r.schema == q[0] && r.table == q[1]
	}
	return false
}

// scope is one query level's FROM items, CTEs, and its enclosing level.
type scope struct {
	parent *scope
	rels   []*rel
	ctes   map[string]*rel
}

func (s *scope) cte(name string) *rel {
	for ; s != nil; s = s.parent {
		if r, ok := s.ctes[name]; ok {
			return r
		}
	}
	return nil
}

func baseRel(alias string, schema, table string, cols []Column) *rel {
	r := &rel{alias: alias, table: table}
	if alias == table {
		r.schema = schema
	}
	for i := range cols {
		c := cols[i]
		r.cols = append(r.cols, outCol{name: c.Name, col: &c})
	}
	return r
}

// columnRef splits a ColumnRef into its name fields and whether it ends in *.
func columnRef(cr *pg_query.ColumnRef) (names []string, star bool) {
	for _, f := range cr.Fields {
		if s := f.GetString_(); s != nil {
			names = append(names, s.Sval)
		} else if f.GetAStar() != nil {
			star = true
		}
	}
	return names, star
}

// lookup resolves a column reference (not *) to an encrypted column, or nil.
func lookup(names []string, sc *scope) *Column {
	if len(names) == 0 {
		return nil
	}
	name, q := names[len(names)-1], names[:len(names)-1]
	for s := sc; s != nil; s = s.parent {
		for _, r := range s.rels {
			if len(q) == 0 {
				if c := r.col(name); c != nil {
					return c
				}
			} else if r.matches(q) {
				return r.col(name)
			}
		}
	}
	return nil
}

// starCols returns the encrypted columns a * or q.* expands to.
func starCols(q []string, sc *scope) []Column {
	if sc == nil {
		return nil
	}
	var out []Column
	if len(q) == 0 {
		for _, r := range sc.rels {
			out = append(out, r.encrypted()...)
		}
		return out
	}
	for s := sc; s != nil; s = s.parent {
		for _, r := range s.rels {
			if r.matches(q) {
				return r.encrypted()
			}
		}
	}
	return nil
}

func colByName(cols []Column, name string) *Column {
	for i := range cols {
		if cols[i].Name == name {
			c := cols[i]
			return &c
		}
	}
	return nil
}
