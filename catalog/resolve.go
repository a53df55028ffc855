package catalog

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Querier is the part of a pgx connection (pgx.Conn, pgx.Tx, pgxpool.Pool)
// that Resolve needs.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// resolveSQL looks up every configured (schema, table, column) in one
// round trip. $1, $2, $3 are parallel text arrays; ord is the 1-based index
// into them. A NULL oid means no such relation, a NULL attnum no such
// undropped user column. Names compare exactly (they are catalog names,
// not SQL identifiers), so quoted mixed-case names work unchanged.
const resolveSQL = `SELECT i.ord, c.oid, c.relkind::text, a.attnum, a.atttypid,
       pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS i(nsp, rel, att, ord)
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = i.nsp
  LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = i.rel
  LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = i.att
       AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY i.ord`

// relkinds names pg_class.relkind values for messages.
var relkinds = map[string]string{
	"i": "index", "S": "sequence", "t": "TOAST table", "v": "view", "m": "materialized view",
	"c": "composite type", "f": "foreign table", "I": "partitioned index",
}

// Resolve maps columns onto the current database of conn. Every column gets
// an Entry in the Catalog (in the same order); those that cannot be used
// get a Problem too:
//
//   - TableMissing, NotATable (only ordinary and partitioned tables hold
//     encrypted columns), ColumnMissing: the entry is not resolved;
//   - NotBytea: the entry is resolved (so that its values are recognised in
//     results and never passed off as plaintext) but Entry.Bytea is false;
//   - DuplicateColumns: a later entry for an attribute already resolved is
//     not indexed by attribute.
//
// The returned Catalog has generation 0; a Resolver numbers them. err is
// only for a failed query.
func Resolve(ctx context.Context, conn Querier, columns []Column) (*Catalog, []Problem, error) {
	nsp := make([]string, len(columns))
	rel := make([]string, len(columns))
	att := make([]string, len(columns))
	for i, c := range columns {
		nsp[i], rel[i], att[i] = c.Schema, c.Table, c.Column
	}
	entries := make([]Entry, len(columns))
	for i, c := range columns {
		entries[i] = Entry{Column: c}
	}
	rows, err := conn.Query(ctx, resolveSQL, nsp, rel, att)
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: resolve columns: %w", err)
	}
	var problems []Problem
	seen := make(map[Attr]int, len(columns))
	var (
		ord     int64
		oid     *uint32
		relkind *string
		attnum  *int16
		typoid  *uint32
		sqlType *string
	)
	_, err = pgx.ForEachRow(rows, []any{&ord, &oid, &relkind, &attnum, &typoid, &sqlType}, func() error {
		if ord < 1 || int(ord) > len(entries) {
			return fmt.Errorf("row for column %d of %d", ord, len(entries))
		}
		e := &entries[ord-1]
		switch {
		case oid == nil:
			problems = append(problems, Problem{Kind: TableMissing, Column: e.Column, Index: int(ord - 1)})
			return nil
		case *relkind != "r" && *relkind != "p":
			kind := relkinds[*relkind]
			if kind == "" {
				kind = "relation of kind " + *relkind
			}
			problems = append(problems, Problem{Kind: NotATable, Column: e.Column, Index: int(ord - 1), Detail: kind})
			return nil
		case attnum == nil:
			problems = append(problems, Problem{Kind: ColumnMissing, Column: e.Column, Index: int(ord - 1)})
			return nil
		}
		e.Resolved, e.TableOID, e.AttNum, e.TypeOID, e.SQLType = true, *oid, uint16(*attnum), *typoid, *sqlType
		a := Attr{e.TableOID, e.AttNum}
		if first, dup := seen[a]; dup {
			problems = append(problems, Problem{Kind: DuplicateColumns, Column: e.Column, Index: int(ord - 1), Detail: entries[first].QualifiedName()})
		} else {
			seen[a] = int(ord - 1)
		}
		if e.TypeOID != ByteaOID {
			problems = append(problems, Problem{Kind: NotBytea, Column: e.Column, Index: int(ord - 1), Detail: e.SQLType})
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: resolve columns: %w", err)
	}
	children, childProblems, err := resolveChildren(ctx, conn, entries, seen)
	if err != nil {
		return nil, nil, err
	}
	problems = append(problems, childProblems...)
	cat := newCatalog(entries)
	cat.addChildren(children)
	return cat, problems, nil
}

// childrenSQL finds, for the tables $1, every partition and inheritance
// child at any depth, and in each the (undropped) columns named in $2.
// Children inherit the column's name and type but not its attribute number
// (a partition created on its own and attached later may order its columns
// differently), and a query on a child reports the child's OID in its
// RowDescription.
const childrenSQL = `WITH RECURSIVE tree(root, rel) AS (
    SELECT i.inhparent, i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = ANY($1::oid[])
  UNION
    SELECT t.root, i.inhrelid FROM tree t JOIN pg_catalog.pg_inherits i ON i.inhparent = t.rel
)
SELECT t.root, t.rel, a.attname::text, a.attnum
  FROM tree t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.rel AND a.attnum > 0 AND NOT a.attisdropped
 WHERE a.attname = ANY($2::text[])
 ORDER BY t.rel, a.attnum`

// childAttr maps an attribute of a child table to the index of the
// configured entry of its ancestor.
type childAttr struct {
	attr  Attr
	entry int
}

// resolveChildren maps the columns of partitions and inheritance children
// of the resolved tables to their ancestor's entry. seen holds the
// attributes configured directly; a child attribute among them is a
// DuplicateColumns problem (two contexts for one stored column).
func resolveChildren(ctx context.Context, conn Querier, entries []Entry, seen map[Attr]int) ([]childAttr, []Problem, error) {
	type key struct {
		table  uint32
		column string
	}
	byKey := map[key]int{}
	var tables []uint32
	var names []string
	for i := range entries {
		e := &entries[i]
		if !e.Resolved {
			continue
		}
		k := key{e.TableOID, e.Column.Column}
		if _, ok := byKey[k]; ok {
			continue
		}
		byKey[k] = i
		tables = append(tables, e.TableOID)
		names = append(names, e.Column.Column)
	}
	if len(tables) == 0 {
		return nil, nil, nil
	}
	rows, err := conn.Query(ctx, childrenSQL, tables, names)
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: resolve partitions and child tables: %w", err)
	}
	var (
		children []childAttr
		problems []Problem
		root     uint32
		rel      uint32
		name     string
		attnum   int16
	)
	_, err = pgx.ForEachRow(rows, []any{&root, &rel, &name, &attnum}, func() error {
		i, ok := byKey[key{root, name}]
		if !ok {
			return nil // a column of that name configured on another table
		}
		a := Attr{rel, uint16(attnum)}
		if j, dup := seen[a]; dup {
			problems = append(problems, Problem{Kind: DuplicateColumns, Column: entries[j].Column, Index: j,
				Detail: entries[i].QualifiedName() + ", of which it is a partition or child table"})
			return nil
		}
		children = append(children, childAttr{a, i})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: resolve partitions and child tables: %w", err)
	}
	return children, problems, nil
}
