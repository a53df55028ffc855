package catalog

import (
	"fmt"
	"strings"
)

// Column is one configured encrypted column, with names exactly as they are
// in the system catalog (unquoted, case preserved; config normalises the
// spellings of pgcloak.toml to this form).
type Column struct {
	Schema         string // "public" when the configuration names none
	Table          string
	Column         string
	Type           string // logical type the application sees: canonical, e.g. "varchar(40)"
	Classification string // a config level name, e.g. "confidential"
	Search         string // config search mode, e.g. "none" or "equality"
	// Context is bound into every ciphertext as associated data; "" means
	// QualifiedName(). See ContextString.
	Context string
}

// QualifiedName is "schema.table.column" (identifiers unquoted).
func (c Column) QualifiedName() string { return c.Schema + "." + c.Table + "." + c.Column }

// ContextString is the associated-data context of the column: Context, or
// "schema.table.column" when Context is empty. A column renamed in the
// database keeps its configured context, so its ciphertext stays readable.
func (c Column) ContextString() string {
	if c.Context != "" {
		return c.Context
	}
	return c.QualifiedName()
}

// TableName is a schema-qualified table name, unquoted.
type TableName struct {
	Schema, Table string
}

// String returns "schema.table" (unquoted).
func (t TableName) String() string { return t.Schema + "." + t.Table }

// Attr identifies a table column on the wire: RowDescription's table OID and
// attribute number.
type Attr struct {
	TableOID uint32
	AttNum   uint16
}

// Entry is one configured column and what the database says about it.
// Entries are owned by their Catalog and never modified: callers must not
// change them.
type Entry struct {
	Column
	// Resolved says whether the table and column exist; when false,
	// TableOID, AttNum, TypeOID and SQLType are zero.
	Resolved bool
	TableOID uint32 // pg_class.oid
	AttNum   uint16 // pg_attribute.attnum (always > 0 for a user column)
	TypeOID  uint32 // pg_attribute.atttypid
	SQLType  string // format_type(atttypid, atttypmod), e.g. "bytea", "text", "character varying(40)"
}

// Bytea reports whether the column is resolved and has type bytea, the only
// type that can hold envelopes.
func (e *Entry) Bytea() bool { return e.Resolved && e.TypeOID == ByteaOID }

// ByteaOID is the OID of type bytea.
const ByteaOID = 17

// Catalog is an immutable snapshot of one resolution in one database. It is
// safe for concurrent use and valid as long as the caller keeps it; a newer
// snapshot (higher Generation) may replace it in the Resolver at any time.
type Catalog struct {
	generation uint64
	entries    []Entry // in configuration order
	byAttr     map[Attr]*Entry
	byTable    map[TableName][]*Entry
	byBareName map[string][]TableName // table name → schemas that have a configured table of that name
	tableOIDs  map[uint32]TableName
	children   []childAttr // partitions and child tables, in resolveChildren order
}

// newCatalog indexes entries (which it keeps). Problems are not its
// concern: a duplicate Attr keeps the first entry.
func newCatalog(entries []Entry) *Catalog {
	c := &Catalog{
		entries:    entries,
		byAttr:     make(map[Attr]*Entry, len(entries)),
		byTable:    make(map[TableName][]*Entry),
		byBareName: make(map[string][]TableName),
		tableOIDs:  make(map[uint32]TableName),
	}
	for i := range entries {
		e := &entries[i]
		tn := TableName{e.Schema, e.Table}
		if _, seen := c.byTable[tn]; !seen {
			c.byBareName[e.Table] = append(c.byBareName[e.Table], tn)
		}
		c.byTable[tn] = append(c.byTable[tn], e)
		if !e.Resolved {
			continue
		}
		c.tableOIDs[e.TableOID] = tn
		a := Attr{e.TableOID, e.AttNum}
		if _, dup := c.byAttr[a]; !dup {
			c.byAttr[a] = e
		}
	}
	return c
}

// addChildren indexes the attributes of partitions and child tables under
// their ancestor's entry.
func (c *Catalog) addChildren(children []childAttr) {
	c.children = children
	for _, ch := range children {
		e := &c.entries[ch.entry]
		if _, dup := c.byAttr[ch.attr]; !dup {
			c.byAttr[ch.attr] = e
		}
		c.tableOIDs[ch.attr.TableOID] = TableName{e.Schema, e.Table}
	}
}

// Generation numbers snapshots: a Resolver gives every snapshot that differs
// from its predecessor a higher number. A Catalog built by Resolve alone has
// generation 0.
func (c *Catalog) Generation() uint64 { return c.generation }

// Lookup returns the configured column at (tableOID, attnum), as found in a
// RowDescription, or nil. O(1). The attributes of partitions and
// inheritance children of a configured table (at any depth) map to the
// configured column too: a query on a partition reports the partition.
func (c *Catalog) Lookup(tableOID uint32, attnum uint16) *Entry {
	return c.byAttr[Attr{tableOID, attnum}]
}

// KnownTable reports whether tableOID is a resolved table with configured
// columns, or a partition or child table of one. A RowDescription field of type bytea whose table is not known
// (and is not 0) may come from a table created after this snapshot: see
// Resolver.Refresh.
func (c *Catalog) KnownTable(tableOID uint32) bool {
	_, ok := c.tableOIDs[tableOID]
	return ok
}

// Table returns the configured columns of schema.table, resolved or not, in
// configuration order; nil when none is configured.
func (c *Catalog) Table(schema, table string) []*Entry {
	return c.byTable[TableName{schema, table}]
}

// Schemas returns the schemas in which a table named table has configured
// columns (for unqualified names, which the caller resolves through its
// search_path); nil when none.
func (c *Catalog) Schemas(table string) []string {
	tns := c.byBareName[table]
	if len(tns) == 0 {
		return nil
	}
	out := make([]string, len(tns))
	for i, tn := range tns {
		out[i] = tn.Schema
	}
	return out
}

// Entries returns every configured column in configuration order. The
// slice is shared: do not modify it.
func (c *Catalog) Entries() []Entry { return c.entries }

// sameAs reports whether c and o resolved the same columns to the same
// attributes and types.
func (c *Catalog) sameAs(o *Catalog) bool {
	if len(c.entries) != len(o.entries) {
		return false
	}
	for i := range c.entries {
		if c.entries[i] != o.entries[i] {
			return false
		}
	}
	if len(c.children) != len(o.children) {
		return false
	}
	for i := range c.children {
		if c.children[i] != o.children[i] {
			return false
		}
	}
	return true
}

// ProblemKind says what is wrong with a configured column. The zero value
// is invalid.
type ProblemKind int

// Problem kinds. The numbers are stable.
const (
	TableMissing     ProblemKind = 1 // no relation schema.table
	NotATable        ProblemKind = 2 // schema.table is a view, sequence, … (Detail: its kind)
	ColumnMissing    ProblemKind = 3 // the table has no such (undropped) column
	NotBytea         ProblemKind = 4 // the column exists with another type (Detail: that type)
	DuplicateColumns ProblemKind = 5 // resolves to the same attribute as another entry (Detail: its name)
)

// String names the kind.
func (k ProblemKind) String() string {
	switch k {
	case TableMissing:
		return "table missing"
	case NotATable:
		return "not a table"
	case ColumnMissing:
		return "column missing"
	case NotBytea:
		return "not bytea"
	case DuplicateColumns:
		return "duplicate"
	}
	return fmt.Sprintf("ProblemKind(%d)", int(k))
}

// Problem is a mismatch between a configured column and the database.
type Problem struct {
	Kind   ProblemKind
	Column Column
	Index  int    // position of Column in the columns given to Resolve
	Detail string // actual type (NotBytea), relation kind (NotATable), other column (DuplicateColumns)
}

// String is a one-line message naming the column (never a value).
func (p Problem) String() string {
	name := p.Column.QualifiedName()
	switch p.Kind {
	case TableMissing:
		return fmt.Sprintf("%s: table %s.%s does not exist", name, p.Column.Schema, p.Column.Table)
	case NotATable:
		return fmt.Sprintf("%s: %s.%s is a %s, not a table", name, p.Column.Schema, p.Column.Table, p.Detail)
	case ColumnMissing:
		return fmt.Sprintf("%s: table %s.%s has no column %q", name, p.Column.Schema, p.Column.Table, p.Column.Column)
	case NotBytea:
		return fmt.Sprintf("%s: column type is %s, must be bytea to hold ciphertext", name, p.Detail)
	case DuplicateColumns:
		return fmt.Sprintf("%s: configured twice (same column as %s)", name, p.Detail)
	}
	return fmt.Sprintf("%s: %s %s", name, p.Kind, strings.TrimSpace(p.Detail))
}
