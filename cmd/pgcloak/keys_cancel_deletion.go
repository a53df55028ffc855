package main

import (
	"fmt"
)

// keysCancelDeletionCmd: pgcloak keys cancel-deletion RING VERSION [--reason TEXT] [--json]
//
// Returns a pending_deletion version to the state it had before (retired
// or disabled). Not destructive: no confirmation.
type keysCancelDeletionCmd struct {
	Ring      string `arg:"" help:"Key ring."`
	Version   uint32 `arg:"" help:"Key version (pending deletion)."`
	Reason    string `help:"Why (recorded in the audit log)."`
	ActorFlag `embed:""`
	JSONFlag  `embed:""`
}

func (c *keysCancelDeletionCmd) Run(g *globals) error {
	if err := versionArg(c.Version); err != nil {
		return err
	}
	store, ring, closeStore, err := openRing(g, storeOpts{Actor: c.Actor}, c.Ring)
	if err != nil {
		return err
	}
	defer closeStore()
	v, err := store.CancelDeletion(g.ctx, c.Ring, c.Version, c.Reason)
	if err != nil {
		return storeErr(err)
	}
	checkpoint(g, store)
	if c.JSON {
		return writeJSON(g, newVersionJSON(v, ring.Classification))
	}
	fmt.Fprintf(g.stdout, "deletion cancelled: %s\n", describeVersion(v))
	return nil
}
