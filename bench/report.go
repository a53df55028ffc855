package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Settings are the parameters of a benchmark, recorded with its results.
type Settings struct {
	Rounds    int               `json:"rounds"`
	Duration  time.Duration     `json:"duration_ns"`
	Warmup    time.Duration     `json:"warmup_ns"`
	Scale     int               `json:"scale"`
	Clients   []int             `json:"clients"`
	Threads   int               `json:"threads"`
	Workloads []Workload        `json:"workloads"`
	Targets   []string          `json:"targets"`
	PGConf    map[string]string `json:"pg_conf"`
	// Encryption describes the setup of pgcloak-enc (PgcloakExtra.Description).
	Encryption string `json:"encryption,omitempty"`
	// Rotation is the configuration of the rotation scenario, when it ran.
	Rotation *RotationConfig `json:"rotation,omitempty"`
}

// Report is everything a benchmark produced.
type Report struct {
	Label       string        `json:"label"`
	Started     time.Time     `json:"started"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	CommandLine string        `json:"command_line"`
	Settings    Settings      `json:"settings"`
	Machine     Machine       `json:"machine"`
	Notes       []string      `json:"notes"` // observations worth reading next to the numbers
	Runs        []Measurement `json:"runs"`
	Goals       []Goal        `json:"goals"`
	// EncStats are the counters pgcloak-enc logged when it stopped after
	// the rounds: totals over the load, the warm-up and every run on it.
	EncStats *StoppedStats `json:"enc_stats,omitempty"`
	// Probes are short runs of each pgcloak-enc workload alone, each on a
	// fresh pgcloak-enc, for per-workload counters.
	Probes []Probe `json:"probes,omitempty"`
	// Rotation is what the rotation scenario recorded (the TPS of every
	// second, the events, the re-encryption's report), when it ran.
	Rotation *RotationResult `json:"rotation,omitempty"`
}

// Summary aggregates the report's runs.
func (r *Report) Summary() Summary {
	s := Summarize(r.Runs, workloadNames(r.Settings.Workloads), r.Settings.Clients, r.Settings.Targets)
	for _, w := range r.Settings.Workloads {
		if base, ok := baselineOf(r.Settings.Workloads, w.Name); ok {
			if s.Baselines == nil {
				s.Baselines = map[string]string{}
			}
			s.Baselines[w.Name] = base
		}
	}
	return s
}

func (r *Report) workload(name string) (Workload, bool) {
	for _, w := range r.Settings.Workloads {
		if w.Name == name {
			return w, true
		}
	}
	return Workload{}, false
}

func (r *Report) title(workload string) string {
	for _, w := range r.Settings.Workloads {
		if w.Name == workload {
			return w.Title
		}
	}
	return workload
}

// WriteMarkdown renders the full report.
func (r *Report) WriteMarkdown(w io.Writer) error {
	s := r.Summary()
	var b strings.Builder
	st := r.Settings
	if len(st.Workloads) > 0 {
		fmt.Fprintf(&b, "# pgbench: direct vs PgBouncer vs pgcloak (%s)\n\n", r.Label)
	} else {
		fmt.Fprintf(&b, "# pgbench: key rotation behind live traffic through pgcloak (%s)\n\n", r.Label)
	}
	fmt.Fprintf(&b, "Run %s, took %s.\n\n", r.Started.UTC().Format(time.RFC3339), r.Elapsed.Round(time.Second))
	fmt.Fprintf(&b, "```\n%s\n```\n\n", r.CommandLine)
	if len(st.Workloads) > 0 {
		r.writeResults(&b, s)
	}
	if r.Rotation != nil {
		if len(st.Workloads) > 0 {
			b.WriteString("\n")
		}
		b.WriteString("## Key rotation behind live traffic\n\n")
		r.writeRotation(&b)
	}
	b.WriteString("\n## Setup\n\n")
	r.writeSetup(&b)
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	if len(r.Runs) > 0 {
		b.WriteString("\n## Every run\n\n<details><summary>")
		fmt.Fprintf(&b, "%d runs</summary>\n\n", len(r.Runs))
		r.writeRuns(&b)
		b.WriteString("\n</details>\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeResults renders the results of the workloads: the main table, the
// ratios, the encrypted comparison and the goals.
func (r *Report) writeResults(b *strings.Builder, s Summary) {
	st := r.Settings
	b.WriteString("## Results\n\n")
	fmt.Fprintf(b, "Medians over %d interleaved rounds (every round runs each target once per workload × clients, "+
		"the target order rotating every round). TPS excludes connection time. Latencies come from pgbench's "+
		"per-transaction log (successful transactions). Proxy CPU is user+system time of the proxy process "+
		"(/proc/PID/stat) during the run ÷ transactions processed.\n\n", st.Rounds)
	r.writeTable(b, s)
	b.WriteString("\n")
	r.writeRatios(b, s)
	if len(s.Baselines) > 0 {
		b.WriteString("\n### Encrypted columns\n\n")
		b.WriteString("Each encrypted workload against its baseline: the same pgbench script over a table whose two secret " +
			"columns are plaintext, through the same pgcloak process, run back to back in every round. Added latency and " +
			"CPU are (encrypted − plaintext) ÷ statements per transaction; server CPU is that of every PostgreSQL process during the run.\n\n")
		r.writeEncrypted(b, s)
		r.writeEncStats(b)
	}
	if len(r.Goals) > 0 {
		b.WriteString("\n")
		r.writeGoals(b, s)
	}
}

// WriteTables renders only the result tables (for the terminal).
func (r *Report) WriteTables(w io.Writer) error {
	s := r.Summary()
	var b strings.Builder
	if len(r.Settings.Workloads) > 0 {
		r.writeTable(&b, s)
		b.WriteString("\n")
		r.writeRatios(&b, s)
		if len(s.Baselines) > 0 {
			b.WriteString("\n")
			r.writeEncrypted(&b, s)
			r.writeEncStats(&b)
		}
		if len(r.Goals) > 0 {
			b.WriteString("\n")
			r.writeGoals(&b, s)
		}
	}
	if r.Rotation != nil {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		r.writeRotation(&b)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *Report) writeTable(b *strings.Builder, s Summary) {
	b.WriteString("| workload | clients | target | TPS | TPS min–max | avg latency ms | p99 latency ms | proxy CPU µs/txn | failed | ÷ direct | ÷ pgbouncer |\n")
	b.WriteString("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, c := range s.Cells {
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s–%s | %s | %s | %s | %d | %s | %s |\n",
			r.title(c.Workload), c.Clients, c.Target, fnum(c.TPS, 0), fnum(c.TPSMin, 0), fnum(c.TPSMax, 0),
			fnum(c.LatAvgMs, 3), fnum(c.LatP99Ms, 3), fnum(c.CPUPerTxnUs, 1), c.Failed,
			fratio(s.TPSRatio(c.Workload, c.Clients, c.Target, TargetDirect), c.Target == TargetDirect),
			fratio(s.TPSRatio(c.Workload, c.Clients, c.Target, TargetPgBouncer), c.Target == TargetPgBouncer))
	}
}

func (r *Report) writeRatios(b *strings.Builder, s Summary) {
	has := func(t string) bool { return slices.Contains(r.Settings.Targets, t) }
	if !has(TargetPgcloak) || !(has(TargetDirect) || has(TargetPgBouncer)) {
		return
	}
	var rows []string
	for _, w := range r.Settings.Workloads {
		for _, c := range r.Settings.Clients {
			if _, ok := s.Cell(w.Name, c, TargetPgcloak); !ok {
				continue
			}
			cpu := func(t string) string {
				cell, ok := s.Cell(w.Name, c, t)
				if !ok {
					return "–"
				}
				return fnum(cell.CPUPerTxnUs, 1)
			}
			rows = append(rows, fmt.Sprintf("| %s | %d | %s | %s | %s | %s | %s |\n", w.Title, c,
				fratio(s.TPSRatio(w.Name, c, TargetPgcloak, TargetDirect), false),
				fratio(s.TPSRatio(w.Name, c, TargetPgcloak, TargetPgBouncer), false),
				fratio(s.TPSRatio(w.Name, c, TargetPgBouncer, TargetDirect), false),
				cpu(TargetPgcloak), cpu(TargetPgBouncer)))
		}
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("| workload | clients | pgcloak ÷ direct | pgcloak ÷ pgbouncer | pgbouncer ÷ direct | pgcloak CPU µs/txn | pgbouncer CPU µs/txn |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range rows {
		b.WriteString(row)
	}
}

func (r *Report) writeGoals(b *strings.Builder, s Summary) {
	res := s.Check(r.Goals, r.Settings.Clients)
	if len(res) == 0 {
		return
	}
	b.WriteString("| goal | workload | clients | value | met |\n|---|---|---:|---:|---|\n")
	for _, g := range res {
		var desc, val string
		switch {
		case g.Goal.VsBaseline:
			desc = fmt.Sprintf("%s: TPS ÷ baseline TPS", g.Goal.Num)
			val = fratio(g.Value, false)
		case g.Goal.Den != "":
			desc = fmt.Sprintf("%s ÷ %s TPS", g.Goal.Num, g.Goal.Den)
			val = fratio(g.Value, false)
		default:
			desc = fmt.Sprintf("%s CPU µs/txn", g.Goal.Num)
			val = fnum(g.Value, 1)
		}
		if g.Goal.Label != "" {
			desc = g.Goal.Label
		}
		if g.Goal.AtLeast != 0 {
			desc += fmt.Sprintf(" ≥ %g", g.Goal.AtLeast)
		}
		if g.Goal.AtMost != 0 {
			desc += fmt.Sprintf(" ≤ %g", g.Goal.AtMost)
		}
		met := "no"
		if g.Met {
			met = "yes"
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %s |\n", desc, r.title(g.Workload), g.Clients, val, met)
	}
}

func (r *Report) writeSetup(b *strings.Builder) {
	st, m := r.Settings, r.Machine
	var rows [][2]string
	if len(st.Workloads) > 0 {
		rows = append(rows, [][2]string{
			{"rounds", fmt.Sprint(st.Rounds)},
			{"duration per run", st.Duration.String()},
		}...)
	}
	rows = append(rows, [2]string{"warm-up per target", st.Warmup.String()})
	if len(st.Workloads) > 0 {
		rows = append(rows, [2]string{"pgbench scale", fmt.Sprint(st.Scale)}, [2]string{"clients", joinInts(st.Clients)})
	}
	rows = append(rows, [][2]string{
		{"pgbench threads (-j)", fmt.Sprint(st.Threads)},
		{"targets", strings.Join(st.Targets, ", ")},
		{"PostgreSQL settings", fmtConf(st.PGConf)},
		{"CPUs (nproc)", fmt.Sprint(m.NProc)},
		{"CPU model", m.CPUModel},
		{"memory", m.MemTotal},
		{"kernel", m.Kernel},
		{"PostgreSQL", m.PostgresVersion},
		{"pgbench", m.PgbenchVersion},
		{"PgBouncer", m.PgBouncerVersion},
		{"pgcloak", m.PgcloakVersion},
		{"pgcloak-enc setup", st.Encryption},
		{"Go", m.GoVersion},
		{"git commit", m.GitCommit},
		{"load average at start", m.LoadAvgStart},
		{"load average at end", m.LoadAvgEnd},
	}...)
	b.WriteString("| | |\n|---|---|\n")
	for _, row := range rows {
		if row[1] == "" {
			continue
		}
		fmt.Fprintf(b, "| %s | %s |\n", row[0], strings.ReplaceAll(row[1], "|", `\|`))
	}
	if len(st.Workloads) > 0 {
		b.WriteString("\nWorkloads:\n\n")
	}
	for _, w := range st.Workloads {
		args := strings.Join(w.Args, " ")
		if w.NoVacuum {
			args += " --no-vacuum"
		}
		if w.Script != "" {
			args += " -f <script>"
		}
		fmt.Fprintf(b, "- `%s` (%s): `pgbench %s -c N -j %d -T %d`\n", w.Name, w.Title, args, st.Threads, int(st.Duration.Seconds()))
	}
	// Custom scripts, each once, with the workloads that run it.
	var scripts []string
	users := map[string][]string{}
	for _, w := range st.Workloads {
		if w.Script == "" {
			continue
		}
		if _, ok := users[w.Script]; !ok {
			scripts = append(scripts, w.Script)
		}
		users[w.Script] = append(users[w.Script], "`"+w.Name+"`")
	}
	if rc := st.Rotation; rc != nil && rc.Workload.Script != "" {
		if _, ok := users[rc.Workload.Script]; !ok {
			scripts = append(scripts, rc.Workload.Script)
		}
		users[rc.Workload.Script] = append(users[rc.Workload.Script], "the rotation scenario")
	}
	for _, sc := range scripts {
		fmt.Fprintf(b, "\nScript of %s:\n\n```\n%s```\n", strings.Join(users[sc], ", "), sc)
	}
}

func (r *Report) writeRuns(b *strings.Builder) {
	b.WriteString("| round | pos | workload | clients | target | TPS | avg ms | p99 ms | proxy CPU µs/txn | failed |\n")
	b.WriteString("|---:|---:|---|---:|---|---:|---:|---:|---:|---:|\n")
	for _, x := range r.Runs {
		fmt.Fprintf(b, "| %d | %d | %s | %d | %s | %s | %s | %s | %s | %d |\n", x.Round, x.Position, x.Workload,
			x.Clients, x.Target, fnum(x.TPS, 0), fnum(x.LatAvgMs, 3), fnum(x.LatP99Ms, 3), fnum(x.CPUPerTxnUs(), 1), x.Failed)
	}
}

// fnum formats a number with prec decimals; "–" for NaN.
func fnum(v float64, prec int) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.*f", prec, v)
}

// fratio formats a ratio as "1.23×"; "–" for NaN or when self is true.
func fratio(v float64, self bool) string {
	if self || math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}

func fmtConf(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ", ")
}
