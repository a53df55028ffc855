package rewrite

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// selectStmt analyses a SELECT (or VALUES, or set operation) and returns its
// outputs. targets is non-nil for the source of INSERT: the target column
// of each position (nil where not encrypted).
func (a *analyzer) selectStmt(sel *pg_query.SelectStmt, parent *scope, targets []*Column) ([]outCol, error) {
	a.depth++
	defer func() { a.depth-- }()
	if a.depth > maxDepth {
		return nil, &ParseError{}
	}
	wsc, err := a.withScope(sel.WithClause, parent)
	if err != nil {
		return nil, err
	}
	sc := &scope{parent: wsc}
	if sel.Op != pg_query.SetOperation_SETOP_NONE && sel.Op != pg_query.SetOperation_SET_OPERATION_UNDEFINED {
		return a.setOp(sel, wsc, targets)
	}
	if len(sel.ValuesLists) > 0 {
		return a.values(sel.ValuesLists, sc, targets)
	}
	for _, f := range sel.FromClause {
		if err := a.fromItem(f, sc); err != nil {
			return nil, err
		}
	}
	outs, err := a.targetList(sel.TargetList, sc, targets)
	if err != nil {
		return nil, err
	}
	if err := a.plainExpr(sel.WhereClause, sc, "WHERE"); err != nil {
		return nil, err
	}
	for _, g := range sel.GroupClause {
		if err := a.orderish(g, sc, outs, "GROUP BY"); err != nil {
			return nil, err
		}
	}
	if err := a.plainExpr(sel.HavingClause, sc, "HAVING"); err != nil {
		return nil, err
	}
	if len(sel.DistinctClause) > 0 {
		if sel.DistinctClause[0] == nil || sel.DistinctClause[0].Node == nil {
			for _, o := range outs {
				if o.col != nil {
					return nil, refuse(o.col, "DISTINCT")
				}
			}
		} else {
			for _, d := range sel.DistinctClause {
				if err := a.orderish(d, sc, outs, "DISTINCT ON"); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := a.sortClause(sel.SortClause, sc, outs); err != nil {
		return nil, err
	}
	for _, w := range sel.WindowClause {
		if err := a.plainExpr(w, sc, "window"); err != nil {
			return nil, err
		}
	}
	if err := a.plainExpr(sel.LimitCount, sc, "LIMIT"); err != nil {
		return nil, err
	}
	if err := a.plainExpr(sel.LimitOffset, sc, "OFFSET"); err != nil {
		return nil, err
	}
	return outs, nil
}

func (a *analyzer) sortClause(list []*pg_query.Node, sc *scope, outs []outCol) error {
	for _, s := range list {
		n := s
		if sb := s.GetSortBy(); sb != nil {
			n = sb.Node
		}
		if err := a.orderish(n, sc, outs, "ORDER BY"); err != nil {
			return err
		}
	}
	return nil
}

func (a *analyzer) setOp(sel *pg_query.SelectStmt, sc *scope, targets []*Column) ([]outCol, error) {
	name := map[pg_query.SetOperation]string{
		pg_query.SetOperation_SETOP_UNION:     "UNION",
		pg_query.SetOperation_SETOP_INTERSECT: "INTERSECT",
		pg_query.SetOperation_SETOP_EXCEPT:    "EXCEPT",
	}[sel.Op]
	for _, t := range targets {
		if t != nil {
			return nil, refuse(t, "INSERT … SELECT with "+name)
		}
	}
	var outs []outCol
	for i, arm := range []*pg_query.SelectStmt{sel.Larg, sel.Rarg} {
		if arm == nil {
			continue
		}
		o, err := a.selectStmt(arm, sc, nil)
		if err != nil {
			return nil, err
		}
		for _, c := range o {
			if c.col != nil {
				// The server reports no table origin for set-operation
				// results, so the proxy could not decrypt them.
				return nil, refuse(c.col, name)
			}
		}
		if i == 0 {
			outs = o
		}
	}
	if err := a.sortClause(sel.SortClause, sc, outs); err != nil {
		return nil, err
	}
	if err := a.plainExpr(sel.LimitCount, sc, "LIMIT"); err != nil {
		return nil, err
	}
	return outs, a.plainExpr(sel.LimitOffset, sc, "OFFSET")
}

func (a *analyzer) values(rows []*pg_query.Node, sc *scope, targets []*Column) ([]outCol, error) {
	var outs []outCol
	for _, row := range rows {
		items := row.GetList().GetItems()
		for i, it := range items {
			if i < len(targets) && targets[i] != nil {
				if err := a.value(it, targets[i], sc, "INSERT value expression"); err != nil {
					return nil, err
				}
				continue
			}
			if err := a.plainExpr(it, sc, "VALUES into a plaintext column"); err != nil {
				return nil, err
			}
		}
		if len(outs) < len(items) {
			outs = make([]outCol, len(items))
		}
	}
	return outs, nil
}

// targetList analyses a select list or RETURNING list.
func (a *analyzer) targetList(list []*pg_query.Node, sc *scope, targets []*Column) ([]outCol, error) {
	var outs []outCol
	for i, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil {
			if q, star := columnRef(cr); star {
				cols := starCols(q, sc)
				if targets != nil && (len(cols) > 0 || anyTarget(targets)) {
					c := firstOf(cols, targets)
					return nil, refuse(c, "INSERT … SELECT *")
				}
				for j := range cols {
					c := cols[j]
					a.addRead(&c)
					outs = append(outs, outCol{name: c.Name, col: &c, fromStar: true})
				}
				continue
			}
		}
		if i < len(targets) && targets[i] != nil {
			if err := a.value(rt.Val, targets[i], sc, "INSERT … SELECT from another column"); err != nil {
				return nil, err
			}
			outs = append(outs, outCol{name: rt.Name})
			continue
		}
		c, err := a.expr(rt.Val, sc)
		if err != nil {
			return nil, err
		}
		if c != nil && targets != nil {
			return nil, refuse(c, "INSERT … SELECT into another column")
		}
		name := rt.Name
		if c != nil {
			a.addRead(c)
			if name == "" {
				name = c.Name
			}
		} else if name == "" {
			if cr := rt.Val.GetColumnRef(); cr != nil {
				if q, _ := columnRef(cr); len(q) > 0 {
					name = q[len(q)-1]
				}
			}
		}
		outs = append(outs, outCol{name: name, col: c})
	}
	return outs, nil
}

func anyTarget(ts []*Column) bool {
	for _, t := range ts {
		if t != nil {
			return true
		}
	}
	return false
}

func firstOf(cols []Column, ts []*Column) *Column {
	if len(cols) > 0 {
		return &cols[0]
	}
	for _, t := range ts {
		if t != nil {
			return t
		}
	}
	return nil
}

// orderish checks an ORDER BY / GROUP BY / DISTINCT ON item, which may also
// name an output column by alias or position.
func (a *analyzer) orderish(n *pg_query.Node, sc *scope, outs []outCol, construct string) error {
	if n == nil {
		return nil
	}
	if cr := n.GetColumnRef(); cr != nil {
		if q, star := columnRef(cr); !star && len(q) == 1 {
			for _, o := range outs {
				if o.name == q[0] && o.col != nil {
					return refuse(o.col, construct)
				}
			}
		}
	}
	if c := n.GetAConst(); c != nil && c.GetIval() != nil {
		k := int(c.GetIval().Ival)
		for _, o := range outs {
			if o.fromStar && o.col != nil {
				return refuse(o.col, construct+" position")
			}
		}
		if k >= 1 && k <= len(outs) && outs[k-1].col != nil {
			return refuse(outs[k-1].col, construct)
		}
	}
	return a.plainExpr(n, sc, construct)
}

func (a *analyzer) withScope(w *pg_query.WithClause, parent *scope) (*scope, error) {
	if w == nil {
		return parent, nil
	}
	sc := &scope{parent: parent, ctes: map[string]*rel{}}
	for _, n := range w.Ctes {
		cte := n.GetCommonTableExpr()
		if cte == nil {
			continue
		}
		if w.Recursive {
			sc.ctes[cte.Ctename] = &rel{alias: cte.Ctename}
		}
		outs, err := a.anyQuery(cte.Ctequery, sc)
		if err != nil {
			return nil, err
		}
		if outs, err = renameOuts(outs, cte.Aliascolnames); err != nil {
			return nil, err
		}
		sc.ctes[cte.Ctename] = &rel{alias: cte.Ctename, cols: outs}
	}
	return sc, nil
}

// anyQuery analyses a query that produces rows (a CTE body).
func (a *analyzer) anyQuery(n *pg_query.Node, sc *scope) ([]outCol, error) {
	switch {
	case n.GetSelectStmt() != nil:
		return a.selectStmt(n.GetSelectStmt(), sc, nil)
	case n.GetInsertStmt() != nil:
		return a.insertStmt(n.GetInsertStmt(), sc)
	case n.GetUpdateStmt() != nil:
		return a.updateStmt(n.GetUpdateStmt(), sc)
	case n.GetDeleteStmt() != nil:
		return a.deleteStmt(n.GetDeleteStmt(), sc)
	}
	return nil, a.refuseIfTouched(n, "statement in WITH")
}

func renameOuts(outs []outCol, names []*pg_query.Node) ([]outCol, error) {
	if len(names) == 0 {
		return outs, nil
	}
	for _, o := range outs {
		if o.fromStar && o.col != nil {
			return nil, refuse(o.col, "column alias list over *")
		}
	}
	out := append([]outCol(nil), outs...)
	for i, n := range names {
		if i < len(out) {
			out[i].name = n.GetString_().GetSval()
		}
	}
	return out, nil
}
