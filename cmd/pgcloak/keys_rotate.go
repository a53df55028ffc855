package main

import (
	"fmt"

	"github.com/pgcloak/pgcloak/keyring"
)

// keysRotateCmd: pgcloak keys rotate RING [--reason TEXT] [--json]
//
// Creates the next version of RING, active, and moves the previous active
// version to decrypt_only (existing ciphertext stays readable). Concurrent
// rotations queue on the ring's row lock: each yields exactly one new
// version.
type keysRotateCmd struct {
	Ring      string `arg:"" help:"Key ring to rotate."`
	Reason    string `help:"Why (recorded in the audit log)." default:"manual rotation"`
	ActorFlag `embed:""`
	JSONFlag  `embed:""`
}

func (c *keysRotateCmd) Run(g *globals) error {
	store, ring, closeStore, err := openRing(g, storeOpts{Actor: c.Actor}, c.Ring)
	if err != nil {
		return err
	}
	defer closeStore()
	v, err := store.Rotate(g.ctx, c.Ring, c.Reason)
	if err != nil {
		return storeErr(err)
	}
	checkpoint(g, store)
	if c.JSON {
		return writeJSON(g, newVersionJSON(v, ring.Classification))
	}
	fmt.Fprintf(g.stdout, "rotated %s: version %d is active\n", v.Keyring, v.Version)
	if v.Version > 1 {
		if prev, err := store.Get(g.ctx, c.Ring, v.Version-1); err == nil && prev.State == keyring.StateDecryptOnly {
			fmt.Fprintf(g.stdout, "version %d is decrypt_only: rows encrypted under it stay readable until re-encrypted\n", prev.Version)
		}
	}
	return nil
}
