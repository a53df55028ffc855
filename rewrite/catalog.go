package rewrite

// Column is one configured column as the rewriter sees it. Names are as in
// the system catalog (unquoted identifiers folded to lower case).
type Column struct {
	Schema, Table, Name string
	// Context is the associated-data context bound into the ciphertext;
	// "" means "schema.table.column". Two columns with the same context hold
	// interchangeable ciphertext.
	Context string
	// Encrypted is false for configured columns that are not encrypted
	// (classification public); the rewriter ignores those.
	Encrypted bool
	// Search says the column has an equality blind index.
	Search bool
	// LogicalType is the type the application sees, e.g. "varchar(40)".
	LogicalType string
}

// QualifiedName is "schema.table.column".
func (c Column) QualifiedName() string { return c.Schema + "." + c.Table + "." + c.Name }

// ContextString is Context, or QualifiedName when Context is empty.
func (c Column) ContextString() string {
	if c.Context != "" {
		return c.Context
	}
	return c.QualifiedName()
}

// Catalog is what the rewriter needs to know about configured columns.
// Implementations must be safe for concurrent use and must not change
// their answers without changing Generation.
type Catalog interface {
	// Columns returns the configured columns of schema.table; nil if none.
	Columns(schema, table string) []Column
	// Schemas returns the schemas in which a table named table has
	// configured columns; nil if none.
	Schemas(table string) []string
	// Generation changes whenever any answer changes (plan cache key).
	Generation() uint64
}

// StaticCatalog is an immutable in-memory Catalog, for tests and for
// callers that build the column list once.
type StaticCatalog struct {
	gen     uint64
	byTable map[[2]string][]Column
	schemas map[string][]string
}

var _ Catalog = (*StaticCatalog)(nil)

// NewStaticCatalog indexes cols (copied) under generation gen.
func NewStaticCatalog(gen uint64, cols []Column) *StaticCatalog {
	s := &StaticCatalog{gen: gen, byTable: map[[2]string][]Column{}, schemas: map[string][]string{}}
	for _, c := range cols {
		k := [2]string{c.Schema, c.Table}
		if _, ok := s.byTable[k]; !ok {
			s.schemas[c.Table] = append(s.schemas[c.Table], c.Schema)
		}
		s.byTable[k] = append(s.byTable[k], c)
	}
	return s
}

// Columns implements Catalog.
func (s *StaticCatalog) Columns(schema, table string) []Column {
	return s.byTable[[2]string{schema, table}]
}

// Schemas implements Catalog.
func (s *StaticCatalog) Schemas(table string) []string { return s.schemas[table] }

// Generation implements Catalog.
func (s *StaticCatalog) Generation() uint64 { return s.gen }

// resolveTable returns the schema a table reference names: schema when
// given, else the first search_path schema that has configured columns for
// the table. The catalog knows only configured tables, so an unconfigured
// table of the same name earlier in search_path is not seen: the statement
// is then planned as if it named the configured table (fails closed: the
// server rejects ciphertext for a non-bytea column).
func resolveTable(cat Catalog, searchPath []string, schema, table string) (string, bool) {
	if schema != "" {
		return schema, len(cat.Columns(schema, table)) > 0
	}
	for _, s := range searchPath {
		if s == "$user" || s == "pg_temp" || s == "pg_catalog" {
			continue
		}
		if len(cat.Columns(s, table)) > 0 {
			return s, true
		}
	}
	return "", false
}
