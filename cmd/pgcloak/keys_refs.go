package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/keyring"
	"github.com/pgcloak/pgcloak/reencrypt"
)

// RefsFlags are embedded by the verbs that must not act while rows still
// reference a key version (retiring it, scheduling its deletion).
type RefsFlags struct {
	DSN   string `name:"dsn" env:"PGCLOAK_SCHEMA_DSN" placeholder:"DSN" help:"Application database in which to count the rows that still reference the version (libpq URL or key=value; password from PGPASSWORD or PGPASSFILE). Required unless --force."`
	Force bool   `help:"Proceed although rows still reference the version (they become unreadable), or without counting them when --dsn is not given. Prints a warning; audited as key.forced with the counts."`
}

// refsExitHelp explains the exit codes specific to the reference check.
const refsExitHelp = `Rows referencing the version are counted in every encrypted column of the configuration in the --dsn database (one full scan per column); while any remain the change is refused with exit code 3 and the counts per column. Without --dsn the change is refused with exit code 2 (nothing is assumed); --force proceeds in both cases, loudly, and records a key.forced audit entry with the counts (or "not counted").`

// references is what checkReferences found.
type references struct {
	counts []reencrypt.ColumnCount
	total  int64
}

// overrideOf is the key.forced record of a forced change; r is nil when
// nothing was counted.
func overrideOf(r *references, reason string) keyring.Override {
	o := keyring.Override{Reason: reason}
	if r != nil {
		o.Rows = map[string]int64{}
		for _, c := range r.counts {
			if c.Note == "" {
				o.Rows[c.Column.QualifiedName()] = c.Rows
			}
		}
	}
	return o
}

// countReferences counts, in the application database named by dsn, the
// rows of every encrypted column of cfg whose ciphertext names ring
// version v.
func countReferences(ctx context.Context, cfg *config.Config, dsn string, ring keyring.Keyring, v uint32) (*references, error) {
	conn, err := connectAppNamed(ctx, dsn, "pgcloak keys")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	counts, err := reencrypt.CountReferences(ctx, conn, encryptedColumns(cfg), ring.ID, v)
	if err != nil {
		return nil, err
	}
	r := &references{counts: counts}
	for _, c := range counts {
		r.total += c.Rows
	}
	return r, nil
}

// printReferences lists the counts on stderr.
func printReferences(g *globals, ring string, v uint32, r *references) {
	for _, c := range r.counts {
		switch {
		case c.Note != "":
			fmt.Fprintf(g.stderr, "  %s: not counted (%s)\n", c.Column.QualifiedName(), c.Note)
		default:
			fmt.Fprintf(g.stderr, "  %s: %d row(s) reference %s version %d\n", c.Column.QualifiedName(), c.Rows, ring, v)
		}
	}
}

// checkReferences decides whether `what` (retire, schedule the deletion of)
// may change ring version v: nil forced when no row references it; a
// non-nil forced record when --force overrides rows found or the absence
// of --dsn; an error otherwise (exit 2 without --dsn, exit 3 with rows).
func checkReferences(g *globals, cfg *config.Config, f RefsFlags, ring keyring.Keyring, v uint32, what string) (forced *keyring.Override, err error) {
	name := fmt.Sprintf("%s version %d", ring.Name, v)
	if f.DSN == "" {
		if !f.Force {
			return nil, usageErr(fmt.Errorf("refusing to %s %s without counting the rows that still reference it: pass --dsn (or set PGCLOAK_SCHEMA_DSN) naming the application database, or --force to proceed without counting (audited)", what, name))
		}
		fmt.Fprintf(g.stderr, "pgcloak: WARNING: --force without --dsn: %s %s WITHOUT counting the rows that reference it; any such row becomes unreadable. Recorded in the audit log (key.forced).\n", what, name)
		o := overrideOf(nil, "--force without --dsn: not counted")
		return &o, nil
	}
	if err := checkDSN(f.DSN); err != nil {
		return nil, err
	}
	refs, err := countReferences(g.ctx, cfg, f.DSN, ring, v)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return nil, err
		}
		return nil, fmt.Errorf("count the rows that reference %s: %w", name, err)
	}
	if refs.total == 0 {
		fmt.Fprintf(g.stderr, "no row references %s (%d encrypted column(s) checked)\n", name, len(refs.counts))
		return nil, nil
	}
	printReferences(g, ring.Name, v, refs)
	if !f.Force {
		return nil, &exitError{code: exitRefused, err: fmt.Errorf("refusing to %s %s: %d row(s) still reference it (counts above); re-encrypt them first (pgcloak reencrypt --dsn …), or pass --force to make them unreadable (audited)", what, name, refs.total)}
	}
	final := ""
	if what != "retire" {
		final = " for good once it is destroyed"
	}
	fmt.Fprintf(g.stderr, "pgcloak: WARNING: --force: %s %s although %d row(s) still reference it; they become unreadable%s. Recorded in the audit log (key.forced) with the counts.\n",
		what, name, refs.total, final)
	o := overrideOf(refs, "--force")
	return &o, nil
}
