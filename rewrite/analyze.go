package rewrite

import (
	"errors"
	"sort"
	"strconv"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"github.com/pganalyze/pg_query_go/v6/parser"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// DefaultSearchPath is used when Analyze is given none.
var defaultSearchPath = []string{"public"}

// Analyze parses sql (one or more statements) and returns what the proxy
// must do for it. searchPath resolves unqualified table names (nil means
// ["public"]; "$user", pg_temp and pg_catalog entries are skipped). Errors
// are *Refusal or *ParseError.
func Analyze(sql string, cat Catalog, searchPath []string) (*Plan, error) {
	if len(searchPath) == 0 {
		searchPath = defaultSearchPath
	}
	tree, err := pg_query.Parse(sql)
	if err != nil {
		pe := &ParseError{}
		var perr *parser.Error
		if errors.As(err, &perr) {
			pe.Position = perr.Cursorpos
		}
		return nil, pe
	}
	a := &analyzer{sql: sql, cat: cat, searchPath: searchPath, plain: map[int32]bool{}}
	plan := &Plan{}
	for _, raw := range tree.Stmts {
		st := Statement{Span: stmtSpan(sql, raw)}
		a.reads = nil
		if err := a.statement(raw.Stmt, &st); err != nil {
			return nil, err
		}
		st.Reads = a.reads
		st.Decrypts = len(a.reads) > 0
		if st.Decrypts {
			if fp, err := pg_query.Fingerprint(sql[st.Span.Offset:st.Span.End()]); err == nil {
				st.Fingerprint = fp
			}
		}
		plan.Statements = append(plan.Statements, st)
	}
	if err := a.finish(plan); err != nil {
		return nil, err
	}
	return plan, nil
}

func stmtSpan(sql string, raw *pg_query.RawStmt) Span {
	off, n := int(raw.StmtLocation), int(raw.StmtLen)
	if n == 0 || off+n > len(sql) {
		n = len(sql) - off
	}
	return Span{off, n}
}

type paramUse struct {
	col  Column
	kind Kind
}

// analyzer holds the state of one Analyze call.
type analyzer struct {
	sql        string
	cat        Catalog
	searchPath []string
	toks       *tokens // scanned on first need

	params   map[int32]paramUse
	plain    map[int32]bool // parameters used outside encrypted positions
	literals []LiteralAction
	blind    []BlindColumn
	reads    []Column
	depth    int
}

const maxDepth = 1000

func (a *analyzer) tokens() (*tokens, error) {
	if a.toks == nil {
		t, err := scanTokens(a.sql)
		if err != nil {
			return nil, &ParseError{}
		}
		a.toks = t
	}
	return a.toks, nil
}

func (a *analyzer) addRead(c *Column) {
	for _, r := range a.reads {
		if r == *c {
			return
		}
	}
	a.reads = append(a.reads, *c)
}

func (a *analyzer) addParam(n int32, c *Column, k Kind) error {
	if n < 1 {
		return refuse(c, "parameter $"+strconv.Itoa(int(n)))
	}
	if a.params == nil {
		a.params = map[int32]paramUse{}
	}
	if u, ok := a.params[n]; ok && (u.col.ContextString() != c.ContextString() || u.kind != k) {
		return refuse(c, "one parameter for two different encrypted uses")
	}
	a.params[n] = paramUse{*c, k}
	return nil
}

func (a *analyzer) addLiteral(n *pg_query.Node, value string, c *Column, k Kind) error {
	t, err := a.tokens()
	if err != nil {
		return err
	}
	sp, ok := t.valueSpan(n)
	if !ok {
		return refuse(c, "literal form")
	}
	a.literals = append(a.literals, LiteralAction{Span: sp, Value: value, Column: *c, Kind: k})
	return nil
}

func (a *analyzer) addBlindColumn(loc int32, c *Column) error {
	t, err := a.tokens()
	if err != nil {
		return err
	}
	sp, ok := t.refSpan(loc)
	if !ok {
		return refuse(c, "column reference form")
	}
	a.blind = append(a.blind, BlindColumn{Span: sp, Column: *c})
	return nil
}

func (a *analyzer) finish(p *Plan) error {
	for n, u := range a.params {
		if a.plain[n] {
			return refuse(&u.col, "one parameter for an encrypted and a plaintext use")
		}
		p.Params = append(p.Params, ParamAction{Index: int(n), Column: u.col, Kind: u.kind})
	}
	sort.Slice(p.Params, func(i, j int) bool { return p.Params[i].Index < p.Params[j].Index })
	sort.Slice(a.literals, func(i, j int) bool { return a.literals[i].Span.Offset < a.literals[j].Span.Offset })
	for i := 1; i < len(a.literals); i++ {
		if a.literals[i].Span.Offset < a.literals[i-1].Span.End() {
			return refuse(&a.literals[i].Column, "overlapping literals")
		}
	}
	p.Literals = a.literals
	sort.Slice(a.blind, func(i, j int) bool { return a.blind[i].Span.Offset < a.blind[j].Span.Offset })
	p.BlindColumns = a.blind
	return nil
}

// statement dispatches one top-level (or wrapped) statement.
func (a *analyzer) statement(n *pg_query.Node, st *Statement) error {
	switch {
	case n.GetSelectStmt() != nil:
		st.Kind = "SELECT"
		_, err := a.selectStmt(n.GetSelectStmt(), nil, nil)
		return err
	case n.GetInsertStmt() != nil:
		st.Kind = "INSERT"
		_, err := a.insertStmt(n.GetInsertStmt(), nil)
		return err
	case n.GetUpdateStmt() != nil:
		st.Kind = "UPDATE"
		_, err := a.updateStmt(n.GetUpdateStmt(), nil)
		return err
	case n.GetDeleteStmt() != nil:
		st.Kind = "DELETE"
		_, err := a.deleteStmt(n.GetDeleteStmt(), nil)
		return err
	case n.GetCopyStmt() != nil:
		st.Kind = "COPY"
		return a.copyStmt(n.GetCopyStmt())
	case n.GetMergeStmt() != nil:
		st.Kind = "MERGE"
		return a.refuseIfTouched(n, "MERGE")
	case n.GetExplainStmt() != nil:
		st.Kind = "EXPLAIN"
		return a.statement(n.GetExplainStmt().Query, &Statement{})
	case n.GetDeclareCursorStmt() != nil:
		st.Kind = "DECLARE"
		return a.statement(n.GetDeclareCursorStmt().Query, &Statement{})
	case n.GetCreateTableAsStmt() != nil:
		st.Kind = "CREATE TABLE AS"
		return a.statement(n.GetCreateTableAsStmt().Query, &Statement{})
	case n.GetViewStmt() != nil:
		st.Kind = "CREATE VIEW"
		return a.statement(n.GetViewStmt().Query, &Statement{})
	case n.GetPrepareStmt() != nil:
		st.Kind = "PREPARE"
		// EXECUTE's arguments cannot be tied to this statement later:
		// refuse a prepared statement whose parameters need encryption.
		before := len(a.params)
		if err := a.statement(n.GetPrepareStmt().Query, &Statement{}); err != nil {
			return err
		}
		if len(a.params) > before {
			for _, u := range a.params {
				return refuse(&u.col, "SQL PREPARE with parameters")
			}
		}
		return nil
	}
	st.Kind = "UTILITY"
	return nil
}

// refuseIfTouched refuses n when any table it names has encrypted columns.
func (a *analyzer) refuseIfTouched(n *pg_query.Node, construct string) error {
	var found *Column
	walkMessages(n.ProtoReflect(), func(m protoreflect.Message) bool {
		if rv, ok := m.Interface().(*pg_query.RangeVar); ok {
			if cols := a.tableCols(rv); len(cols) > 0 {
				found = &cols[0]
			}
		}
		return found == nil
	})
	if found != nil {
		return refuse(found, construct)
	}
	return nil
}

// walkMessages calls fn for m and every message below it while fn returns
// true.
func walkMessages(m protoreflect.Message, fn func(protoreflect.Message) bool) bool {
	if !fn(m) {
		return false
	}
	ok := true
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len() && ok; i++ {
				ok = walkMessages(l.Get(i).Message(), fn)
			}
		} else {
			ok = walkMessages(v.Message(), fn)
		}
		return ok
	})
	return ok
}

func (a *analyzer) copyStmt(c *pg_query.CopyStmt) error {
	if c.Relation != nil {
		cols := a.tableCols(c.Relation)
		if len(cols) > 0 && len(c.Attlist) == 0 {
			return refuse(&cols[0], "COPY")
		}
		for _, n := range c.Attlist {
			if col := colByName(cols, n.GetString_().GetSval()); col != nil {
				return refuse(col, "COPY")
			}
		}
	}
	if c.Query != nil {
		return a.refuseIfTouched(c.Query, "COPY")
	}
	return nil
}

// tableCols returns the encrypted columns of the table rv names.
func (a *analyzer) tableCols(rv *pg_query.RangeVar) []Column {
	schema, ok := resolveTable(a.cat, a.searchPath, rv.Schemaname, rv.Relname)
	if !ok {
		return nil
	}
	var out []Column
	for _, c := range a.cat.Columns(schema, rv.Relname) {
		if c.Encrypted {
			out = append(out, c)
		}
	}
	return out
}
