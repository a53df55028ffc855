package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/pgcloak/pgcloak/keyring"
	"github.com/pgcloak/pgcloak/keyring/audit"
	"github.com/pgcloak/pgcloak/keys"
	"github.com/pgcloak/pgcloak/reencrypt"
)

// keysCompromiseCmd: pgcloak keys compromise RING VERSION --dsn DSN
// [--deletion-window 7d] [--rate R] [--batch-size N] [--force] [--yes]
//
// The compromise response in one command, resumable: (a) disable the
// version at once (a new active version in the same transaction if it was
// the active one; every proxy stops using it within seconds); (b)
// re-encrypt every row of that version to the active version; (c) schedule
// the version's destruction. Each step is audited; running the command
// again continues where it stopped.
type keysCompromiseCmd struct {
	Ring           string  `arg:"" help:"Key ring (an encryption key ring, e.g. confidential)."`
	Version        uint32  `arg:"" help:"The compromised key version."`
	DSN            string  `name:"dsn" required:"" env:"PGCLOAK_SCHEMA_DSN" placeholder:"DSN" help:"Application database whose rows are re-encrypted (libpq URL or key=value; password from PGPASSWORD or PGPASSFILE)."`
	DeletionWindow string  `name:"deletion-window" default:"7d" placeholder:"DURATION" help:"Destroy the version after this window, 7d to 30d."`
	Reason         string  `default:"key compromise" help:"Why (recorded in the audit log)."`
	Rate           float64 `default:"5000" help:"Re-encrypt at most this many rows per second (0: no limit). Higher than pgcloak reencrypt's default: rows under the disabled version cannot be read until they are re-encrypted."`
	BatchSize      int     `name:"batch-size" default:"500" help:"Rows per transaction (1 to 10000)."`
	Force          bool    `help:"Schedule the deletion even if rows still reference the version after re-encryption (rows that could not be decrypted, tables without a primary key); they become unreadable for good. Audited (key.forced)."`
	ActorFlag      `embed:""`
	YesFlag        `embed:""`
}

// Help is the detailed help of `pgcloak keys compromise --help`.
func (c *keysCompromiseCmd) Help() string {
	return `Steps, each audited (key.compromise, key.state, reencrypt.*, key.disabled_access):

1. Disable the version at once: if it was the active version, a new active version is created in the same transaction; every pgcloak serve drops the key within about a second (NOTIFY; at the latest at its next 30 s poll). Until step 2 reaches a row, reading it through the proxy fails with SQLSTATE 58000.

2. Re-encrypt every row of that version, in every encrypted column of the configuration, to the active version (the disabled key is unwrapped for this only, each time audited). The run waits until proxies can no longer be writing with the version (their 5 s active-version cache) and looks again.

3. Count the rows that still reference the version; none: schedule its destruction after --deletion-window (cancellable: pgcloak keys cancel-deletion). Rows left (values that cannot be decrypted, tables without a primary key) refuse the deletion with exit 3 unless --force.

Interrupted (Ctrl-C) or failed: run the same command again; it continues where it stopped.

Exit codes: 0 all three steps done; 1 runtime error (key store, KEK or database unreachable; the steps done so far stay done), confirmation declined; 2 usage or configuration error (no --dsn, unknown key ring or version, not an encryption key ring, no --yes on a non-terminal stdin); 3 refused: the version was already destroyed, a deletion window outside 7 to 30 days, or rows still reference the version after re-encryption (counts printed; --force to schedule anyway); 130 interrupted during re-encryption (the version stays disabled; rerun to continue).`
}

// Validate is called by kong after parsing.
func (c *keysCompromiseCmd) Validate() error {
	switch {
	case c.BatchSize < 1 || c.BatchSize > reencrypt.MaxBatchSize:
		return fmt.Errorf("--batch-size: %d is not between 1 and %d", c.BatchSize, reencrypt.MaxBatchSize)
	case c.Rate < 0:
		return fmt.Errorf("--rate: %v is negative (0 means no limit)", c.Rate)
	}
	return nil
}

func (c *keysCompromiseCmd) Run(g *globals) error {
	if err := versionArg(c.Version); err != nil {
		return err
	}
	window, err := parseWindow(c.DeletionWindow)
	if err != nil {
		return usageErr(fmt.Errorf("--deletion-window: %w", err))
	}
	if window < keyring.MinDeletionWindow || window > keyring.MaxDeletionWindow {
		return storeErr(fmt.Errorf("--deletion-window %s: %w: the window must be 7 to 30 days", c.DeletionWindow, keyring.ErrDeletionWindow))
	}
	if err := checkDSN(c.DSN); err != nil {
		return err
	}
	cfg, err := g.loadConfig("", false)
	if err != nil {
		return err
	}
	store, ring, closeStore, err := openRing(g, storeOpts{Actor: c.Actor}, c.Ring)
	if err != nil {
		return err
	}
	defer closeStore()
	if ring.Purpose != keyring.PurposeEncryption {
		return usageErr(fmt.Errorf("%s is a %s key ring: keys compromise re-encrypts column values and applies to encryption key rings only (see docs/rotation.md for search and audit keys)", ring.Name, ring.Purpose))
	}
	cur, err := store.Get(g.ctx, c.Ring, c.Version)
	if err != nil {
		return storeErr(err)
	}
	name := fmt.Sprintf("%s version %d", ring.Name, c.Version)
	switch {
	case cur.State == keyring.StateDeleted:
		return &exitError{code: exitRefused, err: fmt.Errorf("%s was destroyed at %s: nothing can be decrypted or re-encrypted under it any more", name, fmtTime(cur.DeletedAt))}
	case cur.State == keyring.StatePendingDeletion && cur.PriorState == keyring.StateDisabled:
		fmt.Fprintf(g.stdout, "%s is already disabled and scheduled for destruction after %s: the compromise response was completed\n", name, fmtTime(cur.DeletionAfter))
		return nil
	}
	resumed := cur.State == keyring.StateDisabled
	what := fmt.Sprintf("respond to a compromise of %s (%s): disable it at once (reads of rows still under it fail with SQLSTATE 58000 until they are re-encrypted), re-encrypt its rows, then schedule its destruction in %s",
		name, cur.State, fmtWindow(window))
	switch {
	case resumed:
		what = fmt.Sprintf("continue the compromise response for %s (already disabled): re-encrypt its rows, then schedule its destruction in %s", name, fmtWindow(window))
	case cur.State == keyring.StateActive:
		what += "; a new active version is created"
	}
	if err := confirm(g, c.Yes, what); err != nil {
		return err
	}
	step := "started"
	if resumed {
		step = "resumed"
	}
	if _, err := store.Audit(g.ctx, audit.Record{Event: audit.EventKeyCompromise, Keyring: ring.Name, Version: c.Version,
		Details: map[string]string{"step": step, "state": string(cur.State), "reason": c.Reason}}); err != nil {
		return storeErr(err)
	}

	// (a) Disable.
	disabledAt := cur.StateChangedAt
	if !resumed {
		dv, newActive, err := store.Disable(g.ctx, c.Ring, c.Version, c.Reason)
		if err != nil {
			return storeErr(err)
		}
		checkpoint(g, store)
		disabledAt = dv.StateChangedAt
		fmt.Fprintf(g.stdout, "1/3 %s disabled (was %s)\n", name, cur.State)
		if newActive != nil {
			fmt.Fprintf(g.stdout, "    %s version %d is now active\n", newActive.Keyring, newActive.Version)
		}
	} else {
		fmt.Fprintf(g.stdout, "1/3 %s was already disabled at %s: continuing\n", name, fmtTime(disabledAt))
	}
	active, err := store.ActiveVersion(g.ctx, ring.Name)
	if err != nil {
		return storeErr(err)
	}

	// (b) Re-encrypt.
	log := g.logger(cfg.Log)
	ctx, release := g.shutdownSignals(log, forceExit)
	defer release()
	conn, err := connectAppNamed(ctx, c.DSN, "pgcloak keys compromise")
	if err != nil {
		return fmt.Errorf("%w (%s stays disabled; run the same command again to re-encrypt and schedule its deletion)", err, name)
	}
	defer conn.Close(g.ctx)
	rate := c.Rate
	if rate == 0 {
		rate = -1
	}
	fmt.Fprintf(g.stdout, "2/3 re-encrypting the rows of %s to version %d\n", name, active.Version)
	view := newProgressView(g, false)
	eng, err := reencrypt.New(reencrypt.Opts{
		Store: store, DB: conn, Columns: encryptedColumns(cfg), BatchSize: c.BatchSize, Rate: rate,
		Compromise:  &reencrypt.Compromise{Keyring: ring.Name, Version: c.Version},
		SettleUntil: disabledAt.Add(keys.DefaultActiveTTL + time.Second),
		Progress:    view.update, Log: log,
	})
	if err != nil {
		return usageErr(err)
	}
	rep, runErr := eng.Run(ctx)
	view.done()
	checkpoint(g, store)
	var reencrypted int64
	for _, col := range rep.Columns {
		reencrypted += col.Reencrypted
		if col.Plan.FromVersion != 0 || col.Outcome == reencrypt.OutcomeRefused {
			printRunReport(g, &reencrypt.Report{Columns: []reencrypt.ColumnResult{col}})
		}
	}
	if runErr != nil {
		return runExit(rep, runErr, fmt.Sprintf("pgcloak keys compromise %s %d", ring.Name, c.Version))
	}

	// (c) Count, then schedule the deletion.
	refs, err := countReferences(g.ctx, cfg, c.DSN, ring, c.Version)
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			return err
		}
		return fmt.Errorf("count the rows that reference %s: %w", name, err)
	}
	var v keyring.Version
	if refs.total > 0 {
		printReferences(g, ring.Name, c.Version, refs)
		if !c.Force {
			return &exitError{code: exitRefused, err: fmt.Errorf("%s is disabled and its rows were re-encrypted where possible, but %d row(s) still reference it (counts above): its deletion is not scheduled; fix them (pgcloak reencrypt status, the log) and run this command again, or pass --force to schedule it anyway (those rows become unreadable for good)", name, refs.total)}
		}
		fmt.Fprintf(g.stderr, "pgcloak: WARNING: --force: scheduling the destruction of %s although %d row(s) still reference it; they become unreadable for good. Recorded in the audit log (key.forced).\n", name, refs.total)
		v, err = store.ScheduleDeletionForced(g.ctx, c.Ring, c.Version, window, c.Reason, overrideOf(refs, "--force (keys compromise)"))
	} else {
		v, err = store.ScheduleDeletion(g.ctx, c.Ring, c.Version, window, c.Reason)
	}
	if err != nil {
		return storeErr(err)
	}
	fmt.Fprintf(g.stdout, "3/3 %s\n", describeVersion(v))
	if _, err := store.Audit(g.ctx, audit.Record{Event: audit.EventKeyCompromise, Keyring: ring.Name, Version: c.Version,
		Details: map[string]string{"step": "completed", "new_active": strconv.FormatUint(uint64(active.Version), 10),
			"rows_reencrypted": strconv.FormatInt(reencrypted, 10), "rows_left": strconv.FormatInt(refs.total, 10),
			"deletion_after": v.DeletionAfter.UTC().Format(time.RFC3339)}}); err != nil {
		return storeErr(err)
	}
	checkpoint(g, store)
	fmt.Fprintf(g.stdout, "compromise response for %s complete: %d row(s) re-encrypted to version %d; cancel the destruction with: pgcloak keys cancel-deletion %s %d\n",
		name, reencrypted, active.Version, ring.Name, c.Version)
	return nil
}
