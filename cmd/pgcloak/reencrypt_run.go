package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgcloak/pgcloak/reencrypt"
)

// reencryptRunCmd: pgcloak reencrypt --dsn DSN [--column C]… [--batch-size N]
// [--rate R] [--dry-run] [--force] [--json]
type reencryptRunCmd struct {
	DSNFlag    `embed:""`
	Column     []string      `name:"column" placeholder:"[SCHEMA.]TABLE.COLUMN" help:"Only this encrypted column (repeatable). Default: every encrypted column of the configuration."`
	BatchSize  int           `name:"batch-size" default:"500" help:"Rows per transaction (1 to 10000)."`
	Rate       float64       `default:"500" help:"At most this many rows per second (0: no limit). The run also backs off while batches take more than 3 times their usual time."`
	DryRun     bool          `name:"dry-run" help:"Only count, per column and key version, the rows that would be re-encrypted; change nothing."`
	Force      bool          `help:"Take over a job held by another run whose heartbeat is still fresh (audited)."`
	StaleAfter time.Duration `name:"stale-after" default:"1m" help:"A job whose heartbeat is older than this is considered abandoned and resumed by this run."`
	ActorFlag  `embed:""`
	JSONFlag   `embed:""`
}

// Help is the detailed help of `pgcloak reencrypt run --help`.
func (c *reencryptRunCmd) Help() string {
	return `For every selected column whose classification encrypts, in the --dsn database: rows whose ciphertext names an older version of the column's key ring (decrypt_only) are decrypted and re-encrypted under the active version. Rows under a retired, pending_deletion, deleted or disabled version are left unchanged and reported (a disabled version is handled by pgcloak keys compromise). Rows that cannot be decrypted are reported by primary key and left unchanged. Tables without a primary key are refused.

On a terminal a progress line shows rows done, rate and ETA; otherwise a line is printed every 10 seconds. Ctrl-C pauses the job; running the same command again resumes it. pgcloak reencrypt status lists the jobs.

` + reencryptExitCodes
}

// Validate is called by kong after parsing.
func (c *reencryptRunCmd) Validate() error {
	switch {
	case c.BatchSize < 1 || c.BatchSize > reencrypt.MaxBatchSize:
		return fmt.Errorf("--batch-size: %d is not between 1 and %d", c.BatchSize, reencrypt.MaxBatchSize)
	case c.Rate < 0:
		return fmt.Errorf("--rate: %v is negative (0 means no limit)", c.Rate)
	case c.StaleAfter < 10*time.Second:
		return fmt.Errorf("--stale-after: %v is shorter than 10s", c.StaleAfter)
	}
	return nil
}

func (c *reencryptRunCmd) Run(g *globals) error {
	cfg, err := g.loadConfig("", c.DryRun)
	if err != nil {
		return err
	}
	cols, err := selectColumns(cfg, c.Column)
	if err != nil {
		return err
	}
	if err := checkDSN(c.DSN); err != nil {
		return err
	}
	log := g.logger(cfg.Log)
	ctx, release := g.shutdownSignals(log, forceExit)
	defer release()
	store, closeStore, err := openCurrentStore(g, cfg, storeOpts{Actor: c.Actor, NoKEKs: c.DryRun})
	if err != nil {
		return err
	}
	defer closeStore()
	conn, err := connectAppNamed(ctx, c.DSN, "pgcloak reencrypt")
	if err != nil {
		return err
	}
	defer conn.Close(g.ctx)

	if c.DryRun {
		plans, err := reencrypt.Plan(ctx, store, conn, cols, nil)
		if err != nil {
			return err
		}
		return printPlans(g, plans, c.JSON)
	}
	rate := c.Rate
	if rate == 0 {
		rate = -1
	}
	view := newProgressView(g, c.JSON)
	eng, err := reencrypt.New(reencrypt.Opts{
		Store: store, DB: conn, Columns: cols, BatchSize: c.BatchSize, Rate: rate, StaleAfter: c.StaleAfter,
		Force: c.Force, Progress: view.update, Log: log,
	})
	if err != nil {
		return usageErr(err)
	}
	rep, runErr := eng.Run(ctx)
	view.done()
	if jobsStarted(rep) {
		checkpoint(g, store)
	}
	if c.JSON {
		if err := writeJSON(g, reportJSON(rep)); err != nil {
			return err
		}
	} else {
		printRunReport(g, rep)
	}
	return runExit(rep, runErr, "pgcloak reencrypt")
}

// jobsStarted reports whether the run wrote job records (and so audit
// entries worth a checkpoint).
func jobsStarted(rep *reencrypt.Report) bool {
	if rep == nil {
		return false
	}
	for _, c := range rep.Columns {
		if c.Job.ID != 0 {
			return true
		}
	}
	return false
}

// printPlans prints what a dry run found.
func printPlans(g *globals, plans []reencrypt.ColumnPlan, asJSON bool) error {
	refused := false
	for _, p := range plans {
		refused = refused || p.Refusal != ""
	}
	if asJSON {
		out := make([]planJSON, 0, len(plans))
		for _, p := range plans {
			out = append(out, newPlanJSON(p))
		}
		if err := writeJSON(g, out); err != nil {
			return err
		}
	} else {
		tw := newTable(g)
		fmt.Fprintln(tw, "COLUMN\tKEY RING\tVERSION\tSTATE\tROWS\tACTION")
		for _, p := range plans {
			name := p.Column.QualifiedName()
			switch {
			case p.Skip != "":
				fmt.Fprintf(tw, "%s\t-\t-\t-\t-\tskipped: %s\n", name, p.Skip)
				continue
			case p.Refusal != "":
				fmt.Fprintf(tw, "%s\t-\t-\t-\t-\trefused: %s\n", name, p.Refusal)
				continue
			case len(p.Versions) == 0 && p.NonEnvelope == 0:
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t0\t(no values; active version %d)\n", name, p.Keyring.Name, p.Active)
			}
			for _, v := range p.Versions {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\n", name, orDash(v.Keyring), v.Version, orDash(string(v.State)), v.Rows, v.Action)
			}
			if p.NonEnvelope > 0 {
				fmt.Fprintf(tw, "%s\t-\t-\t-\t%d\tnot envelopes (left alone; see pgcloak schema check)\n", name, p.NonEnvelope)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		var total int64
		for _, p := range plans {
			total += p.Remaining
		}
		fmt.Fprintf(g.stdout, "%d row(s) would be re-encrypted (dry run: nothing was changed)\n", total)
	}
	if refused {
		return &exitError{code: exitRefused, err: fmt.Errorf("some columns would be refused (see above)")}
	}
	return nil
}

// printRunReport prints one line per column.
func printRunReport(g *globals, rep *reencrypt.Report) {
	if rep == nil {
		return
	}
	for _, c := range rep.Columns {
		name := c.Plan.Column.QualifiedName()
		switch c.Outcome {
		case reencrypt.OutcomeDone:
			fmt.Fprintf(g.stdout, "%s: done, %d row(s) re-encrypted to %s version %d (job %d)\n", name, c.Reencrypted, c.Plan.Keyring.Name, c.Plan.Active, c.Job.ID)
		case reencrypt.OutcomeNothing:
			fmt.Fprintf(g.stdout, "%s: nothing to re-encrypt (%s version %d)\n", name, c.Plan.Keyring.Name, c.Plan.Active)
		case reencrypt.OutcomeNotRun:
			fmt.Fprintf(g.stdout, "%s: not reached\n", name)
		case reencrypt.OutcomePaused:
			why := "interrupted"
			if c.Message != "" {
				why = c.Message
			}
			fmt.Fprintf(g.stdout, "%s: paused after %d of %d row(s) (job %d): %s\n", name, c.Job.RowsDone, max(c.Job.RowsTotal, c.Job.RowsDone), c.Job.ID, why)
		default:
			fmt.Fprintf(g.stdout, "%s: %s: %s\n", name, c.Outcome, c.Message)
		}
		if c.Skipped > 0 {
			fmt.Fprintf(g.stdout, "  %d row(s) changed concurrently and were not overwritten (picked up again if still old)\n", c.Skipped)
		}
		for _, x := range c.Plan.Excluded() {
			hint := ""
			if x.State == "disabled" {
				hint = fmt.Sprintf("; a disabled version is re-encrypted by pgcloak keys compromise %s %d", x.Keyring, x.Version)
			}
			fmt.Fprintf(g.stdout, "  %d row(s) under %s version %d (%s) left unchanged: the key may not be used%s\n", x.Rows, x.Keyring, x.Version, x.State, hint)
		}
		for _, f := range c.Failures {
			fmt.Fprintf(g.stdout, "  row (%s) under key ring %d version %d left unchanged: %s\n", strings.Join(f.PK, ", "), f.KeyringID, f.Version, f.Reason)
		}
		if n := c.Failed - int64(len(c.Failures)); n > 0 {
			fmt.Fprintf(g.stdout, "  … and %d more row(s) left unchanged (see the log)\n", n)
		}
	}
}

// planJSON is a column plan as --dry-run --json prints it.
type planJSON struct {
	Column      string                  `json:"column"`
	Keyring     string                  `json:"keyring,omitempty"`
	Active      uint32                  `json:"active_version,omitempty"`
	FromVersion uint32                  `json:"from_version,omitempty"`
	PKColumns   []string                `json:"primary_key,omitempty"`
	Skip        string                  `json:"skipped,omitempty"`
	Refusal     string                  `json:"refused,omitempty"`
	Versions    []reencrypt.VersionRows `json:"versions"`
	NonEnvelope int64                   `json:"non_envelope_values"`
	Remaining   int64                   `json:"rows_to_reencrypt"`
}

func newPlanJSON(p reencrypt.ColumnPlan) planJSON {
	out := planJSON{Column: p.Column.QualifiedName(), Keyring: p.Keyring.Name, Active: p.Active, FromVersion: p.FromVersion,
		PKColumns: p.PKColumns, Skip: p.Skip, Refusal: p.Refusal, Versions: p.Versions, NonEnvelope: p.NonEnvelope, Remaining: p.Remaining}
	if out.Versions == nil {
		out.Versions = []reencrypt.VersionRows{}
	}
	return out
}

// columnJSON is one column of a run as --json prints it.
type columnJSON struct {
	planJSON
	Outcome     reencrypt.Outcome      `json:"outcome"`
	Message     string                 `json:"message,omitempty"`
	Job         *jobJSON               `json:"job,omitempty"`
	Resumed     bool                   `json:"resumed"`
	Passes      int                    `json:"passes"`
	Reencrypted int64                  `json:"reencrypted"`
	Skipped     int64                  `json:"skipped"`
	Failed      int64                  `json:"left_unchanged"`
	Failures    []reencrypt.RowFailure `json:"unchanged_rows,omitempty"`
}

func reportJSON(rep *reencrypt.Report) []columnJSON {
	out := []columnJSON{}
	if rep == nil {
		return out
	}
	for _, c := range rep.Columns {
		cj := columnJSON{planJSON: newPlanJSON(c.Plan), Outcome: c.Outcome, Message: c.Message, Resumed: c.Resumed,
			Passes: c.Passes, Reencrypted: c.Reencrypted, Skipped: c.Skipped, Failed: c.Failed, Failures: c.Failures}
		if c.Job.ID != 0 {
			j := newJobJSON(c.Job)
			cj.Job = &j
		}
		out = append(out, cj)
	}
	return out
}
