package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgcloak/pgcloak/keyring/audit"
)

// maxTail bounds `audit tail -n`.
const maxTail = 100000

// auditTailCmd: pgcloak audit tail [-n 20] [--json]
//
// Prints the last N entries, oldest first. --json prints a JSON array of
// entries (hashes in hex), the same objects the SIEM sink writes. Reads
// only; no KEK is opened.
type auditTailCmd struct {
	Lines    int `short:"n" name:"lines" default:"20" help:"Number of entries (1 to 100000)."`
	JSONFlag `embed:""`
}

func (c *auditTailCmd) Run(g *globals) error {
	if c.Lines < 1 || c.Lines > maxTail {
		return usageErr(fmt.Errorf("-n: %d is outside 1..%d", c.Lines, maxTail))
	}
	cfg, err := g.loadConfig("", true)
	if err != nil {
		return err
	}
	store, closeStore, err := openCurrentStore(g, cfg, storeOpts{NoKEKs: true})
	if err != nil {
		return err
	}
	defer closeStore()
	entries, err := store.AuditTail(g.ctx, c.Lines)
	if err != nil {
		return storeErr(err)
	}
	if c.JSON {
		if entries == nil {
			entries = []audit.Entry{}
		}
		return writeJSON(g, entries)
	}
	if len(entries) == 0 {
		fmt.Fprintln(g.stdout, "the audit log is empty")
		return nil
	}
	tw := newTable(g)
	fmt.Fprintln(tw, "SEQ\tAT\tACTOR\tDB USER\tEVENT\tKEYRING\tVERSION\tDETAILS")
	for _, e := range entries {
		version := "-"
		if e.Version != 0 {
			version = fmt.Sprint(e.Version)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, fmtTime(e.At), oneLine(e.Actor), oneLine(e.DBUser),
			oneLine(e.Event), orDash(oneLine(e.Keyring)), version, fmtDetails(e.Details))
	}
	return tw.Flush()
}

// fmtDetails prints details as key=value pairs sorted by key, values
// quoted when they contain spaces or control characters.
func fmtDetails(d map[string]string) string {
	if len(d) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		v := d[k]
		if v == "" || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == '"' || r == 0x7f }) {
			v = fmt.Sprintf("%q", v)
		}
		parts[i] = oneLine(k) + "=" + v
	}
	return strings.Join(parts, " ")
}

// oneLine quotes s if it holds a tab, newline or other control character
// that would break the table (the log records what actors sent).
func oneLine(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Sprintf("%q", s)
	}
	return s
}
