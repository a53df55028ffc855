package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/catalog"
)

// schemaApplyCmd: pgcloak schema apply --dsn DSN [--yes]
//
// For every encrypted column: convert it to bytea if it is not and holds no
// value, then install the leak guard. Idempotent. One transaction per
// table, which is locked (ACCESS EXCLUSIVE) and re-inspected before any
// change.
type schemaApplyCmd struct {
	DSNFlag     `embed:""`
	YesFlag     `embed:""`
	LockTimeout time.Duration `default:"5s" help:"Give up on a table whose ACCESS EXCLUSIVE lock is not granted within this time (so that apply does not queue every other query on a busy table behind it); 0 waits forever."`
}

// Help is the detailed help of `pgcloak schema apply --help`.
func (c *schemaApplyCmd) Help() string {
	return `For every column of the configuration whose classification encrypts, in the --dsn database:
- a column that is not bytea and holds no non-NULL value is converted: ALTER COLUMN ... TYPE bytea USING NULL. A column that already holds values is refused and left alone: converting existing plaintext needs re-encryption through pgcloak, which a later release adds.
- the leak guard is installed: CONSTRAINT pgcloak_envelope_<column> CHECK (column IS NULL OR (length(column) >= 41 AND substring(column from 1 for 3) = '\xc10a01'::bytea)), so that no write that bypasses pgcloak can store plaintext. A constraint of that name that differs is replaced. Values that are not envelopes make the guard impossible: refused.
Shows the changes and asks for confirmation (--yes when stdin is not a terminal). Running it again changes nothing.

` + schemaExitCodes
}

// Validate is called by kong after parsing.
func (c *schemaApplyCmd) Validate() error {
	if c.LockTimeout < 0 {
		return fmt.Errorf("--lock-timeout: %v is negative", c.LockTimeout)
	}
	return nil
}

// columnAction is what apply does to one column, in this order.
type columnAction struct {
	entry     *catalog.Entry
	convert   bool // ALTER COLUMN … TYPE bytea USING NULL
	dropGuard bool // a constraint of the guard's name exists and differs
	addGuard  bool
}

func (a columnAction) empty() bool { return !a.convert && !a.dropGuard && !a.addGuard }

// describe lists the changes for the confirmation summary.
func (a columnAction) describe() string {
	var parts []string
	if a.convert {
		parts = append(parts, fmt.Sprintf("convert the empty %s column to bytea", a.entry.SQLType))
	}
	if a.dropGuard {
		parts = append(parts, "replace constraint "+guardName(a.entry.Column.Column))
	} else if a.addGuard {
		parts = append(parts, "install constraint "+guardName(a.entry.Column.Column))
	}
	return a.entry.QualifiedName() + ": " + strings.Join(parts, ", ")
}

// planColumn decides what apply does to the column s describes, or why it
// refuses (refusal != "").
func planColumn(s columnState) (a columnAction, refusal string) {
	e := s.entry
	a.entry = e
	for _, p := range s.problems {
		if p.Kind != catalog.NotBytea {
			return a, p.String()
		}
	}
	switch {
	case !e.Bytea() && s.nonEnvelopes > 0:
		return a, fmt.Sprintf("%s: column type is %s and %d row(s) hold a value: converting existing data needs re-encryption through pgcloak (not available yet); left unchanged",
			e.QualifiedName(), e.SQLType, s.nonEnvelopes)
	case !e.Bytea():
		a.convert = true
	case s.nonEnvelopes > 0:
		return a, fmt.Sprintf("%s: %d non-NULL value(s) are not envelopes, so the leak guard cannot be installed; re-encrypt or remove them first", e.QualifiedName(), s.nonEnvelopes)
	}
	a.dropGuard = s.guard == guardDifferent
	a.addGuard = s.guard != guardInstalled || a.convert
	return a, ""
}

// planAll plans every column; refusals are in configuration order.
func planAll(states []columnState) (actions []columnAction, refusals []string) {
	for _, s := range states {
		a, refusal := planColumn(s)
		switch {
		case refusal != "":
			refusals = append(refusals, refusal)
		case !a.empty():
			actions = append(actions, a)
		}
	}
	return actions, refusals
}

func (c *schemaApplyCmd) Run(g *globals) error {
	cfg, err := g.loadConfig("", true)
	if err != nil {
		return err
	}
	cols := encryptedColumns(cfg)
	conn, err := connectApp(g, c.DSN)
	if err != nil {
		return err
	}
	defer conn.Close(g.ctx)
	states, err := inspect(g.ctx, conn, cols)
	if err != nil {
		return fmt.Errorf("schema apply: %w", err)
	}
	actions, refusals := planAll(states)
	for _, r := range refusals {
		fmt.Fprintf(g.stdout, "refused: %s\n", r)
	}
	if len(actions) == 0 {
		return applyResult(g, 0, len(refusals))
	}
	for _, a := range actions {
		fmt.Fprintf(g.stdout, "plan: %s\n", a.describe())
	}
	if err := confirm(g, c.Yes, fmt.Sprintf("change %d column(s) in database %q", len(actions), conn.Config().Database)); err != nil {
		return err
	}
	// One transaction per table, in configuration order.
	var tables []catalog.TableName
	byTable := map[catalog.TableName][]catalog.Column{}
	for _, a := range actions {
		tn := catalog.TableName{Schema: a.entry.Schema, Table: a.entry.Table}
		if _, ok := byTable[tn]; !ok {
			tables = append(tables, tn)
		}
		byTable[tn] = append(byTable[tn], a.entry.Column)
	}
	done := 0
	for _, tn := range tables {
		n, refused, err := applyTable(g, conn, tn, byTable[tn], c.LockTimeout)
		if err != nil {
			return fmt.Errorf("schema apply: %s: %w (nothing changed in this table)", tn, err)
		}
		done += n
		refusals = append(refusals, refused...)
	}
	return applyResult(g, done, len(refusals))
}

// applyResult prints the summary; refusals make exit code 1.
func applyResult(g *globals, changed, refused int) error {
	if changed == 0 && refused == 0 {
		fmt.Fprintln(g.stdout, "schema apply: nothing to change: every encrypted column is bytea and guarded")
		return nil
	}
	fmt.Fprintf(g.stdout, "schema apply: %d column(s) changed, %d refused\n", changed, refused)
	if refused > 0 {
		return &exitError{code: exitRuntime, err: fmt.Errorf("schema apply: %d column(s) refused", refused), reported: true}
	}
	return nil
}

// applyTable changes the columns of one table in one transaction: it takes
// an ACCESS EXCLUSIVE lock first, so that no write slips in between the
// check that a column is empty and its conversion, then inspects the
// columns again and acts on what it finds under the lock.
func applyTable(g *globals, conn *pgx.Conn, tn catalog.TableName, cols []catalog.Column, lockTimeout time.Duration) (changed int, refusals []string, err error) {
	tx, err := conn.Begin(g.ctx)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = tx.Rollback(g.ctx) }()
	if _, err := tx.Exec(g.ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", lockTimeout.Milliseconds())); err != nil {
		return 0, nil, err
	}
	table := pgx.Identifier{tn.Schema, tn.Table}.Sanitize()
	if _, err := tx.Exec(g.ctx, "LOCK TABLE "+table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		return 0, nil, err
	}
	states, err := inspect(g.ctx, tx, cols)
	if err != nil {
		return 0, nil, err
	}
	actions, refusals := planAll(states)
	for _, a := range actions {
		col := quotedColumn(a.entry)
		name := pgx.Identifier{guardName(a.entry.Column.Column)}.Sanitize()
		var stmts []string
		if a.dropGuard {
			stmts = append(stmts, "ALTER TABLE "+table+" DROP CONSTRAINT "+name)
		}
		if a.convert {
			stmts = append(stmts, "ALTER TABLE "+table+" ALTER COLUMN "+col+" TYPE bytea USING NULL")
		}
		if a.addGuard {
			stmts = append(stmts,
				"ALTER TABLE "+table+" ADD CONSTRAINT "+name+" CHECK ("+envelopePredicate(col)+")",
				"COMMENT ON CONSTRAINT "+name+" ON "+table+" IS '"+guardComment+"'")
		}
		for _, s := range stmts {
			if _, err := tx.Exec(g.ctx, s); err != nil {
				return 0, nil, fmt.Errorf("%s: %w", a.entry.QualifiedName(), err)
			}
		}
	}
	if err := tx.Commit(g.ctx); err != nil {
		return 0, nil, err
	}
	for _, a := range actions {
		fmt.Fprintf(g.stdout, "done: %s\n", a.describe())
	}
	return len(actions), refusals, nil
}
