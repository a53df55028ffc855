package bench

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// probeDuration is the length of one probe run.
const probeDuration = 2 * time.Second

// Probe is a short run of one workload alone on a fresh pgcloak-enc
// process: the counters that process logs when it stops belong to that
// workload only (the long-lived pgcloak-enc of the rounds adds up every
// workload, the load and the warm-up). Probes are not timed runs.
type Probe struct {
	Workload     string        `json:"workload"`
	Clients      int           `json:"clients"`
	Duration     time.Duration `json:"duration_ns"`
	Transactions int64         `json:"transactions"` // pgbench's processed + failed
	Stats        StoppedStats  `json:"stats"`
}

// PerTransaction is a counter ÷ transactions; NaN without transactions.
func (p Probe) PerTransaction(n uint64) float64 {
	return Ratio(float64(n), float64(p.Transactions))
}

// probe runs every workload of pgcloak-enc for probeDuration at the
// largest client count, each on its own pgcloak-enc process.
func (h *harness) probe(ctx context.Context, rep *Report, bin, upstream string, extra PgcloakExtra) error {
	clients := slices.Max(h.cfg.Clients)
	for i, w := range h.cfg.Workloads {
		if !w.RunsOn(TargetPgcloakEnc) {
			continue
		}
		p, err := h.startPgcloak(ctx, fmt.Sprintf("probe-%d", i), bin, upstream, extra)
		if err != nil {
			return fmt.Errorf("bench: probe %s: %w", w.Name, err)
		}
		t := Target{Name: TargetPgcloakEnc, Host: p.Host, Port: p.Port}
		spec := RunSpec{Target: t, Workload: w, Clients: clients, Threads: h.cfg.Threads, Duration: probeDuration,
			DB: benchDB, User: benchUser, ScriptFile: h.scripts[w.Name]}
		out, _, err := h.runPgbench(ctx, spec, "")
		p.Stop()
		if err != nil {
			return fmt.Errorf("bench: probe %s: %w", w.Name, err)
		}
		st, ok := p.StoppedStats()
		if !ok {
			return fmt.Errorf("bench: probe %s: pgcloak logged no \"stopped\" line:\n%s", w.Name, p.logTail())
		}
		pr := Probe{Workload: w.Name, Clients: clients, Duration: probeDuration, Transactions: out.Processed + out.Failed, Stats: st}
		rep.Probes = append(rep.Probes, pr)
		h.checkEncStats(st, "the probe of "+w.Name)
		h.progressf("probe %-16s c=%-3d %7d txn  plan cache %d hits / %d misses  values encrypted %.2f / decrypted %.2f per txn",
			w.Name, clients, pr.Transactions, st.PlanCacheHits, st.PlanCacheMisses,
			pr.PerTransaction(st.ValuesEncrypted), pr.PerTransaction(st.ValuesDecrypted))
	}
	return nil
}

// checkEncStats notes refusals and decryption failures, which a correct
// encrypted workload never causes.
func (h *harness) checkEncStats(st StoppedStats, during string) {
	if !st.Encryption {
		h.notes = append(h.notes, fmt.Sprintf("%s logged no encryption counters during %s: encryption was not active", TargetPgcloakEnc, during))
		return
	}
	if st.StatementsRefused > 0 || st.DecryptFailures > 0 {
		h.notes = append(h.notes, fmt.Sprintf("%s refused %d statement(s) and failed to decrypt %d value(s) during %s",
			TargetPgcloakEnc, st.StatementsRefused, st.DecryptFailures, during))
	}
}
