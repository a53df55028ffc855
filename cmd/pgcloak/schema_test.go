package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// schemaConfigHead is the part of the schema tests' configurations that
// the schema verbs ignore (no file is checked, no key store is opened).
const schemaConfigHead = `[upstream]
addr = "127.0.0.1:5432"

[keystore]
dsn = "postgres://pgcloak@127.0.0.1:1/unused"

[kek.dev]
type = "local"
key_file = "dev.key"

[classification.internal]
kek = "dev"
`

// schemaColumn is one [[column]] entry.
func schemaColumn(table, column, class string) string {
	return fmt.Sprintf("\n[[column]]\ntable = '%s'\ncolumn = '%s'\ntype = \"text\"\nclassification = %q\n", table, column, class)
}

func TestSchemaUsage(t *testing.T) {
	t.Setenv("PGCLOAK_SCHEMA_DSN", "")
	os.Unsetenv("PGCLOAK_SCHEMA_DSN")
	cfg := writeFile(t, t.TempDir(), "pgcloak.toml", schemaConfigHead+schemaColumn("people", "email", "internal"))
	for _, verb := range []string{"check", "apply"} {
		code, _, stderr := runCLI(t, "--config", cfg, "schema", verb)
		if code != exitUsage || !strings.Contains(stderr, "--dsn") {
			t.Errorf("schema %s without --dsn: exit %d, stderr %q", verb, code, stderr)
		}
	}
	code, _, stderr := runCLI(t, "--config", cfg, "schema", "check", "--dsn", "postgres://u:secretpw@[::1")
	if code != exitUsage || strings.Contains(stderr, "secretpw") {
		t.Errorf("unparsable DSN: exit %d, stderr %q (must not echo the DSN)", code, stderr)
	}
}

func TestGuardName(t *testing.T) {
	if got := guardName("email"); got != "pgcloak_envelope_email" {
		t.Errorf("guardName(email) = %q", got)
	}
	long := strings.Repeat("é", 31) + "x" // 63 bytes
	other := strings.Repeat("é", 31) + "y"
	a, b := guardName(long), guardName(other)
	if len(a) > 63 || !utf8.ValidString(a) || !strings.HasPrefix(a, "pgcloak_envelope_é") || a == b || a != guardName(long) {
		t.Errorf("long names: %q (%d bytes), %q", a, len(a), b)
	}
}

// schemaEnv is one test database and its connection.
type schemaEnv struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	dsn  string
	conn *pgx.Conn
}

func newSchemaEnv(t *testing.T) *schemaEnv {
	t.Helper()
	c := pgtest.New(t, pgtest.Opts{})
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if err := c.CreateDatabase(ctx, "app", ""); err != nil {
		t.Fatal(err)
	}
	e := &schemaEnv{t: t, ctx: ctx, dir: t.TempDir(), dsn: c.DSN("postgres", "", "app")}
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	e.conn = conn
	// stdin is a pipe, not a terminal: apply needs --yes.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	fmt.Fprintln(w, "yes")
	w.Close()
	withStdin(t, r)
	return e
}

func (e *schemaEnv) exec(sqls ...string) {
	e.t.Helper()
	for _, s := range sqls {
		if _, err := e.conn.Exec(e.ctx, s); err != nil {
			e.t.Fatalf("%s: %v", s, err)
		}
	}
}

// cli runs pgcloak with the configuration columns and --dsn.
func (e *schemaEnv) cli(columns string, args ...string) (int, string, string) {
	e.t.Helper()
	cfg := writeFile(e.t, e.dir, "pgcloak.toml", schemaConfigHead+columns)
	return runCLI(e.t, append([]string{"--config", cfg}, append(args, "--dsn", e.dsn)...)...)
}

// expect runs the CLI and checks the exit code and that stdout matches
// every pattern.
func (e *schemaEnv) expect(code int, columns string, args []string, patterns ...string) string {
	e.t.Helper()
	got, stdout, stderr := e.cli(columns, args...)
	if got != code {
		e.t.Fatalf("pgcloak %v: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", args, got, code, stdout, stderr)
	}
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(stdout) {
			e.t.Errorf("pgcloak %v: stdout does not match %q:\n%s\nstderr:\n%s", args, p, stdout, stderr)
		}
	}
	return stdout
}

func (e *schemaEnv) typeOf(table, column string) string {
	e.t.Helper()
	var typ string
	err := e.conn.QueryRow(e.ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2`,
		table, column).Scan(&typ)
	if err != nil {
		e.t.Fatal(err)
	}
	return typ
}

// insertState runs an INSERT and returns its SQLSTATE ("" on success).
func (e *schemaEnv) insertState(sql string, arg any) string {
	e.t.Helper()
	_, err := e.conn.Exec(e.ctx, sql, arg)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return ""
}

func TestSchemaCheckApply(t *testing.T) {
	e := newSchemaEnv(t)
	if e == nil {
		return
	}
	e.exec(
		`CREATE TABLE people (id int, gone int, email text, name text)`,
		`ALTER TABLE people DROP COLUMN gone`,
		`CREATE SCHEMA "Billing"`,
		`CREATE TABLE "Billing"."Cards" (id int, "PAN" bytea)`,
		`INSERT INTO "Billing"."Cards" VALUES (1, NULL)`,
		`CREATE TABLE filled (ssn text)`,
		`INSERT INTO filled VALUES ('123-45-6789')`,
		`CREATE TABLE raw (v bytea)`,
		`INSERT INTO raw VALUES ('\x0102'), (NULL)`,
	)
	clean := schemaColumn("people", "email", "internal") +
		schemaColumn(`"Billing"."Cards"`, `"PAN"`, "internal") +
		schemaColumn("people", "name", "public") // public: never touched
	full := clean + schemaColumn("filled", "ssn", "internal") + schemaColumn("raw", "v", "internal") +
		schemaColumn("ghost", "x", "internal")

	out := e.expect(exitRuntime, full, []string{"schema", "check"},
		`(?m)^public\.people\.email\s+internal\s+text\s+text\s+missing\s+0\s+not bytea$`,
		`(?m)^Billing\.Cards\.PAN\s+internal\s+text\s+bytea\s+missing\s+0\s+drift$`,
		`(?m)^public\.ghost\.x\s+.*-\s+-\s+table missing$`,
		`public\.people\.email: column type is text, must be bytea`,
		`public\.people\.email: leak guard pgcloak_envelope_email is not installed`,
		`public\.filled\.ssn: 1 non-NULL value\(s\) stored in plaintext`,
		`public\.raw\.v: 1 non-NULL value\(s\) are not envelopes`,
		`table public\.ghost does not exist`,
		`schema check: 5 of 5 encrypted column\(s\) with problems or drift`,
	)
	if strings.Contains(out, "people.name") || strings.Contains(out, "123-45-6789") {
		t.Errorf("check lists a public column or prints a value:\n%s", out)
	}

	// Not a terminal and no --yes: usage error, nothing changed.
	if code, _, stderr := e.cli(full, "schema", "apply"); code != exitUsage || !strings.Contains(stderr, "pass --yes") {
		t.Fatalf("apply without --yes: exit %d, stderr %q", code, stderr)
	}
	if typ := e.typeOf("people", "email"); typ != "text" {
		t.Fatalf("apply without --yes changed people.email to %s", typ)
	}

	// A table locked by someone else: apply gives up after --lock-timeout
	// and changes nothing in it.
	other, err := pgx.Connect(e.ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(context.Background())
	if _, err := other.Exec(e.ctx, `BEGIN; LOCK TABLE people IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := e.cli(full, "schema", "apply", "--yes", "--lock-timeout", "200ms"); code != exitRuntime || !strings.Contains(stderr, "55P03") {
		t.Fatalf("apply on a locked table: exit %d, stderr %q", code, stderr)
	}
	if _, err := other.Exec(e.ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	if typ := e.typeOf("people", "email"); typ != "text" {
		t.Fatalf("apply that timed out changed people.email to %s", typ)
	}
	if code, _, stderr := e.cli(full, "schema", "apply", "--yes", "--lock-timeout=-1s"); code != exitUsage {
		t.Fatalf("negative --lock-timeout: exit %d, stderr %q", code, stderr)
	}

	e.expect(exitRuntime, full, []string{"schema", "apply", "--yes"},
		`refused: public\.filled\.ssn: column type is text and 1 row\(s\) hold a value: converting existing data needs re-encryption`,
		`refused: public\.raw\.v: 1 non-NULL value\(s\) are not envelopes`,
		`refused: public\.ghost\.x: table public\.ghost does not exist`,
		`done: public\.people\.email: convert the empty text column to bytea, install constraint pgcloak_envelope_email`,
		`done: Billing\.Cards\.PAN: install constraint pgcloak_envelope_PAN`,
		`schema apply: 2 column\(s\) changed, 3 refused`,
	)
	if typ := e.typeOf("people", "email"); typ != "bytea" {
		t.Fatalf("people.email is %s after apply", typ)
	}
	if typ := e.typeOf("filled", "ssn"); typ != "text" {
		t.Fatalf("refused column filled.ssn became %s", typ)
	}
	var ssn string
	if err := e.conn.QueryRow(e.ctx, `SELECT ssn FROM filled`).Scan(&ssn); err != nil || ssn != "123-45-6789" {
		t.Fatalf("refused column lost its value: %q %v", ssn, err)
	}

	// The guard: plaintext written around pgcloak is rejected by the server.
	dek := make([]byte, envelope.KeySize)
	if _, err := rand.Read(dek); err != nil {
		t.Fatal(err)
	}
	key, err := envelope.NewKey(7, 1, secret.New(dek))
	if err != nil {
		t.Fatal(err)
	}
	env, err := key.Seal(nil, nil, "public.people.email", []byte("alice@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	header := append([]byte(nil), env[:envelope.MinSize-1]...) // right header, one byte short
	for _, tc := range []struct {
		name  string
		sql   string
		value any
		state string
	}{
		{"plaintext bytes", `INSERT INTO people (id, email) VALUES (1, $1)`, []byte("alice@example.com"), "23514"},
		{"plaintext text cast", `INSERT INTO people (id, email) VALUES (1, convert_to($1, 'UTF8'))`, "alice@example.com", "23514"},
		{"header but too short", `INSERT INTO people (id, email) VALUES (1, $1)`, header, "23514"},
		{"envelope", `INSERT INTO people (id, email) VALUES (1, $1)`, env, ""},
		{"NULL", `INSERT INTO people (id, email) VALUES (2, $1)`, nil, ""},
		{"update to plaintext", `UPDATE "Billing"."Cards" SET "PAN" = $1`, []byte("4111111111111111"), "23514"},
		{"update to envelope", `UPDATE "Billing"."Cards" SET "PAN" = $1`, env, ""},
	} {
		if got := e.insertState(tc.sql, tc.value); got != tc.state {
			t.Errorf("%s: SQLSTATE %q, want %q", tc.name, got, tc.state)
		}
	}

	// Idempotent; check is clean.
	e.expect(exitOK, clean, []string{"schema", "apply", "--yes"}, `nothing to change`)
	e.expect(exitOK, clean, []string{"schema", "check"},
		`(?m)^public\.people\.email\s+internal\s+text\s+bytea\s+installed\s+0\s+ok$`,
		`(?m)^Billing\.Cards\.PAN\s+internal\s+text\s+bytea\s+installed\s+0\s+ok$`,
		`all 2 encrypted column\(s\) are bytea, guarded`)

	// Drift: the guard replaced by a weaker constraint of the same name is
	// reported and replaced; a guard dropped is reported as missing.
	e.exec(`ALTER TABLE "Billing"."Cards" DROP CONSTRAINT "pgcloak_envelope_PAN"`,
		`ALTER TABLE "Billing"."Cards" ADD CONSTRAINT "pgcloak_envelope_PAN" CHECK ("PAN" IS NULL OR length("PAN") > 0)`,
		`ALTER TABLE people DROP CONSTRAINT pgcloak_envelope_email`)
	e.expect(exitRuntime, clean, []string{"schema", "check"},
		`(?m)^Billing\.Cards\.PAN\s+.*\s+different\s+0\s+drift$`,
		`constraint pgcloak_envelope_PAN differs`,
		`public\.people\.email: leak guard pgcloak_envelope_email is not installed`)
	e.expect(exitOK, clean, []string{"schema", "apply", "--yes"},
		`done: Billing\.Cards\.PAN: replace constraint pgcloak_envelope_PAN`,
		`done: public\.people\.email: install constraint`)
	e.expect(exitOK, clean, []string{"schema", "check"}, `all 2 encrypted column\(s\)`)
	if got := e.insertState(`UPDATE "Billing"."Cards" SET "PAN" = $1`, []byte("4111111111111111")); got != "23514" {
		t.Errorf("after replacing the weak constraint: SQLSTATE %q, want 23514", got)
	}
}
