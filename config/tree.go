package config

import (
	"errors"
	"fmt"
	"sort"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// The TOML document is read twice. toml.Unmarshal into a generic map checks
// the syntax and TOML's own rules (duplicate keys, redefined tables) and
// reports the first violation with its position. The unstable parser then
// yields an AST with byte ranges, from which we build a small tree of values
// that remember their line. The schema is applied to that tree (decode.go),
// so that every type error and unknown key can be reported, not just the
// first one.

// kind of a tree value.
type kind int

const (
	kindInvalid kind = 0
	kindString  kind = 1
	kindInteger kind = 2
	kindFloat   kind = 3
	kindBool    kind = 4
	kindTime    kind = 5 // any of TOML's date/time kinds
	kindArray   kind = 6
	kindTable   kind = 7
)

func (k kind) String() string {
	switch k {
	case kindString:
		return "string"
	case kindInteger:
		return "integer"
	case kindFloat:
		return "float"
	case kindBool:
		return "boolean"
	case kindTime:
		return "date/time"
	case kindArray:
		return "array"
	case kindTable:
		return "table"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// value is a TOML value with the line it starts on.
type value struct {
	kind  kind
	line  int
	text  string   // scalars: decoded string, or the raw literal of numbers, booleans and times
	items []*value // arrays (arrays of tables included)
	tbl   *table   // tables
}

// table is a TOML table; keys keep their order of appearance.
type table struct {
	line    int // line of its header, or of the first key that created it
	keys    []string
	entries map[string]*entry
}

// entry is one key of a table.
type entry struct {
	line int // line of the key
	val  *value
}

func newTable(line int) *table {
	return &table{line: line, entries: map[string]*entry{}}
}

func (t *table) get(key string) *entry { return t.entries[key] }

func (t *table) set(key string, e *entry) {
	if _, ok := t.entries[key]; !ok {
		t.keys = append(t.keys, key)
	}
	t.entries[key] = e
}

// syntaxProblem reports why data is not valid TOML, or nil when it is.
func syntaxProblem(file string, data []byte) *Problem {
	var generic map[string]any
	err := toml.Unmarshal(data, &generic)
	if err == nil {
		return nil
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		return &Problem{File: file, Line: max(line, 1), Msg: "invalid TOML: " + de.Error()[len("toml: "):]}
	}
	return &Problem{File: file, Line: 1, Msg: "invalid TOML: " + err.Error()}
}

// lineIndex maps byte offsets to 1-based line numbers.
type lineIndex []int // offsets where each line starts

func newLineIndex(data []byte) lineIndex {
	idx := lineIndex{0}
	for i, b := range data {
		if b == '\n' {
			idx = append(idx, i+1)
		}
	}
	return idx
}

func (idx lineIndex) line(offset uint32) int {
	return sort.Search(len(idx), func(i int) bool { return idx[i] > int(offset) })
}

// builder turns the unstable AST into a tree. The document is known to be
// valid TOML (syntaxProblem ran first); structural surprises still produce a
// problem rather than a panic.
type builder struct {
	lines lineIndex
	root  *table
	errs  []Problem
	file  string
}

func parseTree(file string, data []byte) (*table, []Problem) {
	b := &builder{lines: newLineIndex(data), root: newTable(1), file: file}
	var p unstable.Parser
	p.Reset(data)
	cur := b.root
	for p.NextExpression() {
		expr := p.Expression()
		switch expr.Kind {
		case unstable.Table, unstable.ArrayTable:
			keys, line := b.keyParts(expr.Key())
			cur = b.header(keys, line, expr.Kind == unstable.ArrayTable)
		case unstable.KeyValue:
			b.keyValue(cur, expr)
		}
	}
	if err := p.Error(); err != nil {
		// Unreachable after syntaxProblem, kept so a parser difference
		// cannot go unnoticed.
		b.errs = append(b.errs, Problem{File: file, Line: 1, Msg: "invalid TOML: " + err.Error()})
	}
	return b.root, b.errs
}

func (b *builder) keyParts(it unstable.Iterator) ([]string, int) {
	var parts []string
	line := 0
	for it.Next() {
		n := it.Node()
		if line == 0 {
			line = b.lines.line(n.Raw.Offset)
		}
		parts = append(parts, string(n.Data))
	}
	return parts, line
}

func (b *builder) fail(line int, format string, args ...any) {
	b.errs = append(b.errs, Problem{File: b.file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// descend returns the table at key in t, creating it (implicitly) when
// missing. For an array of tables it returns the last element, as TOML does.
func (b *builder) descend(t *table, key string, line int) *table {
	e := t.get(key)
	if e == nil {
		nt := newTable(line)
		t.set(key, &entry{line: line, val: &value{kind: kindTable, line: line, tbl: nt}})
		return nt
	}
	switch e.val.kind {
	case kindTable:
		return e.val.tbl
	case kindArray:
		if n := len(e.val.items); n > 0 && e.val.items[n-1].kind == kindTable {
			return e.val.items[n-1].tbl
		}
	}
	b.fail(line, "%s is not a table", key)
	return newTable(line) // detached: its content is ignored
}

// header handles [a.b] and [[a.b]] and returns the table keys go into.
func (b *builder) header(keys []string, line int, array bool) *table {
	t := b.root
	for _, k := range keys[:len(keys)-1] {
		t = b.descend(t, k, line)
	}
	last := keys[len(keys)-1]
	if !array {
		nt := b.descend(t, last, line)
		nt.line = line // an explicit header wins over an implicit creation
		return nt
	}
	e := t.get(last)
	if e == nil {
		e = &entry{line: line, val: &value{kind: kindArray, line: line}}
		t.set(last, e)
	}
	if e.val.kind != kindArray {
		b.fail(line, "%s is not an array of tables", last)
		return newTable(line)
	}
	nt := newTable(line)
	e.val.items = append(e.val.items, &value{kind: kindTable, line: line, tbl: nt})
	return nt
}

// keyValue stores key = value (dotted keys create tables) in t.
func (b *builder) keyValue(t *table, kv *unstable.Node) {
	keys, line := b.keyParts(kv.Key())
	for _, k := range keys[:len(keys)-1] {
		t = b.descend(t, k, line)
	}
	t.set(keys[len(keys)-1], &entry{line: line, val: b.value(kv.Value(), line)})
}

// value converts an AST value node. Nodes without a byte range (arrays) take
// the line of their key.
func (b *builder) value(n *unstable.Node, line int) *value {
	if n.Raw.Length > 0 {
		line = b.lines.line(n.Raw.Offset)
	}
	v := &value{line: line, text: string(n.Data)}
	switch n.Kind {
	case unstable.String:
		v.kind = kindString
	case unstable.Integer:
		v.kind = kindInteger
	case unstable.Float:
		v.kind = kindFloat
	case unstable.Bool:
		v.kind = kindBool
	case unstable.LocalDate, unstable.LocalTime, unstable.LocalDateTime, unstable.DateTime:
		v.kind = kindTime
	case unstable.Array:
		v.kind = kindArray
		it := n.Children()
		for it.Next() {
			if c := it.Node(); c.Kind != unstable.Comment {
				v.items = append(v.items, b.value(c, line))
			}
		}
	case unstable.InlineTable:
		v.kind = kindTable
		v.tbl = newTable(line)
		it := n.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				b.keyValue(v.tbl, c)
			}
		}
	default:
		b.fail(line, "unexpected TOML node %s", n.Kind)
	}
	return v
}
