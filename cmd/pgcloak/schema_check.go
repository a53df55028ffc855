package main

import (
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
)

// schemaCheckCmd: pgcloak schema check --dsn DSN
//
// Read-only (one READ ONLY transaction). Prints one row per encrypted
// column, then one line per problem or drift; exit 1 when there is any.
type schemaCheckCmd struct {
	DSNFlag `embed:""`
}

// Help is the detailed help of `pgcloak schema check --help`.
func (c *schemaCheckCmd) Help() string {
	return `For every column of the configuration whose classification encrypts: does the table and column exist in the --dsn database, is it bytea, is the leak guard (CHECK constraint pgcloak_envelope_<column>) installed unchanged, and how many non-NULL values are not envelopes (for a column that is not bytea: every non-NULL value). Counting scans each column once. Changes nothing.

` + schemaExitCodes
}

func (c *schemaCheckCmd) Run(g *globals) error {
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
	tx, err := conn.BeginTx(g.ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("schema check: %w", err)
	}
	defer func() { _ = tx.Rollback(g.ctx) }()
	states, err := inspect(g.ctx, tx, cols)
	if err != nil {
		return fmt.Errorf("schema check: %w", err)
	}
	if len(states) == 0 {
		fmt.Fprintf(g.stdout, "%s configures no encrypted column: nothing to check\n", cfg.File)
		return nil
	}
	tw := newTable(g)
	fmt.Fprintln(tw, "COLUMN\tCLASSIFICATION\tLOGICAL TYPE\tSQL TYPE\tGUARD\tNOT ENVELOPES\tSTATUS")
	var findings []string
	bad := 0
	for _, s := range states {
		e := s.entry
		count := "-"
		if s.nonEnvelopes >= 0 {
			count = strconv.FormatInt(s.nonEnvelopes, 10)
		}
		status := "ok"
		if !s.ok() {
			status = "drift"
			bad++
		}
		if len(s.problems) > 0 {
			status = s.problems[0].Kind.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.QualifiedName(), e.Classification, e.Type, orDash(e.SQLType), s.guard, count, status)
		for _, p := range s.problems {
			findings = append(findings, p.String())
		}
		if !e.Resolved {
			continue
		}
		switch s.guard {
		case guardMissing:
			findings = append(findings, fmt.Sprintf("%s: leak guard %s is not installed (pgcloak schema apply)", e.QualifiedName(), guardName(e.Column.Column)))
		case guardDifferent:
			findings = append(findings, fmt.Sprintf("%s: constraint %s differs from the leak guard pgcloak installs (pgcloak schema apply replaces it)", e.QualifiedName(), guardName(e.Column.Column)))
		}
		if s.nonEnvelopes > 0 {
			what := "non-NULL value(s) are not envelopes (plaintext written around pgcloak?)"
			if !e.Bytea() {
				what = "non-NULL value(s) stored in plaintext"
			}
			findings = append(findings, fmt.Sprintf("%s: %d %s", e.QualifiedName(), s.nonEnvelopes, what))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range findings {
		fmt.Fprintln(g.stdout, f)
	}
	if bad > 0 {
		fmt.Fprintf(g.stdout, "schema check: %d of %d encrypted column(s) with problems or drift\n", bad, len(states))
		return &exitError{code: exitRuntime, err: fmt.Errorf("schema check: %d column(s) with problems or drift", bad), reported: true}
	}
	fmt.Fprintf(g.stdout, "schema check: all %d encrypted column(s) are bytea, guarded and hold only envelopes\n", len(states))
	return nil
}
