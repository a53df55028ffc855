package bench

import (
	"fmt"
	"math"
	"strings"
)

// writeEncrypted renders one row per workload with a baseline × target ×
// clients: both TPS, their ratio, and the latency and proxy CPU the
// encrypted columns add per statement.
func (r *Report) writeEncrypted(b *strings.Builder, s Summary) {
	var rows []string
	for _, w := range r.Settings.Workloads {
		base, ok := s.Baselines[w.Name]
		if !ok {
			continue
		}
		for _, t := range r.Settings.Targets {
			for _, c := range r.Settings.Clients {
				enc, ok1 := s.Cell(w.Name, c, t)
				plain, ok2 := s.Cell(base, c, t)
				if !ok1 || !ok2 {
					continue
				}
				rows = append(rows, fmt.Sprintf("| %s | %d | %s | %s | %s | %s | %s / %s | %s | %s / %s | %s / %s | %s / %s |\n",
					w.Title, c, t, fnum(enc.TPS, 0), fnum(plain.TPS, 0), fratio(s.BaselineRatio(w.Name, c, t), false),
					fnum(enc.LatAvgMs, 3), fnum(plain.LatAvgMs, 3), fnum(perStatement(enc.LatAvgMs*1000, plain.LatAvgMs*1000, w.Statements), 1),
					fnum(enc.CPUPerTxnUs, 1), fnum(plain.CPUPerTxnUs, 1), fnum(enc.ServerCPUPerTxnUs, 1), fnum(plain.ServerCPUPerTxnUs, 1),
					fnum(perStatement(enc.CPUPerTxnUs, plain.CPUPerTxnUs, w.Statements), 1),
					fnum(perStatement(enc.ServerCPUPerTxnUs, plain.ServerCPUPerTxnUs, w.Statements), 1)))
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("| workload | clients | target | encrypted TPS | plaintext TPS | encrypted ÷ plaintext | avg latency ms, encrypted / plaintext | added latency µs/statement | " +
		"proxy CPU µs/txn, encrypted / plaintext | server CPU µs/txn, encrypted / plaintext | added CPU µs/statement, proxy / server |\n")
	b.WriteString("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range rows {
		b.WriteString(row)
	}
}

// perStatement is (enc − plain) ÷ statements; NaN when statements is not
// known.
func perStatement(enc, plain float64, statements int) float64 {
	if statements <= 0 {
		return math.NaN()
	}
	return (enc - plain) / float64(statements)
}

// writeEncStats renders pgcloak-enc's counters: the totals of the
// long-lived process and the per-workload probes.
func (r *Report) writeEncStats(b *strings.Builder) {
	if st := r.EncStats; st != nil {
		fmt.Fprintf(b, "\npgcloak-enc over the whole benchmark (its `stopped` log line: the load, the warm-up and every run on it): "+
			"plan cache %d hits, %d misses (hit rate %s); %d values encrypted, %d decrypted; %d statements refused, %d decryption failures.\n",
			st.PlanCacheHits, st.PlanCacheMisses, fpct(st.PlanCacheHitRate()), st.ValuesEncrypted, st.ValuesDecrypted,
			st.StatementsRefused, st.DecryptFailures)
	}
	if len(r.Probes) == 0 {
		return
	}
	fmt.Fprintf(b, "\nPer workload: a %s run at %d clients alone on a fresh pgcloak-enc process, its counters from its `stopped` line. "+
		"The plan cache is looked up for statements that name an encrypted table: once per Parse with `-M prepared`, "+
		"once per statement otherwise; it is keyed by the statement text, so simple-protocol statements, whose values are "+
		"literals in the text, hit only when the same values recur.\n\n", r.Probes[0].Duration, r.Probes[0].Clients)
	b.WriteString("| workload | transactions | plan-cache hits | misses | hit rate | lookups per statement | values encrypted per txn | values decrypted per txn | refused | decryption failures |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.Probes {
		title, stmts := p.Workload, 0
		if w, ok := r.workload(p.Workload); ok {
			title, stmts = w.Title, w.Statements
		}
		perStmt := math.NaN()
		if stmts > 0 {
			perStmt = Ratio(float64(p.Stats.PlanLookups()), float64(p.Transactions*int64(stmts)))
		}
		fmt.Fprintf(b, "| %s | %d | %d | %d | %s | %s | %s | %s | %d | %d |\n", title, p.Transactions,
			p.Stats.PlanCacheHits, p.Stats.PlanCacheMisses, fpct(p.Stats.PlanCacheHitRate()), fnum(perStmt, 4),
			fnum(p.PerTransaction(p.Stats.ValuesEncrypted), 2), fnum(p.PerTransaction(p.Stats.ValuesDecrypted), 2),
			p.Stats.StatementsRefused, p.Stats.DecryptFailures)
	}
}

// fpct formats a fraction as a percentage; "–" for NaN.
func fpct(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.2f %%", 100*v)
}
