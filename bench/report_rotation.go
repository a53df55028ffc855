package bench

import (
	"fmt"
	"math"
	"strings"

	"github.com/pgcloak/pgcloak/reencrypt"
)

// writeRotation renders the rotation scenario: what ran, the TPS of the
// three windows, the dip, the re-encryption's figures, the steps with
// their times and the goals of issue 6.
func (r *Report) writeRotation(b *strings.Builder) {
	x := r.Rotation
	a := x.Analysis()
	wl := "`" + x.Workload + "`"
	if rc := r.Settings.Rotation; rc != nil {
		wl = fmt.Sprintf("`%s` (%s: `pgbench %s -f <script>`)", rc.Workload.Name, rc.Workload.Title, strings.Join(rc.Workload.Args, " "))
	}
	ring, from := x.Keyring, x.FromVersion
	fmt.Fprintf(b, "pgbench ran %s with %d clients (-j %d) for %s through a fresh pgcloak-enc, with `--progress 1`. "+
		"From %.0f s on, one after the other: `pgcloak keys rotate %s`, `pgcloak reencrypt --dsn APP_DSN` (default throttle: %d rows/s "+
		"per column, one column after the other) and `pgcloak keys set-state %s %s retired --dsn APP_DSN --yes`. "+
		"`%s` held %d rows: %d that the script reads and writes (the traffic itself rewrites them under the new version within "+
		"seconds of the rotation) and %d that it never touches, added for the re-encryption to do.\n\n",
		wl, x.Clients, x.Threads, x.Duration, x.RotateAt.Seconds(), ring, reencrypt.DefaultRate, ring, versionText(from), EncTable,
		x.TableRows, x.TableRows-int64(x.AddedRows), x.AddedRows)
	fmt.Fprintf(b, "Windows: the one-second progress intervals wholly before the rotation (after the first %.0f s), wholly within "+
		"the re-encryption command, and wholly after the retirement. The dip compares the median TPS during the re-encryption "+
		"with the median of the seconds before and after it together.\n\n", rotationSkip)

	b.WriteString("| | before rotation | during re-encryption | after retirement |\n|---|---:|---:|---:|\n")
	ws := []RotationWindow{a.Before, a.During, a.After}
	row := func(label string, f func(RotationWindow) string) {
		cells := make([]string, len(ws))
		for i, w := range ws {
			cells[i] = f(w)
		}
		fmt.Fprintf(b, "| %s | %s |\n", label, strings.Join(cells, " | "))
	}
	row("window, s since pgbench started", func(w RotationWindow) string { return fnum(w.From, 1) + "–" + fnum(w.To, 1) })
	row("seconds measured", func(w RotationWindow) string { return fmt.Sprint(w.Seconds) })
	row("median TPS", func(w RotationWindow) string { return fnum(w.MedianTPS, 0) })
	row("TPS min–max", func(w RotationWindow) string { return fnum(w.MinTPS, 0) + "–" + fnum(w.MaxTPS, 0) })
	row("median latency ms (per-second averages)", func(w RotationWindow) string { return fnum(w.MedianLatMs, 3) })
	row("failed transactions", func(w RotationWindow) string { return fmt.Sprint(w.Failed) })

	re, skipped, unchanged := x.ReencryptedRows()
	var perCol []string
	for _, c := range x.Columns {
		perCol = append(perCol, fmt.Sprintf("`%s` %d (%s, %d pass(es))", c.Column, c.Reencrypted, c.Outcome, c.Passes))
	}
	versions := "–"
	if x.ToVersion > 0 {
		versions = fmt.Sprintf("%s: %d → %d", ring, x.FromVersion, x.ToVersion)
		if x.eventOK(EventRetire) {
			versions += fmt.Sprintf(", %d retired", x.FromVersion)
		}
	}
	b.WriteString("\n| | |\n|---|---|\n")
	fmt.Fprintf(b, "| TPS dip during re-encryption (1 − %s ÷ %s, the median before and after) | %s |\n",
		fnum(a.During.MedianTPS, 0), fnum(a.OutsideTPS, 0), fpct(a.Dip))
	fmt.Fprintf(b, "| failed transactions, whole run | %d |\n", x.Failed)
	fmt.Fprintf(b, "| clients aborted | %d |\n", x.Aborted)
	fmt.Fprintf(b, "| rows re-encrypted | %d%s |\n", re, parenthesized(strings.Join(perCol, "; ")))
	fmt.Fprintf(b, "| rows skipped by the re-encryption (changed concurrently) / left unchanged | %d / %d |\n", skipped, unchanged)
	fmt.Fprintf(b, "| re-encryption duration (the command's wall time) | %s s |\n", fnum(a.ReencryptSeconds, 1))
	fmt.Fprintf(b, "| key versions | %s |\n", versions)
	fmt.Fprintf(b, "| whole run (pgbench) | %s TPS, %d transactions |\n", fnum(x.TPS, 0), x.Processed)
	if st := x.ProxyStats; st != nil {
		fmt.Fprintf(b, "| pgcloak-enc counters (load, warm-up and run) | %d values encrypted, %d decrypted; %d statements refused, %d decryption failures |\n",
			st.ValuesEncrypted, st.ValuesDecrypted, st.StatementsRefused, st.DecryptFailures)
	}

	b.WriteString("\n| step | command | start s | end s | took s | outcome |\n|---|---|---:|---:|---:|---|\n")
	for _, e := range x.Events {
		outcome := "ok"
		if e.Error != "" {
			first, _, _ := strings.Cut(e.Error, "\n")
			outcome = "failed: " + strings.ReplaceAll(first, "|", `\|`)
		}
		fmt.Fprintf(b, "| %s | `%s` | %.1f | %.1f | %.1f | %s |\n", e.Name, x.command(e.Name), e.Start, e.End, e.Took(), outcome)
	}

	if x.MaxDip > 0 {
		b.WriteString("\n")
		b.WriteString("| goal | value | met |\n|---|---:|---|\n")
		for _, g := range x.Goals() {
			met := "no"
			if g.Met {
				met = "yes"
			}
			fmt.Fprintf(b, "| %s | %s | %s |\n", g.Label, g.Value, met)
		}
	}
}

// RotationGoal is one goal of issue 6, evaluated.
type RotationGoal struct {
	Label string
	Value string
	Met   bool
}

// Goals evaluates the goals of the scenario: the TPS dip during the
// re-encryption at most MaxDip, no failed transaction and no aborted
// client. None when MaxDip is 0.
func (r *RotationResult) Goals() []RotationGoal {
	if r.MaxDip <= 0 {
		return nil
	}
	dip := r.Analysis().Dip
	return []RotationGoal{
		{Label: fmt.Sprintf("TPS dip during re-encryption at the default throttle ≤ %g %%", 100*r.MaxDip),
			Value: fpct(dip), Met: !math.IsNaN(dip) && dip <= r.MaxDip},
		{Label: "failed transactions / aborted clients = 0 / 0",
			Value: fmt.Sprintf("%d / %d", r.Failed, r.Aborted), Met: r.Failed == 0 && r.Aborted == 0 && len(r.Series) > 0},
	}
}

// eventOK reports whether the named event ran without error.
func (r *RotationResult) eventOK(name string) bool {
	e, ok := r.Event(name)
	return ok && e.Error == ""
}

// command is the pgcloak command line of a step, as the report shows it.
func (r *RotationResult) command(event string) string {
	switch event {
	case EventRotate:
		return "pgcloak keys rotate " + r.Keyring
	case EventReencrypt:
		return "pgcloak reencrypt --dsn APP_DSN"
	case EventRetire:
		return fmt.Sprintf("pgcloak keys set-state %s %s retired --dsn APP_DSN --yes", r.Keyring, versionText(r.FromVersion))
	}
	return event
}

// versionText is a version number, or OLD when not known (the rotation
// did not run).
func versionText(v uint32) string {
	if v == 0 {
		return "OLD"
	}
	return fmt.Sprint(v)
}

// parenthesized is " (s)", or "" for an empty s.
func parenthesized(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}
