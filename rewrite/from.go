package rewrite

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// fromItem adds the relations of one FROM item to sc.
func (a *analyzer) fromItem(n *pg_query.Node, sc *scope) error {
	switch {
	case n.GetRangeVar() != nil:
		return a.rangeVar(n.GetRangeVar(), sc)
	case n.GetRangeSubselect() != nil:
		rs := n.GetRangeSubselect()
		sub := rs.Subquery.GetSelectStmt()
		if sub == nil {
			return a.refuseIfTouched(n, "subquery in FROM")
		}
		outs, err := a.selectStmt(sub, sc, nil)
		if err != nil {
			return err
		}
		r := &rel{cols: outs}
		if rs.Alias != nil {
			r.alias = rs.Alias.Aliasname
			if r.cols, err = renameOuts(outs, rs.Alias.Colnames); err != nil {
				return err
			}
		}
		sc.rels = append(sc.rels, r)
		return nil
	case n.GetJoinExpr() != nil:
		return a.join(n.GetJoinExpr(), sc)
	case n.GetRangeTableSample() != nil:
		ts := n.GetRangeTableSample()
		if err := a.fromItem(ts.Relation, sc); err != nil {
			return err
		}
		for _, x := range ts.Args {
			if err := a.plainExpr(x, sc, "TABLESAMPLE"); err != nil {
				return err
			}
		}
		return a.plainExpr(ts.Repeatable, sc, "TABLESAMPLE")
	case n.GetRangeFunction() != nil:
		rf := n.GetRangeFunction()
		for _, f := range rf.Functions {
			if err := a.plainExpr(f, sc, "function in FROM"); err != nil {
				return err
			}
		}
		r := &rel{}
		if rf.Alias != nil {
			r.alias = rf.Alias.Aliasname
		}
		sc.rels = append(sc.rels, r)
		return nil
	}
	// Anything else (XMLTABLE, JSON_TABLE, …): refuse if an encrypted
	// column appears inside.
	return a.plainExpr(n, sc, nodeName(n))
}

func (a *analyzer) rangeVar(rv *pg_query.RangeVar, sc *scope) error {
	alias := rv.Relname
	if rv.Alias != nil {
		alias = rv.Alias.Aliasname
	}
	if rv.Schemaname == "" {
		if c := sc.cte(rv.Relname); c != nil {
			r := &rel{alias: alias, cols: c.cols}
			if rv.Alias != nil {
				cols, err := renameOuts(c.cols, rv.Alias.Colnames)
				if err != nil {
					return err
				}
				r.cols = cols
			}
			sc.rels = append(sc.rels, r)
			return nil
		}
	}
	cols := a.tableCols(rv)
	if rv.Alias != nil && len(rv.Alias.Colnames) > 0 && len(cols) > 0 {
		// Renaming by position needs the full column list, which the
		// catalog does not have.
		return refuse(&cols[0], "table alias with a column list")
	}
	schema, _ := resolveTable(a.cat, a.searchPath, rv.Schemaname, rv.Relname)
	sc.rels = append(sc.rels, baseRel(alias, schema, rv.Relname, cols))
	return nil
}

func (a *analyzer) join(j *pg_query.JoinExpr, sc *scope) error {
	start := len(sc.rels)
	if err := a.fromItem(j.Larg, sc); err != nil {
		return err
	}
	if err := a.fromItem(j.Rarg, sc); err != nil {
		return err
	}
	added := sc.rels[start:]
	if j.IsNatural {
		for _, r := range added {
			if enc := r.encrypted(); len(enc) > 0 {
				return refuse(&enc[0], "NATURAL JOIN")
			}
		}
	}
	for _, u := range j.UsingClause {
		name := u.GetString_().GetSval()
		for _, r := range added {
			if c := r.col(name); c != nil {
				return refuse(c, "JOIN USING")
			}
		}
	}
	if err := a.plainExpr(j.Quals, sc, "JOIN ON"); err != nil {
		return err
	}
	if j.Alias != nil {
		merged := &rel{alias: j.Alias.Aliasname}
		for _, r := range added {
			merged.cols = append(merged.cols, r.cols...)
		}
		if len(j.Alias.Colnames) > 0 && len(merged.encrypted()) > 0 {
			return refuse(&merged.encrypted()[0], "join alias with a column list")
		}
		sc.rels = append(sc.rels[:start], merged)
	}
	return nil
}
