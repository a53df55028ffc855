package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/reencrypt"
)

func init() {
	register("reencrypt", "Re-encrypt encrypted columns from older key versions to the active one, behind live traffic (resumable).", func() any { return &reencryptCmd{} })
}

// reencryptCmd: pgcloak reencrypt [run flags] | pgcloak reencrypt status.
// The run is the default subcommand, so `pgcloak reencrypt --dsn …` runs.
type reencryptCmd struct {
	Run    reencryptRunCmd    `cmd:"" default:"withargs" help:"Re-encrypt (the default): every encrypted column, or those named by --column."`
	Status reencryptStatusCmd `cmd:"" help:"Show every re-encryption job recorded in the key store."`
}

// Help is the detailed help of `pgcloak reencrypt --help`.
func (c *reencryptCmd) Help() string {
	return `After a rotation, rows keep their old key version until they are rewritten. pgcloak reencrypt rewrites them under the key ring's active version, in primary-key order, in batches of compare-and-swap updates (a concurrent application write is never lost), throttled in rows per second and backing off when the database slows down. Each column is one job in pgcloak.reencrypt_jobs; Ctrl-C leaves it paused and the next run resumes it. Once no row references a version, it can be retired (pgcloak keys set-state RING V retired --dsn …).

` + reencryptExitCodes
}

// exitInterrupted is the exit code of a run stopped by SIGINT or SIGTERM
// (128 + SIGINT, as shells report it): the jobs are paused, rerun to resume.
const exitInterrupted = 130

const reencryptExitCodes = `Exit codes: 0 every selected column is done (or had nothing to do); 1 runtime error (key store, KEK or database unreachable), rows left that could not be re-encrypted (named in the output), or a job taken over by another run; 2 usage or configuration error (no --dsn, unknown --column, no [keystore] dsn); 3 refused: a table without a primary key, a missing key ring, or a job held by another live run (--force takes it over); 130 interrupted (SIGINT/SIGTERM): the jobs are paused, run the same command again to resume.`

// connectAppNamed connects to the application database as connectApp does,
// with application_name set so that the session is easy to find in
// pg_stat_activity. The DSN is never printed.
func connectAppNamed(ctx context.Context, dsn, appName string) (*pgx.Conn, error) {
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, usageErr(errors.New("--dsn: cannot parse the connection string"))
	}
	if _, set := pc.RuntimeParams["application_name"]; !set {
		pc.RuntimeParams["application_name"] = appName
	}
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to the application database %s@%s:%d/%s: %w", pc.User, pc.Host, pc.Port, pc.Database, err)
	}
	return conn, nil
}

// checkDSN is a usage error when dsn does not parse (before any change is
// made).
func checkDSN(dsn string) error {
	if _, err := pgx.ParseConfig(dsn); err != nil {
		return usageErr(errors.New("--dsn: cannot parse the connection string"))
	}
	return nil
}

// selectColumns returns the configured encrypted columns, or those named
// by sel ("schema.table.column", or "table.column" for schema public).
func selectColumns(cfg *config.Config, sel []string) ([]catalog.Column, error) {
	all := encryptedColumns(cfg)
	if len(all) == 0 {
		return nil, usageErr(fmt.Errorf("%s: no column is classified above public: nothing is encrypted", cfg.File))
	}
	if len(sel) == 0 {
		return all, nil
	}
	var out []catalog.Column
	for _, s := range sel {
		name := s
		if strings.Count(s, ".") == 1 {
			name = "public." + s
		}
		i := slices.IndexFunc(all, func(c catalog.Column) bool { return c.QualifiedName() == name })
		if i < 0 {
			names := make([]string, len(all))
			for j, c := range all {
				names[j] = c.QualifiedName()
			}
			return nil, usageErr(fmt.Errorf("--column %s: not an encrypted column of the configuration (%s)", s, strings.Join(names, ", ")))
		}
		if !slices.ContainsFunc(out, func(c catalog.Column) bool { return c.QualifiedName() == name }) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

// runExit maps a finished engine run onto the exit codes: interrupted 130,
// runtime error 1, columns failed or lost 1, refused 3, else 0. what names
// the command for the resume hint.
func runExit(rep *reencrypt.Report, err error, resume string) error {
	switch {
	case errors.Is(err, reencrypt.ErrInterrupted):
		return &exitError{code: exitInterrupted, err: fmt.Errorf("interrupted: the re-encryption job is paused; run %s again to resume", resume)}
	case err != nil:
		return fmt.Errorf("%w (the job is paused; run %s again to resume)", err, resume)
	}
	refused := false
	var failed []string
	for _, c := range rep.Columns {
		switch c.Outcome {
		case reencrypt.OutcomeFailed, reencrypt.OutcomeLost:
			failed = append(failed, c.Plan.Column.QualifiedName()+": "+c.Message)
		case reencrypt.OutcomeRefused:
			refused = true
		}
	}
	switch {
	case len(failed) > 0:
		return &exitError{code: exitRuntime, err: errors.New("not every row was re-encrypted: " + strings.Join(failed, "; ")), reported: false}
	case refused:
		return &exitError{code: exitRefused, err: errors.New("some columns were refused (see above)")}
	}
	return nil
}
