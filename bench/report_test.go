package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

// sampleReport has 3 rounds of one workload at one client count for the
// three targets; TPS and CPU chosen so medians and ratios are known.
func sampleReport() *Report {
	r := &Report{
		Label: "passthrough", Started: time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC), CommandLine: "go run ./bench/cmd/pgbench-compare",
		Settings: Settings{Rounds: 3, Duration: 10 * time.Second, Scale: 10, Clients: []int{8}, Threads: 2,
			Workloads: []Workload{{Name: "select-simple", Title: "select-only, simple"}},
			Targets:   PassthroughTargets()},
		Goals: Issue3Goals(),
	}
	add := func(round int, target string, tps, p99 float64, cpu time.Duration, measured bool) {
		r.Runs = append(r.Runs, Measurement{Round: round, Target: target, Workload: "select-simple", Clients: 8,
			TPS: tps, Processed: int64(tps * 10), LatAvgMs: 8 / tps * 1000, LatP99Ms: p99,
			ProxyCPU: cpu, ProxyMeasured: measured})
	}
	// Round 1 is never the median run, so a "median" that takes the first
	// run fails.
	// direct: 31000, 29000, 30000 → median 30000; p99 median 2.
	add(1, TargetDirect, 31000, 1, 0, false)
	add(2, TargetDirect, 29000, 3, 0, false)
	add(3, TargetDirect, 30000, 2, 0, false)
	// pgbouncer: median 20000, p99 2.5, CPU 28/32/30 µs/txn → 30.
	add(1, TargetPgBouncer, 22000, 3.5, 22000*10*28*time.Microsecond, true)
	add(2, TargetPgBouncer, 18000, 2.5, 18000*10*32*time.Microsecond, true)
	add(3, TargetPgBouncer, 20000, 1.5, 20000*10*30*time.Microsecond, true)
	// pgcloak: median 24000 (1.2× pgbouncer, 0.8× direct), p99 1.9, CPU
	// 17/15/16 µs/txn → 16.
	add(1, TargetPgcloak, 25000, 2.9, 25000*10*17*time.Microsecond, true)
	add(2, TargetPgcloak, 23000, 0.9, 23000*10*15*time.Microsecond, true)
	add(3, TargetPgcloak, 24000, 1.9, 24000*10*16*time.Microsecond, true)
	return r
}

func TestSummarizeMediansAndRatios(t *testing.T) {
	s := sampleReport().Summary()
	if len(s.Cells) != 3 {
		t.Fatalf("%d cells", len(s.Cells))
	}
	c, ok := s.Cell("select-simple", 8, TargetPgcloak)
	if !ok {
		t.Fatal("no pgcloak cell")
	}
	if c.Runs != 3 || c.TPS != 24000 || c.TPSMin != 23000 || c.TPSMax != 25000 || c.LatP99Ms != 1.9 || !approx(c.CPUPerTxnUs, 16) {
		t.Errorf("pgcloak cell %+v", c)
	}
	d, _ := s.Cell("select-simple", 8, TargetDirect)
	if !math.IsNaN(d.CPUPerTxnUs) {
		t.Errorf("direct has proxy CPU %v", d.CPUPerTxnUs)
	}
	if r := s.TPSRatio("select-simple", 8, TargetPgcloak, TargetPgBouncer); !approx(r, 1.2) {
		t.Errorf("pgcloak÷pgbouncer = %v", r)
	}
	if r := s.TPSRatio("select-simple", 8, TargetPgcloak, TargetDirect); !approx(r, 0.8) {
		t.Errorf("pgcloak÷direct = %v", r)
	}
	if r := s.TPSRatio("select-simple", 32, TargetPgcloak, TargetDirect); !math.IsNaN(r) {
		t.Errorf("ratio for an absent cell = %v", r)
	}
}

func TestGoals(t *testing.T) {
	rep := sampleReport()
	res := rep.Summary().Check(rep.Goals, rep.Settings.Clients)
	// Only the two select goals apply (no TPC-B runs).
	if len(res) != 2 {
		t.Fatalf("%d results: %+v", len(res), res)
	}
	if !res[0].Met || !approx(res[0].Value, 1.2) {
		t.Errorf("ratio goal: %+v", res[0])
	}
	if !res[1].Met || !approx(res[1].Value, 16) {
		t.Errorf("cpu goal: %+v", res[1])
	}
	// Make pgcloak slower and hungrier: both goals must fail.
	for i := range rep.Runs {
		if rep.Runs[i].Target == TargetPgcloak {
			rep.Runs[i].TPS /= 2
			rep.Runs[i].ProxyCPU *= 3
		}
	}
	for _, g := range rep.Summary().Check(rep.Goals, rep.Settings.Clients) {
		if g.Met {
			t.Errorf("goal met after the slowdown: %+v", g)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	rep := sampleReport()
	rep.Notes = []string{"a note"}
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"| select-only, simple | 8 | pgcloak | 24000 | 23000–25000 | 0.333 | 1.900 | 16.0 | 0 | 0.80× | 1.20× |",
		"| select-only, simple | 8 | direct | 30000 | 29000–31000 | 0.267 | 2.000 | – | 0 | – | 1.50× |",
		"| select-only, simple | 8 | pgbouncer | 20000 | 18000–22000 | 0.400 | 2.500 | 30.0 | 0 | 0.67× | – |",
		"| select-only, simple | 8 | 0.80× | 1.20× | 0.67× | 16.0 | 30.0 |",
		"| pgcloak ÷ pgbouncer TPS ≥ 1.1 | select-only, simple | 8 | 1.20× | yes |",
		"| pgcloak CPU µs/txn ≤ 20 | select-only, simple | 8 | 16.0 | yes |",
		"go run ./bench/cmd/pgbench-compare",
		"- a note",
		"9 runs",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n%s", want, md)
		}
	}
	// The terminal tables are the same tables.
	b.Reset()
	if err := rep.WriteTables(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| select-only, simple | 8 | 0.80× | 1.20× | 0.67× | 16.0 | 30.0 |") {
		t.Errorf("tables:\n%s", b.String())
	}
}

// Without pgcloak runs the pgcloak comparison table is left out entirely.
func TestWriteTablesWithoutPgcloakRuns(t *testing.T) {
	rep := sampleReport()
	var kept []Measurement
	for _, r := range rep.Runs {
		if r.Target != TargetPgcloak {
			kept = append(kept, r)
		}
	}
	rep.Runs = kept
	var b bytes.Buffer
	if err := rep.WriteTables(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "pgcloak ÷") || !strings.Contains(b.String(), "| select-only, simple | 8 | pgbouncer | 20000 |") {
		t.Errorf("tables:\n%s", b.String())
	}
}

func TestReportJSONRoundTrip(t *testing.T) {
	rep := sampleReport()
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Runs) != 9 || back.Runs[4].ProxyCPU != rep.Runs[4].ProxyCPU || back.Settings.Duration != 10*time.Second {
		t.Errorf("round trip lost data: %+v", back.Runs[4])
	}
	if got := back.Summary().TPSRatio("select-simple", 8, TargetPgcloak, TargetPgBouncer); !approx(got, 1.2) {
		t.Errorf("ratio after round trip %v", got)
	}
}

func TestBaseName(t *testing.T) {
	rep := sampleReport()
	if got := rep.BaseName(); got != "2026-11-25T093000Z-passthrough" {
		t.Errorf("BaseName = %q", got)
	}
	rep.Label = "enc/../x y"
	if got := rep.BaseName(); got != "2026-11-25T093000Z-enc----x-y" {
		t.Errorf("BaseName = %q", got)
	}
}

func TestFormatting(t *testing.T) {
	if fnum(math.NaN(), 1) != "–" || fnum(12.345, 1) != "12.3" || fratio(1.234, false) != "1.23×" || fratio(1, true) != "–" {
		t.Error("number formatting")
	}
}
