package main

import (
	"fmt"
)

func init() {
	register("config", "Inspect the configuration.", func() any { return &configCmd{} })
}

// configCmd groups the configuration verbs.
type configCmd struct {
	Check configCheckCmd `cmd:"" help:"Validate a configuration file and report every problem with its line."`
}

// configCheckCmd: pgcloak config check [FILE]
//
// Exit 0 and a one-line summary on stdout when the file is valid; exit 2
// with one "FILE:LINE: message" line per problem on stderr otherwise.
type configCheckCmd struct {
	File      string `arg:"" optional:"" placeholder:"FILE" help:"File to check (default: --config)."`
	SkipFiles bool   `help:"Do not check that the files it names (certificates, key file, PKCS#11 module) exist, e.g. for a file meant for another machine."`
}

func (c *configCheckCmd) Run(g *globals) error {
	cfg, err := g.loadConfig(c.File, c.SkipFiles)
	if err != nil {
		return err
	}
	encrypted := 0
	for _, col := range cfg.Columns {
		if col.Classification != "public" {
			encrypted++
		}
	}
	fmt.Fprintf(g.stdout, "%s: ok (%d columns, %d encrypted; %d classifications; %d keks)\n",
		cfg.File, len(cfg.Columns), encrypted, len(cfg.Classifications), len(cfg.KEKs))
	return nil
}
