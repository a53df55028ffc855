// Package rewrite decides, without any I/O, what the proxy must do to a SQL
// statement that may touch encrypted columns: which bind parameters and
// which literals to encrypt (or to turn into blind-index lookups), whether
// the statement reads encrypted data, or that the statement must be refused
// because pgcloak cannot make it correct (DESIGN.md §6). The proxy applies
// the Plan; this package never sees a connection, a key or a value other
// than the literals already in the statement text.
//
// # API
//
//   - MentionsConfigured(sql, cat): the fast path. A scan without parsing
//     that never misses a configured table name (it may report false
//     positives); statements for which it is false skip Analyze.
//   - Analyze(sql, cat, searchPath): parses with pg_query (PostgreSQL 17
//     parser; multi-statement texts give one Statement each) and returns a
//     *Plan, a *Refusal (SQLSTATE 0A000: names the column and the
//     construct), or a *ParseError (position only: the parser's message can
//     quote a plaintext literal). The function is called Analyze because
//     Plan is the result type.
//   - Cache: bounded LRU (golang-lru/v2) of Analyze results keyed by text,
//     search_path and Catalog.Generation, with hit/miss counters.
//   - Catalog: declared here, implemented by the caller (catalog.Catalog
//     needs a small adapter); StaticCatalog is an in-memory one.
//
// # Plans
//
// Params are bind parameters ($n, 1-based) that flow into an encrypted
// column; Literals are byte spans of the original text (a literal with its
// casts: '1'::int8, CAST('x' AS text), text 'x', E'…', $$…$$, U&'…', -5)
// that the proxy replaces with encrypted bytea literals; Value holds the
// parsed literal (plaintext: never log it). Kind is KindEncrypt for INSERT
// values, UPDATE SET and ON CONFLICT DO UPDATE SET, and KindBlindIndex for
// col = v and col IN (v, …) on a column with Search; for those,
// BlindColumns lists the column references (spans) that the proxy must
// rewrite into its blind-index comparison. Statement.Decrypts/Reads say
// which encrypted columns a statement returns (results are decrypted by
// RowDescription table OID/attnum, not by this package); Fingerprint
// (pg_query) is set when Decrypts, for the restricted-data audit.
//
// # Supported
//
// INSERT (single and multi-row VALUES, $n, literals, DEFAULT, NULL,
// DEFAULT VALUES, RETURNING, ON CONFLICT (non-encrypted target) DO NOTHING /
// DO UPDATE SET col = EXCLUDED.col | $n | literal), INSERT … SELECT copying
// a column with the same context, UPDATE … SET col = $n | literal | NULL |
// DEFAULT | same-context column (also via FROM), DELETE (USING, RETURNING),
// SELECT of encrypted columns through joins (also aliased joins),
// subqueries in FROM, LATERAL, CTEs (also data-modifying ones with
// RETURNING), SELECT *, t.*, TABLE t, EXPLAIN, DECLARE, CREATE TABLE AS /
// VIEW bodies; col IS [NOT] NULL; count(col); with Search: col = $n|literal
// and col IN ($n, literal, …).
//
// # Refused (fail closed)
//
// Comparisons on an encrypted column (=, IN without Search; <, >, <=, >=,
// <>, NOT IN, BETWEEN, IS DISTINCT FROM, = ANY always), comparisons with
// another column or an expression, ORDER BY / GROUP BY / DISTINCT /
// DISTINCT ON / window PARTITION BY and ORDER BY (also by alias or
// position), LIKE / ILIKE / SIMILAR TO, any function, operator, cast,
// CASE, COALESCE, row or array constructor over the column (except
// count(col) and IS [NOT] NULL), count(DISTINCT col), UNION / INTERSECT /
// EXCEPT outputting an encrypted column (the server reports no table
// origin, so results could not be decrypted), scalar and IN/ANY subqueries
// returning one, whole-row references (SELECT t FROM t), INSERT … SELECT
// or SET copying from a different column or context (or ciphertext into a
// plaintext column), INSERT without a column list into a table with
// encrypted columns (the catalog knows only configured columns, not
// positions), computed values or cast parameters ($1::text) flowing into
// an encrypted column, ON CONFLICT on an encrypted column, multi-column
// SET (a, b) = …, JOIN USING / NATURAL JOIN on encrypted columns, COPY of
// encrypted columns, MERGE on a table with encrypted columns, SQL PREPARE
// of a statement with encrypted parameters, one $n used both encrypted
// and plain (or for two encrypted uses). Any other construct with an
// encrypted column inside is refused under its node name.
//
// # Limits (documented decisions)
//
//   - Name resolution knows only configured columns. An unqualified column
//     that matches an encrypted column of a table in scope is taken to be
//     that column (PostgreSQL would report an ambiguity otherwise); an
//     unqualified table resolves to the first search_path schema with a
//     configured table of that name ("$user", pg_temp, pg_catalog are
//     skipped), so an unconfigured table of the same name earlier on the
//     path is planned as the configured one (the server then rejects the
//     bytea values: fails closed).
//   - Views: the server reports a view's own OID in RowDescription, so a
//     view that exposes encrypted columns must be configured like a table.
//   - Server-side code (DO blocks, function bodies) is not analysed; the
//     CHECK constraint of `pgcloak schema apply` is the guard there.
//     MentionsConfigured still flags such statements.
//   - Literal forms the span finder cannot delimit (interval '1' day) are
//     refused ("literal form").
package rewrite
