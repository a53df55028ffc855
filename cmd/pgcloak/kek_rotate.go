package main

import (
	"errors"
	"fmt"
	"strings"
)

// kekRotateCmd: pgcloak kek rotate --from NAME --to NAME [--yes] [--json]
//
// Re-wraps every DEK wrapped by KEK --from under KEK --to (both [kek.NAME]
// sections, both usable now) in one all-or-nothing transaction, each new
// wrapping checked by unwrapping it again, and makes --to the KEK of every
// key ring that used --from. Ciphertext in the tables names only key ring
// and version, so no table data changes. Asks for confirmation. Afterwards
// the classifications must name --to in the configuration.
type kekRotateCmd struct {
	From      string `required:"" placeholder:"NAME" help:"KEK that wraps the DEKs now."`
	To        string `required:"" placeholder:"NAME" help:"KEK to wrap them under (create it first: pgcloak kek create NAME)."`
	ActorFlag `embed:""`
	YesFlag   `embed:""`
	JSONFlag  `embed:""`
}

// Help is the detailed help of `pgcloak kek rotate --help`.
func (c *kekRotateCmd) Help() string {
	return `Use it to move to a new HSM key or a new HSM/KMS, or after a suspected KEK compromise. Give the new KEK a new [kek.NAME] section: the name recorded with each key version is how pgcloak finds the KEK that unwraps it. Then set kek = "NEW" in the [classification.*] sections that named the old one; pgcloak keys init and serve refuse a configuration whose KEK differs from the key store's. Destroy the old KEK only once no backup wrapped by it needs to be restored.

` + exitCodesHelp
}

func (c *kekRotateCmd) Run(g *globals) error {
	if c.From == c.To {
		return usageErr(errors.New("--from and --to name the same KEK"))
	}
	cfg, err := g.loadConfig("", false)
	if err != nil {
		return err
	}
	for _, name := range []string{c.From, c.To} {
		if _, ok := cfg.KEKs[name]; !ok {
			return usageErr(fmt.Errorf("no [kek.%s] section in %s", name, cfg.File))
		}
	}
	store, closeStore, err := openCurrentStore(g, cfg, storeOpts{Actor: c.Actor})
	if err != nil {
		return err
	}
	defer closeStore()
	if err := confirm(g, c.Yes, fmt.Sprintf("re-wrap every key version wrapped by KEK %s under KEK %s", c.From, c.To)); err != nil {
		return err
	}
	n, err := store.RewrapAll(g.ctx, c.From, c.To)
	if err != nil {
		return storeErr(err)
	}
	checkpoint(g, store)
	var stale []string // classifications that still name --from
	for _, name := range classificationOrder(cfg) {
		if cl := cfg.Classifications[name]; cl.Encrypted() && cl.KEK == c.From {
			stale = append(stale, name)
		}
	}
	if c.JSON {
		if stale == nil {
			stale = []string{}
		}
		return writeJSON(g, struct {
			From            string   `json:"from"`
			To              string   `json:"to"`
			Rewrapped       int      `json:"rewrapped"`
			UpdateKEKInConf []string `json:"classifications_to_update"`
		}{c.From, c.To, n, stale})
	}
	fmt.Fprintf(g.stdout, "re-wrapped %d key version(s) from KEK %s to KEK %s; key rings that used %s now use %s\n", n, c.From, c.To, c.From, c.To)
	if len(stale) > 0 {
		sections := make([]string, len(stale))
		for i, s := range stale {
			sections[i] = "[classification." + s + "]"
		}
		fmt.Fprintf(g.stdout, "now set kek = %q in %s of %s\n", c.To, strings.Join(sections, ", "), cfg.File)
	}
	return nil
}
