package rewrite

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

func opName(name []*pg_query.Node) string {
	if len(name) == 0 {
		return ""
	}
	return name[len(name)-1].GetString_().GetSval()
}

func opConstruct(op string) string {
	switch op {
	case "<", ">", "<=", ">=", "<>", "!=":
		return "comparison " + op
	case "+", "-", "*", "/", "%", "^":
		return "arithmetic " + op
	case "||":
		return "concatenation ||"
	}
	return "operator " + op
}

func funcName(name []*pg_query.Node) string {
	if len(name) == 0 {
		return ""
	}
	return strings.ToLower(name[len(name)-1].GetString_().GetSval())
}

func typeName(t *pg_query.TypeName) string {
	if t == nil || len(t.Names) == 0 {
		return "type"
	}
	return t.Names[len(t.Names)-1].GetString_().GetSval()
}

// nodeName names a node type for a refusal: "CaseExpr" → "CASE", …
func nodeName(n *pg_query.Node) string {
	switch n.Node.(type) {
	case *pg_query.Node_CaseExpr, *pg_query.Node_CaseWhen:
		return "CASE"
	case *pg_query.Node_CoalesceExpr:
		return "COALESCE"
	case *pg_query.Node_MinMaxExpr:
		return "GREATEST/LEAST"
	case *pg_query.Node_RowExpr:
		return "row constructor"
	case *pg_query.Node_AArrayExpr:
		return "ARRAY[]"
	case *pg_query.Node_AIndirection:
		return "subscript"
	case *pg_query.Node_CollateClause:
		return "COLLATE"
	case *pg_query.Node_BooleanTest:
		return "IS TRUE/FALSE"
	}
	if n.Node == nil {
		return "expression"
	}
	s := string(n.ProtoReflect().WhichOneof(n.ProtoReflect().Descriptor().Oneofs().Get(0)).Name())
	return "expression " + s
}

// describe names a value expression for a refusal.
func describe(n *pg_query.Node) string {
	switch {
	case n.GetFuncCall() != nil:
		return "function " + funcName(n.GetFuncCall().Funcname) + "()"
	case n.GetAExpr() != nil:
		return opConstruct(opName(n.GetAExpr().Name))
	case n.GetSubLink() != nil:
		return "subquery"
	case n.GetTypeCast() != nil:
		return "cast ::" + typeName(n.GetTypeCast().TypeName)
	case n.GetAConst() != nil:
		return "bit-string literal"
	}
	return nodeName(n)
}
