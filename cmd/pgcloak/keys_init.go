package main

import (
	"fmt"
	"strings"

	"github.com/pgcloak/pgcloak/keyring"
)

// keysInitCmd: pgcloak keys init [--json] [--actor NAME]
//
// Applies the key store's migrations and creates the first active version
// of every key ring the configuration needs (ensureRings); existing rings
// are left alone. pgcloak serve does the same on start-up.
type keysInitCmd struct {
	ActorFlag `embed:""`
	JSONFlag  `embed:""`
}

// Help is the detailed help of `pgcloak keys init --help`.
func (c *keysInitCmd) Help() string {
	return `Creates schema pgcloak in the [keystore] database (or upgrades it), then for every classification that encrypts its key ring (wrapped by the classification's KEK), a NAME:search key ring when one of its columns has search = "equality", and the audit key ring (wrapped by the strongest KEK, HSM/KMS first). Running it again changes nothing. pgcloak serve does the same on start-up.

` + exitCodesHelp
}

// initRingJSON is one line of `keys init --json`.
type initRingJSON struct {
	keyringJSON
	Status        string `json:"status"`
	ActiveVersion uint32 `json:"active_version"`
}

func (c *keysInitCmd) Run(g *globals) error {
	cfg, err := g.loadConfig("", false)
	if err != nil {
		return err
	}
	store, closeStore, err := openStore(g, cfg, storeOpts{Actor: c.Actor})
	if err != nil {
		return err
	}
	defer closeStore()
	res, err := ensureRings(g.ctx, store, cfg)
	if err != nil {
		return storeErr(fmt.Errorf("keys init: %w", err))
	}
	checkpoint(g, store)
	versions, err := store.List(g.ctx)
	if err != nil {
		return storeErr(err)
	}
	active := map[string]uint32{}
	for _, v := range versions {
		if v.State == keyring.StateActive {
			active[v.Keyring] = v.Version
		}
	}
	if c.JSON {
		out := struct {
			Migrations []int          `json:"migrations_applied"`
			Keyrings   []initRingJSON `json:"keyrings"`
		}{Migrations: res.Migrations, Keyrings: []initRingJSON{}}
		if out.Migrations == nil {
			out.Migrations = []int{}
		}
		for _, r := range res.Rings {
			out.Keyrings = append(out.Keyrings, initRingJSON{newKeyringJSON(r.Ring), r.Status, active[r.Ring.Name]})
		}
		return writeJSON(g, out)
	}
	if len(res.Migrations) > 0 {
		nums := make([]string, len(res.Migrations))
		for i, m := range res.Migrations {
			nums[i] = fmt.Sprint(m)
		}
		fmt.Fprintf(g.stdout, "key store: applied migrations %s\n", strings.Join(nums, ", "))
	} else {
		fmt.Fprintln(g.stdout, "key store: schema up to date")
	}
	if len(res.Rings) == 0 {
		fmt.Fprintf(g.stdout, "no key ring needed: %s has no classification that encrypts and no KEK\n", cfg.File)
		return nil
	}
	tw := newTable(g)
	fmt.Fprintln(tw, "RING\tPURPOSE\tCLASSIFICATION\tKEK\tACTIVE VERSION\tSTATUS")
	count := map[string]int{}
	for _, r := range res.Rings {
		count[r.Status]++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", r.Ring.Name, r.Ring.Purpose, orDash(r.Ring.Classification),
			r.Ring.KEK, active[r.Ring.Name], r.Status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "%d key ring(s) created, %d updated, %d unchanged\n", count["created"], count["updated"], count["exists"])
	return nil
}
