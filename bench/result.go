package bench

import (
	"math"
	"slices"
	"time"
)

// Measurement is the outcome of one pgbench run against one target.
type Measurement struct {
	Round    int    `json:"round"`    // 1-based
	Position int    `json:"position"` // 1-based place of the target in the round's order
	Target   string `json:"target"`
	Workload string `json:"workload"`
	Clients  int    `json:"clients"`

	TPS             float64 `json:"tps"`        // pgbench, excluding connection time
	Processed       int64   `json:"processed"`  // successful transactions (pgbench summary)
	Failed          int64   `json:"failed"`     // failed transactions (pgbench summary)
	LatAvgMs        float64 `json:"lat_avg_ms"` // mean of the logged latencies
	LatP50Ms        float64 `json:"lat_p50_ms"`
	LatP99Ms        float64 `json:"lat_p99_ms"`
	LatMaxMs        float64 `json:"lat_max_ms"`
	PgbenchLatAvgMs float64 `json:"pgbench_lat_avg_ms"` // as printed by pgbench
	InitialConnMs   float64 `json:"initial_conn_ms"`
	Logged          int64   `json:"logged"` // successful transactions in the transaction log

	// ProxyCPU is the user+system CPU time of the proxy process during the
	// run; meaningful only when ProxyMeasured.
	ProxyCPU      time.Duration `json:"proxy_cpu_ns"`
	ProxyMeasured bool          `json:"proxy_measured"`
	ClientCPU     time.Duration `json:"client_cpu_ns"` // pgbench's own user+system time
	// ServerCPU is the user+system CPU time of every PostgreSQL process
	// (postmaster, backends, background processes) during the run;
	// meaningful only when ServerMeasured.
	ServerCPU      time.Duration `json:"server_cpu_ns"`
	ServerMeasured bool          `json:"server_measured"`
	Wall           time.Duration `json:"wall_ns"`

	// Timeline is successful transactions per second of the run.
	Timeline []int64 `json:"timeline"`
}

// CPUPerTxnUs is the proxy CPU in µs per successful transaction, NaN when
// the target has no proxy process or nothing was processed.
func (r Measurement) CPUPerTxnUs() float64 {
	if !r.ProxyMeasured || r.Processed == 0 {
		return math.NaN()
	}
	return float64(r.ProxyCPU) / float64(time.Microsecond) / float64(r.Processed)
}

// ServerCPUPerTxnUs is the server CPU in µs per successful transaction,
// NaN when not measured or nothing was processed.
func (r Measurement) ServerCPUPerTxnUs() float64 {
	if !r.ServerMeasured || r.Processed == 0 {
		return math.NaN()
	}
	return float64(r.ServerCPU) / float64(time.Microsecond) / float64(r.Processed)
}

// Cell aggregates the runs of one workload × clients × target.
type Cell struct {
	Workload    string
	Clients     int
	Target      string
	Runs        int
	TPS         float64 // median
	TPSMin      float64
	TPSMax      float64
	LatAvgMs    float64 // median of the per-run means
	LatP99Ms    float64 // median of the per-run p99s
	CPUPerTxnUs float64 // median; NaN without a proxy process
	// ServerCPUPerTxnUs is the median PostgreSQL CPU µs per transaction.
	ServerCPUPerTxnUs float64
	Failed            int64 // sum over runs
}

// Summary holds one Cell per workload × clients × target that has runs, in
// presentation order.
type Summary struct {
	Cells []Cell
	// Baselines maps a workload to its baseline when both ran
	// (Workload.Baseline); Report.Summary fills it in.
	Baselines map[string]string
}

// Summarize aggregates runs. The order of cells follows workloads, then
// clients, then targets.
func Summarize(runs []Measurement, workloads []string, clients []int, targets []string) Summary {
	var s Summary
	for _, w := range workloads {
		for _, c := range clients {
			for _, t := range targets {
				var tps, lat, p99, cpu, scpu []float64
				var failed int64
				for _, r := range runs {
					if r.Workload != w || r.Clients != c || r.Target != t {
						continue
					}
					tps = append(tps, r.TPS)
					lat = append(lat, r.LatAvgMs)
					p99 = append(p99, r.LatP99Ms)
					cpu = append(cpu, r.CPUPerTxnUs())
					scpu = append(scpu, r.ServerCPUPerTxnUs())
					failed += r.Failed
				}
				if len(tps) == 0 {
					continue
				}
				lo, hi := MinMax(tps)
				s.Cells = append(s.Cells, Cell{
					Workload: w, Clients: c, Target: t, Runs: len(tps),
					TPS: Median(tps), TPSMin: lo, TPSMax: hi,
					LatAvgMs: Median(lat), LatP99Ms: Median(p99), CPUPerTxnUs: Median(cpu), ServerCPUPerTxnUs: Median(scpu),
					Failed: failed,
				})
			}
		}
	}
	return s
}

// Cell returns the aggregate of one workload × clients × target.
func (s Summary) Cell(workload string, clients int, target string) (Cell, bool) {
	i := slices.IndexFunc(s.Cells, func(c Cell) bool {
		return c.Workload == workload && c.Clients == clients && c.Target == target
	})
	if i < 0 {
		return Cell{}, false
	}
	return s.Cells[i], true
}

// TPSRatio is median TPS of num ÷ median TPS of den for one workload ×
// clients; NaN when either is missing.
func (s Summary) TPSRatio(workload string, clients int, num, den string) float64 {
	a, ok1 := s.Cell(workload, clients, num)
	b, ok2 := s.Cell(workload, clients, den)
	if !ok1 || !ok2 {
		return math.NaN()
	}
	return Ratio(a.TPS, b.TPS)
}

// BaselineRatio is median TPS of workload ÷ median TPS of its baseline,
// both on target, for one client count; NaN when either is missing.
func (s Summary) BaselineRatio(workload string, clients int, target string) float64 {
	base, ok := s.Baselines[workload]
	if !ok {
		return math.NaN()
	}
	a, ok1 := s.Cell(workload, clients, target)
	b, ok2 := s.Cell(base, clients, target)
	if !ok1 || !ok2 {
		return math.NaN()
	}
	return Ratio(a.TPS, b.TPS)
}

// Goal is a target the results are checked against, e.g. "pgcloak ÷
// pgbouncer ≥ 1.10 on select-only".
type Goal struct {
	Workloads []string // workload names it applies to, at every client count
	// Num ÷ Den median TPS when Den is set; the proxy CPU µs per
	// transaction of Num when Den is empty. With VsBaseline, the TPS of
	// the workload ÷ that of its baseline, both on target Num.
	Num, Den   string
	VsBaseline bool
	AtLeast    float64 // value must be ≥ AtLeast (ignored when 0)
	AtMost     float64 // value must be ≤ AtMost (ignored when 0)
	// Label describes the value in the report; "" = derived from Num,
	// Den and VsBaseline.
	Label string
}

// GoalResult is a Goal evaluated at one workload × clients.
type GoalResult struct {
	Goal     Goal
	Workload string
	Clients  int
	Value    float64 // NaN when not measured
	Met      bool
}

// Check evaluates goals against s for every workload × clients present.
func (s Summary) Check(goals []Goal, clients []int) []GoalResult {
	var out []GoalResult
	for _, g := range goals {
		for _, w := range g.Workloads {
			for _, c := range clients {
				v := math.NaN()
				if g.VsBaseline {
					v = s.BaselineRatio(w, c, g.Num)
				} else if g.Den != "" {
					v = s.TPSRatio(w, c, g.Num, g.Den)
				} else if cell, ok := s.Cell(w, c, g.Num); ok {
					v = cell.CPUPerTxnUs
				}
				if _, ok := s.Cell(w, c, g.Num); !ok {
					continue // workload or target not in this run
				}
				met := !math.IsNaN(v) && (g.AtLeast == 0 || v >= g.AtLeast) && (g.AtMost == 0 || v <= g.AtMost)
				out = append(out, GoalResult{Goal: g, Workload: w, Clients: c, Value: v, Met: met})
			}
		}
	}
	return out
}

// Issue3Goals are the pass-through targets of issue 3.
func Issue3Goals() []Goal {
	sel := []string{"select-simple", "select-extended", "select-prepared"}
	tpcb := []string{"tpcb-simple", "tpcb-prepared"}
	return []Goal{
		{Workloads: sel, Num: TargetPgcloak, Den: TargetPgBouncer, AtLeast: 1.10},
		{Workloads: sel, Num: TargetPgcloak, AtMost: 20},
		{Workloads: tpcb, Num: TargetPgcloak, Den: TargetDirect, AtLeast: 0.95},
	}
}

// EncryptionGoals are the targets of issue 5: a statement over two
// encrypted columns costs at most 10 % of the throughput of the same
// statement over plaintext columns through the same pgcloak.
func EncryptionGoals() []Goal {
	return []Goal{{Workloads: []string{"enc-simple", "enc-extended", "enc-prepared"}, Num: TargetPgcloakEnc, VsBaseline: true,
		AtLeast: 0.90, Label: "encrypted ÷ plaintext through pgcloak"}}
}
