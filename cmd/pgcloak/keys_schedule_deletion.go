package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pgcloak/pgcloak/keyring"
)

// keysScheduleDeletionCmd: pgcloak keys schedule-deletion RING VERSION --in 14d
// [--dsn DSN] [--force] [--reason TEXT] [--yes] [--json]
//
// Moves a retired or disabled version to pending_deletion; `keys
// destroy-due` destroys it once the window (7 to 30 days) has ended,
// unless `keys cancel-deletion` comes first. Counts the rows that still
// reference the version in the --dsn database first and refuses (exit 3)
// while any remain, unless --force. Asks for confirmation. A window
// outside 7–30 days, or a version in another state, is refused with exit
// code 3.
type keysScheduleDeletionCmd struct {
	Ring      string `arg:"" help:"Key ring."`
	Version   uint32 `arg:"" help:"Key version (retired or disabled)."`
	In        string `name:"in" required:"" placeholder:"DURATION" help:"Deletion window, 7d to 30d (e.g. 14d, or 336h)."`
	Reason    string `help:"Why (recorded in the audit log)."`
	RefsFlags `embed:""`
	ActorFlag `embed:""`
	YesFlag   `embed:""`
	JSONFlag  `embed:""`
}

// Help is the detailed help of `pgcloak keys schedule-deletion --help`.
func (c *keysScheduleDeletionCmd) Help() string {
	return `Only a retired or disabled version can be scheduled. During the window the version stays unusable and the deletion can be cancelled (pgcloak keys cancel-deletion); afterwards pgcloak keys destroy-due destroys its wrapped DEK, and every value encrypted under it becomes unreadable for good.

` + refsExitHelp + `

` + exitCodesHelp
}

func (c *keysScheduleDeletionCmd) Run(g *globals) error {
	if err := versionArg(c.Version); err != nil {
		return err
	}
	window, err := parseWindow(c.In)
	if err != nil {
		return usageErr(fmt.Errorf("--in: %w", err))
	}
	if window < keyring.MinDeletionWindow || window > keyring.MaxDeletionWindow {
		return storeErr(fmt.Errorf("--in %s: %w: the window must be 7 to 30 days", c.In, keyring.ErrDeletionWindow))
	}
	store, ring, closeStore, err := openRing(g, storeOpts{Actor: c.Actor}, c.Ring)
	if err != nil {
		return err
	}
	defer closeStore()
	cur, err := store.Get(g.ctx, c.Ring, c.Version)
	if err != nil {
		return storeErr(err)
	}
	var forced *keyring.Override
	if cur.State == keyring.StateRetired || cur.State == keyring.StateDisabled {
		cfg, err := g.loadConfig("", false)
		if err != nil {
			return err
		}
		if forced, err = checkReferences(g, cfg, c.RefsFlags, ring, c.Version, "schedule the deletion of"); err != nil {
			return err
		}
		what := fmt.Sprintf("schedule %s version %d for destruction in %s (cancellable until then); afterwards every value encrypted under it is unreadable", c.Ring, c.Version, fmtWindow(window))
		if err := confirm(g, c.Yes, what); err != nil {
			return err
		}
	}
	var v keyring.Version
	if forced != nil {
		v, err = store.ScheduleDeletionForced(g.ctx, c.Ring, c.Version, window, c.Reason, *forced)
	} else {
		v, err = store.ScheduleDeletion(g.ctx, c.Ring, c.Version, window, c.Reason)
	}
	if err != nil {
		return storeErr(err)
	}
	checkpoint(g, store)
	if c.JSON {
		return writeJSON(g, newVersionJSON(v, ring.Classification))
	}
	fmt.Fprintln(g.stdout, describeVersion(v))
	fmt.Fprintf(g.stdout, "cancel with: pgcloak keys cancel-deletion %s %d\n", v.Keyring, v.Version)
	return nil
}

// parseWindow parses a deletion window: "14d", "14.5d", "14d12h" or any Go
// duration ("336h").
func parseWindow(s string) (time.Duration, error) {
	bad := fmt.Errorf("invalid duration %q (write e.g. 14d or 336h)", s)
	rest := strings.TrimSpace(s)
	var total time.Duration
	if days, after, ok := strings.Cut(rest, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil || n < 0 || n > 3650 || strings.ContainsAny(days, "eEinfINFxX_+-") {
			return 0, bad
		}
		total, rest = time.Duration(n*24*float64(time.Hour)), after
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil || d < 0 {
			return 0, bad
		}
		total += d
	}
	if total <= 0 {
		return 0, errors.Join(bad, errors.New("the window must be positive"))
	}
	return total, nil
}

// fmtWindow prints a window in days when whole.
func fmtWindow(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}
