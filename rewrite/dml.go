package rewrite

import (
	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// targetRel resolves the target table of INSERT/UPDATE/DELETE.
func (a *analyzer) targetRel(rv *pg_query.RangeVar) (*rel, []Column) {
	cols := a.tableCols(rv)
	alias := rv.Relname
	if rv.Alias != nil {
		alias = rv.Alias.Aliasname
	}
	schema, _ := resolveTable(a.cat, a.searchPath, rv.Schemaname, rv.Relname)
	return baseRel(alias, schema, rv.Relname, cols), cols
}

func (a *analyzer) insertStmt(ins *pg_query.InsertStmt, parent *scope) ([]outCol, error) {
	sc, err := a.withScope(ins.WithClause, parent)
	if err != nil {
		return nil, err
	}
	if ins.Relation == nil {
		return nil, nil
	}
	trel, cols := a.targetRel(ins.Relation)
	var targets []*Column
	if len(ins.Cols) == 0 {
		if len(cols) > 0 && ins.SelectStmt != nil {
			// Positions need the full column list, which the catalog
			// does not have.
			return nil, refuse(&cols[0], "INSERT without a column list")
		}
	} else {
		targets = make([]*Column, len(ins.Cols))
		for i, n := range ins.Cols {
			rt := n.GetResTarget()
			if rt == nil {
				continue
			}
			targets[i] = colByName(cols, rt.Name)
			if targets[i] != nil && len(rt.Indirection) > 0 {
				return nil, refuse(targets[i], "assignment to a subfield or element")
			}
		}
		if !anyTarget(targets) {
			// No encrypted target: still refuse copying ciphertext into
			// a plaintext column.
			targets = make([]*Column, len(ins.Cols))
		}
	}
	if sel := ins.SelectStmt.GetSelectStmt(); sel != nil {
		if targets == nil {
			targets = []*Column{}
		}
		if _, err := a.selectStmt(sel, sc, targets); err != nil {
			return nil, err
		}
	}
	if oc := ins.OnConflictClause; oc != nil {
		if err := a.onConflict(oc, trel, cols, sc); err != nil {
			return nil, err
		}
	}
	return a.targetList(ins.ReturningList, &scope{parent: sc, rels: []*rel{trel}}, nil)
}

func (a *analyzer) onConflict(oc *pg_query.OnConflictClause, trel *rel, cols []Column, sc *scope) error {
	isc := &scope{parent: sc, rels: []*rel{trel}}
	if inf := oc.Infer; inf != nil {
		for _, e := range inf.IndexElems {
			ie := e.GetIndexElem()
			if ie == nil {
				continue
			}
			if c := colByName(cols, ie.Name); c != nil {
				return refuse(c, "ON CONFLICT on an encrypted column")
			}
			if err := a.plainExpr(ie.Expr, isc, "ON CONFLICT"); err != nil {
				return err
			}
		}
		if err := a.plainExpr(inf.WhereClause, isc, "ON CONFLICT WHERE"); err != nil {
			return err
		}
	}
	if oc.Action != pg_query.OnConflictAction_ONCONFLICT_UPDATE {
		return nil
	}
	excluded := baseRel("excluded", "", "excluded", cols)
	usc := &scope{parent: sc, rels: []*rel{trel, excluded}}
	if err := a.setList(oc.TargetList, cols, usc); err != nil {
		return err
	}
	return a.plainExpr(oc.WhereClause, usc, "WHERE")
}

// setList analyses UPDATE … SET and ON CONFLICT DO UPDATE SET.
func (a *analyzer) setList(list []*pg_query.Node, cols []Column, sc *scope) error {
	for _, n := range list {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		t := colByName(cols, rt.Name)
		if mr := rt.Val.GetMultiAssignRef(); mr != nil {
			if t != nil {
				return refuse(t, "multi-column assignment")
			}
			if err := a.plainExpr(mr.Source, sc, "multi-column assignment"); err != nil {
				return err
			}
			continue
		}
		if t != nil {
			if len(rt.Indirection) > 0 {
				return refuse(t, "assignment to a subfield or element")
			}
			if err := a.value(rt.Val, t, sc, "assignment from another column"); err != nil {
				return err
			}
			continue
		}
		if err := a.plainExpr(rt.Val, sc, "assignment to another column"); err != nil {
			return err
		}
	}
	return nil
}

func (a *analyzer) updateStmt(u *pg_query.UpdateStmt, parent *scope) ([]outCol, error) {
	sc, err := a.withScope(u.WithClause, parent)
	if err != nil {
		return nil, err
	}
	if u.Relation == nil {
		return nil, nil
	}
	trel, cols := a.targetRel(u.Relation)
	usc := &scope{parent: sc, rels: []*rel{trel}}
	for _, f := range u.FromClause {
		if err := a.fromItem(f, usc); err != nil {
			return nil, err
		}
	}
	if err := a.setList(u.TargetList, cols, usc); err != nil {
		return nil, err
	}
	if err := a.plainExpr(u.WhereClause, usc, "WHERE"); err != nil {
		return nil, err
	}
	return a.targetList(u.ReturningList, usc, nil)
}

func (a *analyzer) deleteStmt(d *pg_query.DeleteStmt, parent *scope) ([]outCol, error) {
	sc, err := a.withScope(d.WithClause, parent)
	if err != nil {
		return nil, err
	}
	if d.Relation == nil {
		return nil, nil
	}
	trel, _ := a.targetRel(d.Relation)
	dsc := &scope{parent: sc, rels: []*rel{trel}}
	for _, f := range d.UsingClause {
		if err := a.fromItem(f, dsc); err != nil {
			return nil, err
		}
	}
	if err := a.plainExpr(d.WhereClause, dsc, "WHERE"); err != nil {
		return nil, err
	}
	return a.targetList(d.ReturningList, dsc, nil)
}
