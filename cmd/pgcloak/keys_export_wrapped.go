package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// keysExportWrappedCmd: pgcloak keys export-wrapped [RING] [--out FILE]
//
// Writes the wrapped DEKs of RING (default: every ring) with their
// metadata as JSON (format pgcloak-wrapped-deks/v1), for backup. Only
// wrapped keys: restoring them needs the KEK that wrapped them. --out
// creates FILE with mode 0600 and never overwrites; without it the JSON
// goes to stdout. The export is audited. No KEK is opened.
type keysExportWrappedCmd struct {
	Ring      string `arg:"" optional:"" help:"Key ring to export (default: all)."`
	Out       string `placeholder:"FILE" type:"path" help:"Write to FILE (created with mode 0600; an existing file is not overwritten) instead of stdout."`
	ActorFlag `embed:""`
}

func (c *keysExportWrappedCmd) Run(g *globals) error {
	cfg, err := g.loadConfig("", true)
	if err != nil {
		return err
	}
	store, closeStore, err := openCurrentStore(g, cfg, storeOpts{Actor: c.Actor, NoKEKs: true})
	if err != nil {
		return err
	}
	defer closeStore()
	var f *os.File
	if c.Out != "" {
		// Create the file first: a failure leaves no audited export behind.
		f, err = os.OpenFile(c.Out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return usageErr(fmt.Errorf("--out: %s already exists; refusing to overwrite it", c.Out))
		}
		if err != nil {
			return fmt.Errorf("--out: %w", err)
		}
		defer f.Close()
		if err := f.Chmod(0o600); err != nil {
			os.Remove(c.Out)
			return fmt.Errorf("--out: %w", err)
		}
	}
	exp, err := store.ExportWrapped(g.ctx, c.Ring)
	if err != nil {
		if f != nil {
			os.Remove(c.Out)
		}
		return storeErr(err)
	}
	if f == nil {
		return writeJSON(g, exp)
	}
	b, err := json.MarshalIndent(exp, "", "  ")
	if err == nil {
		_, err = f.Write(append(b, '\n'))
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		os.Remove(c.Out)
		return fmt.Errorf("--out %s: %w", c.Out, err)
	}
	versions := 0
	for _, r := range exp.Keyrings {
		versions += len(r.Versions)
	}
	fmt.Fprintf(g.stdout, "exported %d version(s) of %d key ring(s) to %s (wrapped DEKs only, mode 0600)\n", versions, len(exp.Keyrings), c.Out)
	return nil
}
