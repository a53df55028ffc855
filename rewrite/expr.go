package rewrite

import (
	"strconv"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// plainExpr analyses n where an encrypted column's value may not appear
// as-is (construct names the position for the refusal).
func (a *analyzer) plainExpr(n *pg_query.Node, sc *scope, construct string) error {
	if n == nil || n.Node == nil {
		return nil
	}
	if l := n.GetList(); l != nil {
		for _, it := range l.Items {
			if err := a.plainExpr(it, sc, construct); err != nil {
				return err
			}
		}
		return nil
	}
	c, err := a.expr(n, sc)
	if err != nil {
		return err
	}
	if c != nil {
		return refuse(c, construct)
	}
	return nil
}

// bare returns the encrypted column n is a plain reference to, or nil.
func bare(n *pg_query.Node, sc *scope) *Column {
	cr := n.GetColumnRef()
	if cr == nil {
		return nil
	}
	names, star := columnRef(cr)
	if star {
		return nil
	}
	return lookup(names, sc)
}

// expr analyses n and returns the encrypted column it evaluates to when it
// is a bare reference (the caller decides whether that is allowed there);
// encrypted columns nested inside n in any other way are refused.
func (a *analyzer) expr(n *pg_query.Node, sc *scope) (*Column, error) {
	if n == nil || n.Node == nil {
		return nil, nil
	}
	a.depth++
	defer func() { a.depth-- }()
	if a.depth > maxDepth {
		return nil, &ParseError{}
	}
	switch v := n.Node.(type) {
	case *pg_query.Node_ColumnRef:
		names, star := columnRef(v.ColumnRef)
		if star {
			if cols := starCols(names[:len(names):len(names)], sc); len(cols) > 0 {
				return &cols[0], nil
			}
			return nil, nil
		}
		if c := lookup(names, sc); c != nil || len(names) != 1 {
			return c, nil
		}
		// A bare relation name is a whole-row reference: the row value
		// would carry ciphertext the proxy cannot decrypt.
		if cols := starCols(names, sc); len(cols) > 0 {
			return nil, refuse(&cols[0], "whole-row reference")
		}
		return nil, nil
	case *pg_query.Node_ParamRef:
		a.plain[v.ParamRef.Number] = true
		return nil, nil
	case *pg_query.Node_AConst, *pg_query.Node_SetToDefault, *pg_query.Node_SqlvalueFunction:
		return nil, nil
	case *pg_query.Node_TypeCast:
		return nil, a.plainExpr(v.TypeCast.Arg, sc, "cast ::"+typeName(v.TypeCast.TypeName))
	case *pg_query.Node_AExpr:
		return nil, a.aExpr(v.AExpr, sc)
	case *pg_query.Node_BoolExpr:
		op := strings.TrimSuffix(strings.TrimPrefix(v.BoolExpr.Boolop.String(), "BOOL_EXPR_TYPE_UNDEFINED"), "_EXPR")
		for _, x := range v.BoolExpr.Args {
			if err := a.plainExpr(x, sc, op); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case *pg_query.Node_NullTest:
		if bare(v.NullTest.Arg, sc) != nil {
			return nil, nil
		}
		return nil, a.plainExpr(v.NullTest.Arg, sc, "IS NULL")
	case *pg_query.Node_FuncCall:
		return nil, a.funcCall(v.FuncCall, sc)
	case *pg_query.Node_SubLink:
		return nil, a.subLink(v.SubLink, sc)
	case *pg_query.Node_SelectStmt:
		outs, err := a.selectStmt(v.SelectStmt, sc, nil)
		if err != nil {
			return nil, err
		}
		for _, o := range outs {
			if o.col != nil {
				return nil, refuse(o.col, "subquery")
			}
		}
		return nil, nil
	}
	// Anything else: every child is a plain position named after n.
	construct := nodeName(n)
	return nil, forEachChild(n.ProtoReflect(), func(c *pg_query.Node) error {
		return a.plainExpr(c, sc, construct)
	})
}

func (a *analyzer) aExpr(e *pg_query.A_Expr, sc *scope) error {
	op := opName(e.Name)
	switch e.Kind {
	case pg_query.A_Expr_Kind_AEXPR_OP:
		if op == "=" {
			return a.equality(e, sc)
		}
		construct := opConstruct(op)
		if err := a.plainExpr(e.Lexpr, sc, construct); err != nil {
			return err
		}
		return a.plainExpr(e.Rexpr, sc, construct)
	case pg_query.A_Expr_Kind_AEXPR_IN:
		return a.in(e, op, sc)
	}
	construct := map[pg_query.A_Expr_Kind]string{
		pg_query.A_Expr_Kind_AEXPR_OP_ANY:          op + " ANY",
		pg_query.A_Expr_Kind_AEXPR_OP_ALL:          op + " ALL",
		pg_query.A_Expr_Kind_AEXPR_DISTINCT:        "IS DISTINCT FROM",
		pg_query.A_Expr_Kind_AEXPR_NOT_DISTINCT:    "IS NOT DISTINCT FROM",
		pg_query.A_Expr_Kind_AEXPR_NULLIF:          "NULLIF",
		pg_query.A_Expr_Kind_AEXPR_LIKE:            "LIKE",
		pg_query.A_Expr_Kind_AEXPR_ILIKE:           "ILIKE",
		pg_query.A_Expr_Kind_AEXPR_SIMILAR:         "SIMILAR TO",
		pg_query.A_Expr_Kind_AEXPR_BETWEEN:         "BETWEEN",
		pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN:     "NOT BETWEEN",
		pg_query.A_Expr_Kind_AEXPR_BETWEEN_SYM:     "BETWEEN SYMMETRIC",
		pg_query.A_Expr_Kind_AEXPR_NOT_BETWEEN_SYM: "NOT BETWEEN SYMMETRIC",
	}[e.Kind]
	if construct == "" {
		construct = "operator " + op
	}
	if err := a.plainExpr(e.Lexpr, sc, construct); err != nil {
		return err
	}
	return a.plainExpr(e.Rexpr, sc, construct)
}

// equality handles col = value, the one comparison a blind index supports.
func (a *analyzer) equality(e *pg_query.A_Expr, sc *scope) error {
	lc, rc := bare(e.Lexpr, sc), bare(e.Rexpr, sc)
	switch {
	case lc == nil && rc == nil:
		if err := a.plainExpr(e.Lexpr, sc, "comparison ="); err != nil {
			return err
		}
		return a.plainExpr(e.Rexpr, sc, "comparison =")
	case lc != nil && rc != nil:
		return refuse(lc, "comparison with another column")
	}
	col, ref, other := lc, e.Lexpr, e.Rexpr
	if col == nil {
		col, ref, other = rc, e.Rexpr, e.Lexpr
	}
	if !col.Search {
		return refuse(col, "comparison =")
	}
	if err := a.lookupValue(other, col, sc); err != nil {
		return err
	}
	return a.addBlindColumn(ref.GetColumnRef().Location, col)
}

func (a *analyzer) in(e *pg_query.A_Expr, op string, sc *scope) error {
	col := bare(e.Lexpr, sc)
	construct := "IN"
	if op != "=" {
		construct = "NOT IN"
	}
	if col == nil {
		if err := a.plainExpr(e.Lexpr, sc, construct); err != nil {
			return err
		}
		return a.plainExpr(e.Rexpr, sc, construct)
	}
	if op != "=" || !col.Search {
		return refuse(col, construct)
	}
	items := e.Rexpr.GetList().GetItems()
	if len(items) == 0 {
		return refuse(col, construct)
	}
	for _, it := range items {
		if err := a.lookupValue(it, col, sc); err != nil {
			return err
		}
	}
	return a.addBlindColumn(e.Lexpr.GetColumnRef().Location, col)
}

// lookupValue records the value side of a blind-index comparison.
func (a *analyzer) lookupValue(n *pg_query.Node, col *Column, sc *scope) error {
	if p := n.GetParamRef(); p != nil {
		return a.addParam(p.Number, col, KindBlindIndex)
	}
	if v, isNull, ok := constValue(n); ok {
		if isNull {
			return nil
		}
		return a.addLiteral(n, v, col, KindBlindIndex)
	}
	if _, err := a.expr(n, sc); err != nil {
		return err
	}
	if n.GetColumnRef() != nil {
		return refuse(col, "comparison with another column")
	}
	return refuse(col, "comparison with an expression")
}

// value records n flowing into the encrypted column target (INSERT value,
// UPDATE SET). A column of the same context may be copied as ciphertext.
func (a *analyzer) value(n *pg_query.Node, target *Column, sc *scope, copyConstruct string) error {
	if n == nil || n.Node == nil || n.GetSetToDefault() != nil {
		return nil
	}
	if p := n.GetParamRef(); p != nil {
		return a.addParam(p.Number, target, KindEncrypt)
	}
	if v, isNull, ok := constValue(n); ok {
		if isNull {
			return nil
		}
		return a.addLiteral(n, v, target, KindEncrypt)
	}
	if cr := n.GetColumnRef(); cr != nil {
		if c := bare(n, sc); c != nil && c.ContextString() == target.ContextString() {
			return nil
		} else if c != nil {
			return refuse(c, copyConstruct)
		}
		return refuse(target, copyConstruct)
	}
	if tc := n.GetTypeCast(); tc != nil && tc.Arg.GetParamRef() != nil {
		return refuse(target, "cast of a parameter")
	}
	if err := a.plainExpr(n, sc, describe(n)); err != nil {
		return err
	}
	return refuse(target, describe(n))
}

// constValue unwraps casts around an A_Const and returns its value.
func constValue(n *pg_query.Node) (v string, isNull, ok bool) {
	for n.GetTypeCast() != nil {
		n = n.GetTypeCast().Arg
	}
	c := n.GetAConst()
	if c == nil {
		return "", false, false
	}
	if c.Isnull {
		return "", true, true
	}
	switch {
	case c.GetSval() != nil:
		return c.GetSval().Sval, false, true
	case c.GetIval() != nil:
		return strconv.FormatInt(int64(c.GetIval().Ival), 10), false, true
	case c.GetFval() != nil:
		return c.GetFval().Fval, false, true
	case c.GetBoolval() != nil:
		return strconv.FormatBool(c.GetBoolval().Boolval), false, true
	}
	return "", false, false
}

func (a *analyzer) funcCall(f *pg_query.FuncCall, sc *scope) error {
	name := funcName(f.Funcname)
	construct := "function " + name + "()"
	if f.AggDistinct {
		construct = "function " + name + "(DISTINCT …)"
	}
	if err := a.plainExpr(f.AggFilter, sc, "FILTER"); err != nil {
		return err
	}
	for _, s := range f.AggOrder {
		if err := a.plainExpr(s.GetSortBy().GetNode(), sc, "ORDER BY in "+construct); err != nil {
			return err
		}
	}
	if f.Over != nil {
		for _, p := range f.Over.PartitionClause {
			if err := a.plainExpr(p, sc, "PARTITION BY"); err != nil {
				return err
			}
		}
		for _, s := range f.Over.OrderClause {
			if err := a.plainExpr(s.GetSortBy().GetNode(), sc, "window ORDER BY"); err != nil {
				return err
			}
		}
	}
	if name == "count" && len(f.Args) == 1 && !f.AggDistinct && !f.FuncVariadic && bare(f.Args[0], sc) != nil {
		return nil
	}
	for _, x := range f.Args {
		if err := a.plainExpr(x, sc, construct); err != nil {
			return err
		}
	}
	return nil
}

func (a *analyzer) subLink(s *pg_query.SubLink, sc *scope) error {
	sel := s.Subselect.GetSelectStmt()
	construct := map[pg_query.SubLinkType]string{
		pg_query.SubLinkType_EXISTS_SUBLINK: "EXISTS",
		pg_query.SubLinkType_ALL_SUBLINK:    "ALL (subquery)",
		pg_query.SubLinkType_ANY_SUBLINK:    "IN (subquery)",
		pg_query.SubLinkType_EXPR_SUBLINK:   "scalar subquery",
		pg_query.SubLinkType_ARRAY_SUBLINK:  "ARRAY(subquery)",
	}[s.SubLinkType]
	if construct == "" {
		construct = "subquery"
	}
	if err := a.plainExpr(s.Testexpr, sc, construct); err != nil {
		return err
	}
	if sel == nil {
		return a.plainExpr(s.Subselect, sc, construct)
	}
	outs, err := a.selectStmt(sel, sc, nil)
	if err != nil {
		return err
	}
	if s.SubLinkType == pg_query.SubLinkType_EXISTS_SUBLINK {
		return nil
	}
	for _, o := range outs {
		if o.col != nil {
			return refuse(o.col, construct)
		}
	}
	return nil
}

// forEachChild calls fn for every Node directly below m (looking through
// non-Node messages such as TypeName).
func forEachChild(m protoreflect.Message, fn func(*pg_query.Node) error) error {
	var err error
	visit := func(msg protoreflect.Message) {
		if node, ok := msg.Interface().(*pg_query.Node); ok {
			err = fn(node)
		} else {
			err = forEachChild(msg, fn)
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len() && err == nil; i++ {
				visit(l.Get(i).Message())
			}
		} else {
			visit(v.Message())
		}
		return err == nil
	})
	return err
}
