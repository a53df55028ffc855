package main

import (
	"fmt"

	"github.com/pgcloak/pgcloak/keyring"
)

// keysShowCmd: pgcloak keys show RING [VERSION] [--json]
//
// Without VERSION: the key ring and a table of its versions. With VERSION:
// every attribute of that version (never key bytes). Reads metadata only.
type keysShowCmd struct {
	Ring     string `arg:"" help:"Key ring name (e.g. confidential, confidential:search, audit)."`
	Version  uint32 `arg:"" optional:"" help:"Key version (default: the whole ring)."`
	JSONFlag `embed:""`
}

func (c *keysShowCmd) Run(g *globals) error {
	store, ring, closeStore, err := openRing(g, storeOpts{NoKEKs: true}, c.Ring)
	if err != nil {
		return err
	}
	defer closeStore()
	if c.Version != 0 {
		v, err := store.Get(g.ctx, c.Ring, c.Version)
		if err != nil {
			return storeErr(err)
		}
		if c.JSON {
			return writeJSON(g, newVersionJSON(v, ring.Classification))
		}
		return printVersion(g, v, ring)
	}
	versions, err := store.Versions(g.ctx, c.Ring)
	if err != nil {
		return storeErr(err)
	}
	if c.JSON {
		out := struct {
			Keyring  keyringJSON   `json:"keyring"`
			Versions []versionJSON `json:"versions"`
		}{Keyring: newKeyringJSON(ring), Versions: []versionJSON{}}
		for _, v := range versions {
			out.Versions = append(out.Versions, newVersionJSON(v, ring.Classification))
		}
		return writeJSON(g, out)
	}
	tw := newTable(g)
	fmt.Fprintf(tw, "key ring\t%s (id %d)\n", ring.Name, ring.ID)
	fmt.Fprintf(tw, "purpose\t%s\n", ring.Purpose)
	fmt.Fprintf(tw, "classification\t%s\n", orDash(ring.Classification))
	if ring.Environment != "" {
		fmt.Fprintf(tw, "environment\t%s\n", ring.Environment)
	}
	fmt.Fprintf(tw, "kek\t%s\n", ring.KEK)
	fmt.Fprintf(tw, "created\t%s by %s\n", fmtTime(ring.CreatedAt), ring.CreatedBy)
	fmt.Fprintf(tw, "updated\t%s by %s\n", fmtTime(ring.UpdatedAt), ring.UpdatedBy)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout)
	tw = newTable(g)
	fmt.Fprintln(tw, "VERSION\tSTATE\tKEK\tCREATED\tACTIVATED\tSTATE CHANGED\tBY\tENCRYPTIONS\tDELETION AFTER\tREASON")
	for _, v := range versions {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", v.Version, v.State, v.KEK, fmtTime(v.CreatedAt),
			fmtTime(v.ActivatedAt), fmtTime(v.StateChangedAt), v.StateChangedBy, v.Encryptions,
			fmtTime(v.DeletionAfter), orDash(v.StateReason))
	}
	return tw.Flush()
}

// printVersion prints every attribute of one version, one per line.
func printVersion(g *globals, v keyring.Version, ring keyring.Keyring) error {
	tw := newTable(g)
	row := func(k, val string) { fmt.Fprintf(tw, "%s\t%s\n", k, val) }
	row("key ring", fmt.Sprintf("%s (id %d)", v.Keyring, v.KeyringID))
	row("purpose", string(v.Purpose))
	row("classification", orDash(ring.Classification))
	row("version", fmt.Sprint(v.Version))
	row("state", string(v.State))
	if v.PriorState != "" {
		row("prior state", string(v.PriorState))
	}
	row("kek", v.KEK)
	if v.KEKKeyID != "" {
		row("kek key id", v.KEKKeyID)
	}
	row("dek format", v.DEKFormat)
	wrapped := "stored"
	if v.Destroyed {
		wrapped = "destroyed"
	}
	row("wrapped dek", wrapped)
	row("created", fmt.Sprintf("%s by %s", fmtTime(v.CreatedAt), v.CreatedBy))
	row("activated", fmtTime(v.ActivatedAt))
	row("state changed", fmt.Sprintf("%s by %s (database role %s)", fmtTime(v.StateChangedAt), v.StateChangedBy, v.StateChangedRole))
	row("reason", orDash(v.StateReason))
	row("deletion after", fmtTime(v.DeletionAfter))
	row("deleted", fmtTime(v.DeletedAt))
	row("rewrapped", fmtTime(v.RewrappedAt))
	row("encryptions", fmt.Sprintf("%d (approximate)", v.Encryptions))
	return tw.Flush()
}
