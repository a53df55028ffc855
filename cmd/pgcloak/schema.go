package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/crypto/envelope"
)

func init() {
	register("schema", "Check and prepare the application database's encrypted columns (bytea type, plaintext-leak guard).", func() any { return &schemaCmd{} })
}

// schemaCmd groups the verbs that look at the application database (not
// the key store): schema check and schema apply.
type schemaCmd struct {
	Check schemaCheckCmd `cmd:"" help:"Report, per encrypted column, whether it exists as bytea, whether the leak guard is installed, and values that are not envelopes (read-only)."`
	Apply schemaApplyCmd `cmd:"" help:"Convert empty encrypted columns to bytea and install the CHECK constraint that rejects plaintext."`
}

// Help is the detailed help of `pgcloak schema --help`.
func (c *schemaCmd) Help() string {
	return `Every column with a classification other than public must be bytea in the application database: it holds envelopes (magic C1 0A, version 1). 'schema apply' also installs a CHECK constraint named pgcloak_envelope_<column> that rejects any non-NULL value without the envelope header, so a write that bypasses pgcloak (a direct connection, a function, a trigger) cannot store plaintext.

` + schemaExitCodes
}

const schemaExitCodes = `Exit codes: 0 every encrypted column is bytea, guarded and holds only envelopes (check) or is now (apply); 1 problems or drift found, a change refused, or the database unreachable; 2 usage or configuration error (no --dsn, a DSN that does not parse, apply without --yes on a non-terminal stdin).`

// DSNFlag names the application database.
type DSNFlag struct {
	DSN string `name:"dsn" required:"" env:"PGCLOAK_SCHEMA_DSN" placeholder:"DSN" help:"Application database (libpq URL or key=value string; password from PGPASSWORD or PGPASSFILE). Not the [keystore] database."`
}

// connectApp connects to the application database. A DSN that does not
// parse is a usage error; an unreachable server a runtime error. The DSN
// is never printed (it may hold a password).
func connectApp(g *globals, dsn string) (*pgx.Conn, error) {
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, usageErr(fmt.Errorf("--dsn: cannot parse the connection string"))
	}
	conn, err := pgx.ConnectConfig(g.ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to the application database %s@%s:%d/%s: %w", pc.User, pc.Host, pc.Port, pc.Database, err)
	}
	return conn, nil
}

// encryptedColumns converts the configured columns whose classification
// encrypts into catalog columns, in configuration order.
func encryptedColumns(cfg *config.Config) []catalog.Column {
	var cols []catalog.Column
	for _, c := range cfg.Columns {
		if c.Classification == config.LevelPublic {
			continue
		}
		cols = append(cols, catalog.Column{
			Schema: c.Schema, Table: c.Table, Column: c.Column, Type: c.Type,
			Classification: c.Classification, Search: c.Search, Context: c.Context,
		})
	}
	return cols
}

// Leak guard: a CHECK constraint per encrypted column.
const (
	guardPrefix = "pgcloak_envelope_"
	// guardComment marks a constraint installed by this version of
	// schema apply; a constraint of the right name without it is reported
	// as different and replaced.
	guardComment = "pgcloak plaintext-leak guard v1: non-NULL values must be envelopes"
	maxIdentLen  = 63 // NAMEDATALEN - 1
)

// envelopePrefixHex is the first three bytes of every v1 envelope.
var envelopePrefixHex = hex.EncodeToString([]byte{envelope.Magic0, envelope.Magic1, envelope.Version1})

// guardName is the constraint name for column col: guardPrefix + col, or,
// when that exceeds 63 bytes, guardPrefix + a prefix of col (cut at a
// character boundary) + "_" + 8 hex digits of SHA-256(col), so that long
// names stay distinct and the name is always the same for one column.
func guardName(col string) string {
	if len(guardPrefix)+len(col) <= maxIdentLen {
		return guardPrefix + col
	}
	sum := sha256.Sum256([]byte(col))
	suffix := "_" + hex.EncodeToString(sum[:4])
	keep := maxIdentLen - len(guardPrefix) - len(suffix)
	for keep > 0 && !utf8.RuneStart(col[keep]) {
		keep--
	}
	return guardPrefix + col[:keep] + suffix
}

// envelopePredicate is true for NULL and for values with an envelope
// header of at least the minimal envelope size; quotedCol is the quoted
// column name. E” so that the literal means the same whatever
// standard_conforming_strings says.
func envelopePredicate(quotedCol string) string {
	return fmt.Sprintf(`%[1]s IS NULL OR (length(%[1]s) >= %[2]d AND substring(%[1]s from 1 for 3) = E'\\x%[3]s'::bytea)`,
		quotedCol, envelope.MinSize, envelopePrefixHex)
}

// Guard states.
type guardState int

const (
	guardMissing   guardState = 1
	guardInstalled guardState = 2
	guardDifferent guardState = 3 // a constraint of that name that is not ours, not validated, or on other columns
)

func (s guardState) String() string {
	switch s {
	case guardMissing:
		return "missing"
	case guardInstalled:
		return "installed"
	case guardDifferent:
		return "different"
	}
	return "-"
}

// columnState is what schema check found for one encrypted column.
type columnState struct {
	entry    *catalog.Entry
	problems []catalog.Problem
	guard    guardState // 0 when the column is not resolved
	// nonEnvelopes counts non-NULL values that are not envelopes (for a
	// column that is not bytea: every non-NULL value); -1 when not counted.
	nonEnvelopes int64
}

// ok reports whether the column needs nothing.
func (s columnState) ok() bool {
	return len(s.problems) == 0 && s.guard == guardInstalled && s.nonEnvelopes == 0
}

func quotedTable(e *catalog.Entry) string  { return pgx.Identifier{e.Schema, e.Table}.Sanitize() }
func quotedColumn(e *catalog.Entry) string { return pgx.Identifier{e.Column.Column}.Sanitize() }

// inspect resolves cols in q's database and, for each resolved column,
// reads its guard constraint and counts the values that are not
// envelopes (a full scan of each such column).
func inspect(ctx context.Context, q catalog.Querier, cols []catalog.Column) ([]columnState, error) {
	cat, problems, err := catalog.Resolve(ctx, q, cols)
	if err != nil {
		return nil, err
	}
	entries := cat.Entries()
	states := make([]columnState, len(entries))
	for i := range entries {
		states[i] = columnState{entry: &entries[i], nonEnvelopes: -1}
	}
	for _, p := range problems {
		states[p.Index].problems = append(states[p.Index].problems, p)
	}
	for i := range states {
		s := &states[i]
		if !s.entry.Resolved {
			continue
		}
		if s.guard, err = readGuard(ctx, q, s.entry); err != nil {
			return nil, err
		}
		if s.nonEnvelopes, err = countNonEnvelopes(ctx, q, s.entry); err != nil {
			return nil, err
		}
	}
	return states, nil
}

// guardSQL reads the constraint named like e's guard on e's table.
const guardSQL = `SELECT con.contype::text, con.conkey, con.convalidated,
       pg_catalog.pg_get_constraintdef(con.oid), coalesce(pg_catalog.obj_description(con.oid, 'pg_constraint'), '')
  FROM pg_catalog.pg_constraint con
 WHERE con.conrelid = $1 AND con.conname = $2`

// readGuard says whether e's guard is installed as schema apply installs
// it: a validated CHECK constraint of the guard's name on exactly that
// column, carrying guardComment, whose definition tests the envelope
// prefix and the minimal size.
func readGuard(ctx context.Context, q catalog.Querier, e *catalog.Entry) (guardState, error) {
	var (
		contype, def, comment string
		conkey                []int16
		validated             bool
	)
	err := q.QueryRow(ctx, guardSQL, e.TableOID, guardName(e.Column.Column)).Scan(&contype, &conkey, &validated, &def, &comment)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return guardMissing, nil
	case err != nil:
		return 0, fmt.Errorf("%s: read constraint: %w", e.QualifiedName(), err)
	}
	if contype == "c" && validated && len(conkey) == 1 && conkey[0] == int16(e.AttNum) && comment == guardComment &&
		strings.Contains(def, `'\x`+envelopePrefixHex+`'::bytea`) && strings.Contains(def, fmt.Sprintf(">= %d", envelope.MinSize)) {
		return guardInstalled, nil
	}
	return guardDifferent, nil
}

// countNonEnvelopes counts e's non-NULL values that fail the envelope
// predicate; for a column that is not bytea, every non-NULL value.
func countNonEnvelopes(ctx context.Context, q catalog.Querier, e *catalog.Entry) (int64, error) {
	col := quotedColumn(e)
	where := col + " IS NOT NULL"
	if e.Bytea() {
		where = "NOT (" + envelopePredicate(col) + ")"
	}
	var n int64
	if err := q.QueryRow(ctx, "SELECT count(*) FROM "+quotedTable(e)+" WHERE "+where).Scan(&n); err != nil {
		return 0, fmt.Errorf("%s: count values that are not envelopes: %w", e.QualifiedName(), err)
	}
	return n, nil
}
