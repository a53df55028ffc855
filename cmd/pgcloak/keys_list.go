package main

import (
	"fmt"
)

// keysListCmd: pgcloak keys list [--json]
//
// One row per key version of every key ring. Reads metadata only: no KEK
// is opened, so it works while the HSM is unreachable.
type keysListCmd struct {
	JSONFlag `embed:""`
}

func (c *keysListCmd) Run(g *globals) error {
	cfg, err := g.loadConfig("", true)
	if err != nil {
		return err
	}
	store, closeStore, err := openCurrentStore(g, cfg, storeOpts{NoKEKs: true})
	if err != nil {
		return err
	}
	defer closeStore()
	rings, err := store.Keyrings(g.ctx)
	if err != nil {
		return storeErr(err)
	}
	class := make(map[uint32]string, len(rings))
	for _, r := range rings {
		class[r.ID] = r.Classification
	}
	versions, err := store.List(g.ctx)
	if err != nil {
		return storeErr(err)
	}
	if c.JSON {
		out := make([]versionJSON, 0, len(versions))
		for _, v := range versions {
			out = append(out, newVersionJSON(v, class[v.KeyringID]))
		}
		return writeJSON(g, out)
	}
	if len(versions) == 0 {
		fmt.Fprintln(g.stdout, "no key rings yet: run pgcloak keys init")
		return nil
	}
	tw := newTable(g)
	fmt.Fprintln(tw, "RING\tPURPOSE\tCLASSIFICATION\tVERSION\tSTATE\tCREATED\tACTIVATED\tENCRYPTIONS\tDELETION AFTER")
	for _, v := range versions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%s\n", v.Keyring, v.Purpose, orDash(class[v.KeyringID]),
			v.Version, v.State, fmtTime(v.CreatedAt), fmtTime(v.ActivatedAt), v.Encryptions, fmtTime(v.DeletionAfter))
	}
	return tw.Flush()
}
