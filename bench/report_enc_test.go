package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// sampleEncReport has 3 rounds of an encrypted workload and its baseline
// on pgcloak-enc at 8 clients, with medians chosen so that every derived
// figure is known: TPS 9500 ÷ 10000, latency 0.8 vs 0.7 ms, proxy CPU 60
// vs 40 and server CPU 90 vs 70 µs/txn, 2 statements per transaction.
func sampleEncReport() *Report {
	ws := BuiltinWorkloads()
	var sel []Workload
	for _, w := range ws {
		if w.Name == "enc-prepared" || w.Name == "plain-prepared" {
			sel = append(sel, w)
		}
	}
	r := &Report{
		Label: "encrypted", Started: time.Date(2026, 12, 4, 9, 30, 0, 0, time.UTC), CommandLine: "go run ./bench/cmd/pgbench-compare",
		Settings: Settings{Rounds: 3, Duration: 10 * time.Second, Scale: 10, Clients: []int{8}, Threads: 2,
			Workloads: sel, Targets: []string{TargetPgcloakEnc}, Encryption: "KEK: SoftHSM2 token"},
		Goals:    EncryptionGoals(),
		EncStats: &StoppedStats{Encryption: true, PlanCacheHits: 90, PlanCacheMisses: 10, ValuesEncrypted: 500, ValuesDecrypted: 400},
		Probes: []Probe{
			{Workload: "enc-prepared", Clients: 8, Duration: 2 * time.Second, Transactions: 1000,
				Stats: StoppedStats{Encryption: true, PlanCacheHits: 14, PlanCacheMisses: 2, ValuesEncrypted: 2000, ValuesDecrypted: 2000}},
			{Workload: "plain-prepared", Clients: 8, Duration: 2 * time.Second, Transactions: 1200, Stats: StoppedStats{Encryption: true}},
		},
	}
	add := func(round int, workload string, tps, lat float64, proxyUs, serverUs time.Duration) {
		n := int64(tps * 10)
		r.Runs = append(r.Runs, Measurement{Round: round, Target: TargetPgcloakEnc, Workload: workload, Clients: 8,
			TPS: tps, Processed: n, LatAvgMs: lat, LatP99Ms: 3 * lat,
			ProxyCPU: time.Duration(n) * proxyUs * time.Microsecond, ProxyMeasured: true,
			ServerCPU: time.Duration(n) * serverUs * time.Microsecond, ServerMeasured: true})
	}
	add(1, "enc-prepared", 10000, 0.7, 55, 85)
	add(2, "enc-prepared", 9000, 0.9, 65, 95)
	add(3, "enc-prepared", 9500, 0.8, 60, 90)
	add(1, "plain-prepared", 10500, 0.6, 35, 65)
	add(2, "plain-prepared", 9800, 0.8, 45, 75)
	add(3, "plain-prepared", 10000, 0.7, 40, 70)
	return r
}

func TestEncryptedReport(t *testing.T) {
	rep := sampleEncReport()
	s := rep.Summary()
	if s.Baselines["enc-prepared"] != "plain-prepared" || len(s.Baselines) != 1 {
		t.Errorf("baselines %v", s.Baselines)
	}
	if r := s.BaselineRatio("enc-prepared", 8, TargetPgcloakEnc); !approx(r, 0.95) {
		t.Errorf("ratio %v", r)
	}
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"### Encrypted columns",
		"| encrypted r/w, prepared | 8 | pgcloak-enc | 9500 | 10000 | 0.95× | 0.800 / 0.700 | 50.0 | 60.0 / 40.0 | 90.0 / 70.0 | 10.0 / 10.0 |",
		"| encrypted ÷ plaintext through pgcloak ≥ 0.9 | encrypted r/w, prepared | 8 | 0.95× | yes |",
		"plan cache 90 hits, 10 misses (hit rate 90.00 %); 500 values encrypted, 400 decrypted; 0 statements refused, 0 decryption failures.",
		"| encrypted r/w, prepared | 1000 | 14 | 2 | 87.50 % | 0.0080 | 2.00 | 2.00 | 0 | 0 |",
		"| plaintext r/w, prepared | 1200 | 0 | 0 | – | 0.0000 | 0.00 | 0.00 | 0 | 0 |",
		"| pgcloak-enc setup | KEK: SoftHSM2 token |",
		"Script of `enc-prepared`:\n\n```\n\\set aid random(1, 10000)\n",
		"| encrypted r/w, prepared | 8 | pgcloak-enc | 9500 | 9000–10000 | 0.800 | 2.400 | 60.0 | 0 | – | – |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n%s", want, md)
		}
	}
	// The terminal gets the same encrypted table.
	b.Reset()
	if err := rep.WriteTables(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| 9500 | 10000 | 0.95× |") || !strings.Contains(b.String(), "| 14 | 2 | 87.50 % |") {
		t.Errorf("tables:\n%s", b.String())
	}

	// Slower encryption fails the goal.
	for i := range rep.Runs {
		if rep.Runs[i].Workload == "enc-prepared" {
			rep.Runs[i].TPS *= 0.8
		}
	}
	res := rep.Summary().Check(rep.Goals, rep.Settings.Clients)
	if len(res) != 1 || res[0].Met || !approx(res[0].Value, 0.76) {
		t.Errorf("goal after the slowdown: %+v", res)
	}
}

// Without its baseline in the run an encrypted workload has no ratio, no
// encrypted table and no goal value.
func TestEncryptedReportWithoutBaseline(t *testing.T) {
	rep := sampleEncReport()
	rep.Settings.Workloads = rep.Settings.Workloads[:1]
	rep.Probes, rep.EncStats = nil, nil
	var kept []Measurement
	for _, r := range rep.Runs {
		if r.Workload == "enc-prepared" {
			kept = append(kept, r)
		}
	}
	rep.Runs = kept
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "### Encrypted columns") || !strings.Contains(b.String(), "| encrypted r/w, prepared | 8 | – | no |") {
		t.Errorf("markdown:\n%s", b.String())
	}
}

func TestEncryptedReportJSONRoundTrip(t *testing.T) {
	rep := sampleEncReport()
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back.EncStats == nil || *back.EncStats != *rep.EncStats || len(back.Probes) != 2 || back.Probes[0] != rep.Probes[0] ||
		back.Settings.Workloads[0].Baseline != "plain-prepared" || back.Settings.Workloads[0].Statements != 2 ||
		back.Runs[0].ServerCPU != rep.Runs[0].ServerCPU || back.Settings.Encryption != rep.Settings.Encryption {
		t.Errorf("round trip lost data: %s", js)
	}
	if r := back.Summary().BaselineRatio("enc-prepared", 8, TargetPgcloakEnc); !approx(r, 0.95) {
		t.Errorf("ratio after round trip %v", r)
	}
}

func TestPerStatementAndPercent(t *testing.T) {
	if !approx(perStatement(100, 40, 2), 30) || fnum(perStatement(1, 0, 0), 1) != "–" {
		t.Error("perStatement")
	}
	if fpct(0.875) != "87.50 %" || fpct(Ratio(1, 0)) != "–" {
		t.Error("fpct")
	}
	if p := (Probe{Transactions: 0}); fnum(p.PerTransaction(5), 2) != "–" {
		t.Error("PerTransaction without transactions")
	}
}
