package reencrypt

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/envelope"
)

// envelopePrefix is the first three bytes of every v1 envelope: magic and
// format version.
var envelopePrefix = []byte{envelope.Magic0, envelope.Magic1, envelope.Version1}

// be4 is n as 4 bytes, big endian: how the header stores ring ids and
// versions.
func be4(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }

// versionArgs encodes versions for the predicate's ANY($n::bytea[]).
func versionArgs(versions []uint32) [][]byte {
	out := make([][]byte, len(versions))
	for i, v := range versions {
		out[i] = be4(v)
	}
	return out
}

// pkColumn is one primary-key column: its name and its type as
// format_type prints it (quoted and qualified where needed), so that a
// text value can be cast back with ::text::TYPE.
type pkColumn struct {
	Name, Type string
}

// tableRef is one encrypted column and its table's primary key.
type tableRef struct {
	Schema, Table, Column string
	PK                    []pkColumn
}

func (t tableRef) quotedTable() string  { return pgx.Identifier{t.Schema, t.Table}.Sanitize() }
func (t tableRef) quotedColumn() string { return pgx.Identifier{t.Column}.Sanitize() }

// predicate is true for v1 envelopes in column col (already quoted and
// qualified) of the key ring $ringArg whose version is in $versionsArg;
// $prefixArg is envelopePrefix. NULL for NULL values.
func predicate(col string, prefixArg, ringArg, versionsArg int) string {
	return fmt.Sprintf("substring(%[1]s from 1 for 3) = $%[2]d::bytea AND substring(%[1]s from 6 for 4) = $%[3]d::bytea"+
		" AND substring(%[1]s from 10 for 4) = ANY ($%[4]d::bytea[])", col, prefixArg, ringArg, versionsArg)
}

// statements are the SQL texts of one column's job, built once.
type statements struct {
	// batch selects the next rows to re-encrypt and locks them: $1 prefix,
	// $2 ring, $3 versions, $4 limit, $5… the cursor (text, one per
	// primary-key column). batchFirst is the same without a cursor.
	batch, batchFirst string
	// update is the compare-and-swap: $1… one text[] per primary-key
	// column, then the old bytea[] and the new bytea[].
	update string
	// count counts the rows the predicate matches ($1 prefix, $2 ring, $3
	// versions).
	count string
	// versions counts the non-NULL values by (ring, version) header bytes;
	// NULL ring and version for values that are not v1 envelopes ($1
	// prefix).
	versions string
}

// buildStatements builds the statements for t. Identifiers are quoted;
// types come from the catalog (format_type), never from configuration.
func buildStatements(t tableRef) statements {
	tbl, col := t.quotedTable(), "t."+t.quotedColumn()
	keys := make([]string, len(t.PK))
	texts := make([]string, len(t.PK))
	cursor := make([]string, len(t.PK))
	for i, k := range t.PK {
		keys[i] = "t." + pgx.Identifier{k.Name}.Sanitize()
		texts[i] = keys[i] + "::text"
		cursor[i] = fmt.Sprintf("$%d::text::%s", 5+i, k.Type)
	}
	pred := predicate(col, 1, 2, 3)
	sel := "SELECT " + strings.Join(texts, ", ") + ", " + col + " FROM " + tbl + " AS t WHERE " + pred
	tail := " ORDER BY " + strings.Join(keys, ", ") + " LIMIT $4 FOR UPDATE OF t SKIP LOCKED"

	var s statements
	s.batchFirst = sel + tail
	s.batch = sel + " AND (" + strings.Join(keys, ", ") + ") > (" + strings.Join(cursor, ", ") + ")" + tail

	arrays := make([]string, 0, len(t.PK)+2)
	names := make([]string, 0, len(t.PK)+2)
	conds := make([]string, 0, len(t.PK)+1)
	for i, k := range t.PK {
		arrays = append(arrays, fmt.Sprintf("$%d::text[]", i+1))
		names = append(names, fmt.Sprintf("k%d", i+1))
		conds = append(conds, fmt.Sprintf("t.%s = u.k%d::%s", pgx.Identifier{k.Name}.Sanitize(), i+1, k.Type))
	}
	n := len(t.PK)
	arrays = append(arrays, fmt.Sprintf("$%d::bytea[]", n+1), fmt.Sprintf("$%d::bytea[]", n+2))
	names = append(names, "old_value", "new_value")
	conds = append(conds, col+" = u.old_value")
	s.update = "UPDATE " + tbl + " AS t SET " + t.quotedColumn() + " = u.new_value FROM unnest(" + strings.Join(arrays, ", ") +
		") AS u(" + strings.Join(names, ", ") + ") WHERE " + strings.Join(conds, " AND ")

	s.count = "SELECT count(*) FROM " + tbl + " AS t WHERE " + pred
	isEnv := "substring(" + col + " from 1 for 3) = $1::bytea"
	s.versions = "SELECT CASE WHEN " + isEnv + " THEN substring(" + col + " from 6 for 4) END," +
		" CASE WHEN " + isEnv + " THEN substring(" + col + " from 10 for 4) END, count(*)" +
		" FROM " + tbl + " AS t WHERE " + col + " IS NOT NULL GROUP BY 1, 2"
	return s
}

// countStatement is the statement that counts the rows of column col of
// table (schema-qualified, unquoted parts) whose envelope names a ring and
// one of a list of versions ($1 prefix, $2 ring, $3 versions).
func countStatement(schema, table, col string) string {
	return "SELECT count(*) FROM " + pgx.Identifier{schema, table}.Sanitize() + " AS t WHERE " +
		predicate("t."+pgx.Identifier{col}.Sanitize(), 1, 2, 3)
}

// pkSQL lists the primary-key columns of a table (by OID) in key order,
// with their types as format_type prints them.
const pkSQL = `SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
 WHERE i.indrelid = $1 AND i.indisprimary
 ORDER BY pg_catalog.array_position(i.indkey::pg_catalog.int2[], a.attnum)`
