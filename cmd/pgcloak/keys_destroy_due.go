package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgcloak/pgcloak/keyring"
)

// keysDestroyDueCmd: pgcloak keys destroy-due [--yes] [--json]
//
// Destroys the wrapped DEK of every pending_deletion version whose window
// has ended (crypto-shredding; the version row stays as a tombstone).
// Lists them and asks for confirmation first. Irreversible. Meant to run
// from cron with --yes.
type keysDestroyDueCmd struct {
	ActorFlag `embed:""`
	YesFlag   `embed:""`
	JSONFlag  `embed:""`
}

// Help is the detailed help of `pgcloak keys destroy-due --help`.
func (c *keysDestroyDueCmd) Help() string {
	return `Destruction sets the wrapped DEK to NULL: values encrypted under those versions can never be decrypted again. Copies of the wrapped DEK can outlive it in dead tuples, WAL archives, replicas, key-store backups and export-wrapped files (see docs/keys.md). Run it from cron with --yes; nothing is destroyed before a version's window has ended.

` + exitCodesHelp
}

func (c *keysDestroyDueCmd) Run(g *globals) error {
	cfg, err := g.loadConfig("", false)
	if err != nil {
		return err
	}
	store, closeStore, err := openCurrentStore(g, cfg, storeOpts{Actor: c.Actor})
	if err != nil {
		return err
	}
	defer closeStore()
	due, err := dueVersions(g, store)
	if err != nil {
		return storeErr(err)
	}
	if len(due) == 0 {
		if c.JSON {
			return writeJSON(g, []versionJSON{})
		}
		fmt.Fprintln(g.stdout, "nothing to destroy: no version is past its deletion window")
		return nil
	}
	names := make([]string, len(due))
	for i, v := range due {
		names[i] = fmt.Sprintf("%s version %d (window ended %s)", v.Keyring, v.Version, fmtTime(v.DeletionAfter))
	}
	what := fmt.Sprintf("destroy %d key version(s) for good: %s; values encrypted under them become unreadable",
		len(due), strings.Join(names, ", "))
	if err := confirm(g, c.Yes, what); err != nil {
		return err
	}
	destroyed, err := store.DestroyDue(g.ctx)
	if len(destroyed) > 0 {
		checkpoint(g, store)
	}
	if err != nil {
		for _, v := range destroyed {
			fmt.Fprintf(g.stderr, "pgcloak: destroyed %s version %d before the error\n", v.Keyring, v.Version)
		}
		return storeErr(err)
	}
	rings, err := store.Keyrings(g.ctx)
	if err != nil {
		return storeErr(err)
	}
	class := map[uint32]string{}
	for _, r := range rings {
		class[r.ID] = r.Classification
	}
	if c.JSON {
		out := make([]versionJSON, 0, len(destroyed))
		for _, v := range destroyed {
			out = append(out, newVersionJSON(v, class[v.KeyringID]))
		}
		return writeJSON(g, out)
	}
	for _, v := range destroyed {
		fmt.Fprintf(g.stdout, "destroyed %s version %d (deletion window ended %s)\n",
			v.Keyring, v.Version, fmtTime(v.DeletionAfter))
	}
	if len(destroyed) == 0 {
		fmt.Fprintln(g.stdout, "nothing destroyed: the deletions were cancelled meanwhile")
	}
	return nil
}

// dueVersions lists the pending_deletion versions whose window has ended,
// by the key store's clock (as DestroyDue decides).
func dueVersions(g *globals, store *keyring.Store) ([]keyring.Version, error) {
	var now time.Time
	if err := store.Pool().QueryRow(g.ctx, "SELECT now()").Scan(&now); err != nil {
		return nil, fmt.Errorf("key store clock: %w", err)
	}
	all, err := store.List(g.ctx)
	if err != nil {
		return nil, err
	}
	var due []keyring.Version
	for _, v := range all {
		if v.State == keyring.StatePendingDeletion && !v.DeletionAfter.After(now) {
			due = append(due, v)
		}
	}
	return due, nil
}
