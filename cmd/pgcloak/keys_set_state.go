package main

import (
	"fmt"

	"github.com/pgcloak/pgcloak/keyring"
)

// keysSetStateCmd: pgcloak keys set-state RING VERSION STATE [--dsn DSN]
// [--force] [--reason TEXT] [--yes] [--json]
//
// STATE is decrypt_only (re-enable a retired or disabled version), retired
// (no use at all) or disabled (compromise: blocks every use at once; the
// active version is replaced by a new one in the same transaction).
// Retiring or disabling asks for confirmation. Retiring first counts the
// rows that still reference the version in the --dsn database and refuses
// (exit 3) while any remain, unless --force. Other transitions have their
// own verbs (rotate, schedule-deletion, cancel-deletion, destroy-due); the
// lifecycle refuses the rest with exit code 3.
type keysSetStateCmd struct {
	Ring      string `arg:"" help:"Key ring."`
	Version   uint32 `arg:"" help:"Key version."`
	State     string `arg:"" help:"New state: decrypt_only, retired or disabled."`
	Reason    string `help:"Why (recorded in the audit log)."`
	RefsFlags `embed:""`
	ActorFlag `embed:""`
	YesFlag   `embed:""`
	JSONFlag  `embed:""`
}

// Help is the detailed help of `pgcloak keys set-state --help`.
func (c *keysSetStateCmd) Help() string {
	return `decrypt_only re-enables a retired or disabled version for reading; retired stops every use of a version (after its rows were re-encrypted: pgcloak reencrypt); disabled blocks a compromised version at once, and if it was the active one a new active version is created in the same transaction (for the whole compromise response see pgcloak keys compromise). Retiring and disabling ask for confirmation (--yes to skip). The active version leaves active only by rotation; pending deletion and deletion have their own verbs.

Retiring: ` + refsExitHelp + `

` + exitCodesHelp
}

func (c *keysSetStateCmd) Run(g *globals) error {
	if err := versionArg(c.Version); err != nil {
		return err
	}
	to, err := keyring.ParseState(c.State)
	if err != nil {
		return usageErr(err)
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
	// Ask only for a change the lifecycle can make: a refusal is reported
	// without a prompt.
	allowed := keyring.CanTransition(cur.State, to) || (to == keyring.StateDisabled && cur.State == keyring.StateActive)
	var forced *keyring.Override
	if allowed && to == keyring.StateRetired {
		cfg, err := g.loadConfig("", false)
		if err != nil {
			return err
		}
		if forced, err = checkReferences(g, cfg, c.RefsFlags, ring, c.Version, "retire"); err != nil {
			return err
		}
	}
	if allowed && (to == keyring.StateRetired || to == keyring.StateDisabled) {
		what := fmt.Sprintf("set %s version %d (%s) to %s: every use of this version stops at once", c.Ring, c.Version, cur.State, to)
		if cur.State == keyring.StateActive {
			what += ", and a new active version is created"
		}
		if err := confirm(g, c.Yes, what); err != nil {
			return err
		}
	}
	var (
		v         keyring.Version
		newActive *keyring.Version
	)
	switch {
	case to == keyring.StateDisabled:
		v, newActive, err = store.Disable(g.ctx, c.Ring, c.Version, c.Reason)
	case forced != nil:
		v, err = store.RetireForced(g.ctx, c.Ring, c.Version, c.Reason, *forced)
	default:
		v, err = store.SetState(g.ctx, c.Ring, c.Version, to, c.Reason)
	}
	if err != nil {
		return storeErr(err)
	}
	if v.State == cur.State {
		if c.JSON {
			return writeJSON(g, newVersionJSON(v, ring.Classification))
		}
		fmt.Fprintf(g.stdout, "%s version %d is already %s\n", v.Keyring, v.Version, v.State)
		return nil
	}
	checkpoint(g, store)
	if c.JSON {
		out := struct {
			versionJSON
			PreviousState string       `json:"previous_state"`
			NewActive     *versionJSON `json:"new_active,omitempty"`
		}{versionJSON: newVersionJSON(v, ring.Classification), PreviousState: string(cur.State)}
		if newActive != nil {
			na := newVersionJSON(*newActive, ring.Classification)
			out.NewActive = &na
		}
		return writeJSON(g, out)
	}
	fmt.Fprintf(g.stdout, "%s (was %s)\n", describeVersion(v), cur.State)
	if newActive != nil {
		fmt.Fprintf(g.stdout, "%s version %d is now active\n", newActive.Keyring, newActive.Version)
	}
	return nil
}
