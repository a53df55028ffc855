package bench

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math"
	"strings"
	"testing"
	"time"
)

// sampleRotation is a 30-second scenario: rotation at 6.0–6.3 s,
// re-encryption 6.3–20.0 s, retirement 20.0–20.5 s; pgbench reports 4 ms
// after every whole second. TPS is 1000 before (3 intervals), 900 during
// (12) and 1100 after (9), except the first two seconds (500, warm-up) and
// the intervals straddling an event (1): those belong to no window, and
// would drag the medians down if they counted.
func sampleRotation() *RotationResult {
	r := &RotationResult{Workload: "enc-prepared", Clients: 8, Threads: 2, Duration: 30 * time.Second, RotateAt: 6 * time.Second,
		Keyring: "confidential", FromVersion: 1, ToVersion: 2, TableRows: 20000, AddedRows: 10000, MaxDip: 0.10,
		TPS: 990, Processed: 29700,
		Events: []RotationEvent{
			{Name: EventRotate, Start: 6.0, End: 6.3},
			{Name: EventReencrypt, Start: 6.3, End: 20.0},
			{Name: EventRetire, Start: 20.0, End: 20.5},
		},
		Columns: []ReencryptColumn{
			{Column: "public.enc_accounts.email", Outcome: "done", Passes: 1, Reencrypted: 5100, Skipped: 2},
			{Column: "public.enc_accounts.balance_secret", Outcome: "done", Passes: 2, Reencrypted: 5050, Unchanged: 1},
		},
	}
	var lines []ProgressLine
	const origin = 1000.0 // the Unix time pgbench started at, scaled down
	for s := 1; s <= 30; s++ {
		tps, lat := 1.0, 0.8 // straddles an event
		switch {
		case s <= 2:
			tps = 500
		case s <= 5:
			tps = 1000
		case s >= 8 && s <= 19:
			tps, lat = 900, 0.9
		case s >= 22:
			tps, lat = 1100, 0.7
		}
		lines = append(lines, ProgressLine{At: origin + float64(s) + 0.004, TPS: tps, LatAvgMs: lat})
	}
	r.Series = TimelineFromProgress(lines, origin, 1)
	return r
}

func TestTimelineFromProgress(t *testing.T) {
	s := TimelineFromProgress([]ProgressLine{{At: 101.0, TPS: 5}, {At: 102.1, TPS: 6, Failed: 2}, {At: 103.0, TPS: 7}}, 100, 1)
	want := []TPSPoint{{Start: 0, End: 1, TPS: 5}, {Start: 1, End: 2.1, TPS: 6, Failed: 2}, {Start: 2.1, End: 3, TPS: 7}}
	if len(s) != len(want) {
		t.Fatalf("%+v", s)
	}
	for i := range want {
		if !approx(s[i].Start, want[i].Start) || !approx(s[i].End, want[i].End) || s[i].TPS != want[i].TPS || s[i].Failed != want[i].Failed {
			t.Errorf("point %d: %+v, want %+v", i, s[i], want[i])
		}
	}
}

func TestRotationAnalysis(t *testing.T) {
	r := sampleRotation()
	a := r.Analysis()
	if a.Before.Seconds != 3 || a.Before.MedianTPS != 1000 || a.Before.MinTPS != 1000 {
		t.Errorf("before %+v", a.Before)
	}
	if a.During.Seconds != 12 || a.During.MedianTPS != 900 || a.During.MinTPS != 900 || a.During.MaxTPS != 900 ||
		a.During.MedianLatMs != 0.9 {
		t.Errorf("during %+v", a.During)
	}
	if a.After.Seconds != 9 || a.After.MedianTPS != 1100 || a.After.MinTPS != 1100 || a.After.From != 20.5 {
		t.Errorf("after %+v", a.After)
	}
	// Outside: 3 × 1000 and 9 × 1100: median 1100.
	if a.OutsideTPS != 1100 || !approx(a.Dip, 1-900.0/1100) || !approx(a.ReencryptSeconds, 13.7) {
		t.Errorf("outside %v, dip %v, reencrypt %v s", a.OutsideTPS, a.Dip, a.ReencryptSeconds)
	}
	re, skipped, unchanged := r.ReencryptedRows()
	if re != 10150 || skipped != 2 || unchanged != 1 {
		t.Errorf("rows %d %d %d", re, skipped, unchanged)
	}

	// Without a re-encryption (the rotation failed) there is no dip.
	r.Events = r.Events[:1]
	r.Events[0].Error = "boom"
	a = r.Analysis()
	if a.During.Seconds != 0 || !math.IsNaN(a.Dip) || !math.IsNaN(a.ReencryptSeconds) || a.After.From != 6.3 {
		t.Errorf("failed rotation: %+v", a)
	}
}

func TestRotationGoals(t *testing.T) {
	r := sampleRotation() // dip 18 %
	g := r.Goals()
	if len(g) != 2 || g[0].Met || g[0].Value != "18.18 %" || !g[1].Met || g[1].Value != "0 / 0" {
		t.Errorf("goals %+v", g)
	}
	r.MaxDip = 0.2
	r.Aborted = 1
	if g := r.Goals(); !g[0].Met || g[1].Met {
		t.Errorf("goals %+v", g)
	}
	r.MaxDip = 0
	if g := r.Goals(); g != nil {
		t.Errorf("goals without MaxDip: %+v", g)
	}
}

// The JSON holds the series, the events and the analysis, with null for
// figures that do not exist.
func TestRotationJSON(t *testing.T) {
	r := sampleRotation()
	js, err := json.Marshal(&Report{Rotation: r})
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		Rotation struct {
			RotationResult
			Analysis struct {
				Dip    *float64 `json:"dip"`
				During struct {
					Seconds   int      `json:"seconds"`
					MedianTPS *float64 `json:"median_tps"`
				} `json:"during_reencryption"`
			} `json:"analysis"`
		} `json:"rotation"`
	}
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	got := back.Rotation
	if len(got.Series) != 30 || len(got.Events) != 3 || got.Events[1].Name != EventReencrypt || got.Columns[1].Unchanged != 1 ||
		got.Analysis.Dip == nil || !approx(*got.Analysis.Dip, 1-900.0/1100) || got.Analysis.During.Seconds != 12 {
		t.Errorf("round trip: %s", js)
	}
	r.Events = nil
	r.Series = nil
	js, err = json.Marshal(r)
	if err != nil {
		t.Fatalf("empty windows: %v", err)
	}
	if !strings.Contains(string(js), `"dip":null`) {
		t.Errorf("no null dip: %s", js)
	}
}

func TestRotationReport(t *testing.T) {
	rep := &Report{Label: "rotation", Started: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC), CommandLine: "go run ./bench/cmd/pgbench-compare -workloads none",
		Settings: Settings{Threads: 2, Rotation: &RotationConfig{Workload: BuiltinWorkloads()[9], Duration: 30 * time.Second,
			Clients: 8, At: 0.2, Rows: 10000, MaxDip: 0.10}},
		Rotation: sampleRotation()}
	if rep.Settings.Rotation.Workload.Name != "enc-prepared" {
		t.Fatalf("workload %s", rep.Settings.Rotation.Workload.Name)
	}
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"# pgbench: key rotation behind live traffic through pgcloak (rotation)",
		"## Key rotation behind live traffic",
		"`enc_accounts` held 20000 rows: 10000 that the script reads and writes",
		"| window, s since pgbench started | 2.0–6.0 | 6.3–20.0 | 20.5–30.0 |",
		"| seconds measured | 3 | 12 | 9 |",
		"| median TPS | 1000 | 900 | 1100 |",
		"| TPS dip during re-encryption (1 − 900 ÷ 1100, the median before and after) | 18.18 % |",
		"| rows re-encrypted | 10150 (`public.enc_accounts.email` 5100 (done, 1 pass(es)); `public.enc_accounts.balance_secret` 5050 (done, 2 pass(es))) |",
		"| re-encryption duration (the command's wall time) | 13.7 s |",
		"| key versions | confidential: 1 → 2, 1 retired |",
		"| retire | `pgcloak keys set-state confidential 1 retired --dsn APP_DSN --yes` | 20.0 | 20.5 | 0.5 | ok |",
		"| TPS dip during re-encryption at the default throttle ≤ 10 % | 18.18 % | no |",
		"| failed transactions / aborted clients = 0 / 0 | 0 / 0 | yes |",
		"Script of the rotation scenario:",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q\n%s", want, md)
		}
	}
	// Nothing of the workload comparison without workloads.
	for _, absent := range []string{"## Results", "## Every run", "| rounds |", "Workloads:"} {
		if strings.Contains(md, absent) {
			t.Errorf("markdown has %q without workloads", absent)
		}
	}
	var tables bytes.Buffer
	if err := rep.WriteTables(&tables); err != nil || !strings.Contains(tables.String(), "| median TPS | 1000 | 900 | 1100 |") {
		t.Errorf("tables (%v):\n%s", err, tables.String())
	}

	// A failed step shows, and the retirement is not claimed.
	rep.Rotation.Events[2].Error = "bench: pgcloak keys set-state: exit status 3\n2 rows still reference version 1"
	b.Reset()
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| 0.5 | failed: bench: pgcloak keys set-state: exit status 3 |") ||
		!strings.Contains(b.String(), "| key versions | confidential: 1 → 2 |") {
		t.Errorf("failed retirement:\n%s", b.String())
	}
}

func TestRotationFiles(t *testing.T) {
	rep := &Report{Label: "rotation", Started: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC), Rotation: sampleRotation()}
	dir := t.TempDir()
	paths, err := rep.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := dir + "/2026-12-05T100000Z-rotation"
	if strings.Join(paths, " ") != base+"-timeline.png "+base+".json "+base+".md" {
		t.Errorf("paths %v", paths)
	}
}

func TestRotationChart(t *testing.T) {
	c := sampleRotation().Chart()
	if len(c.X) != 30 || math.Abs(c.X[0]-0.504) > 1e-9 || c.Y[29] != 1100 {
		t.Errorf("line %v %v", c.X, c.Y)
	}
	var labels []string
	for _, m := range c.Markers {
		labels = append(labels, m.Label)
	}
	if strings.Join(labels, ",") != "rotate,re-encryption start,re-encryption end,retire" ||
		c.Markers[0].At != 6.0 || c.Markers[2].At != 20.0 || c.Markers[3].At != 20.5 || c.Markers[0].Left == c.Markers[1].Left {
		t.Errorf("markers %+v", c.Markers)
	}
	if len(c.Shades) != 1 || c.Shades[0] != [2]float64{6.3, 20.0} || len(c.Levels) != 3 || c.Levels[1].Y != 900 {
		t.Errorf("shades %v, levels %+v", c.Shades, c.Levels)
	}
	var b bytes.Buffer
	if err := c.WritePNG(&b); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatal(err)
	}
	if r := img.Bounds(); r.Dx() < 600 || r.Dy() < 300 {
		t.Errorf("image %v", r)
	}
	if err := (TimelineChart{Title: "empty"}).WritePNG(&b); err == nil {
		t.Error("empty timeline accepted")
	}
}

func TestRotationRows(t *testing.T) {
	// Half the run at 500 rows/s, two columns one after the other.
	if n := RotationRows(80 * time.Second); n != 10000 {
		t.Errorf("80 s: %d rows", n)
	}
	if n := RotationRows(40 * time.Second); n != 5000 {
		t.Errorf("40 s: %d rows", n)
	}
}

func TestRotationConfigValidate(t *testing.T) {
	ws, _ := SelectWorkloads("enc-prepared,select-simple", BuiltinWorkloads())
	ok := RotationConfig{Workload: ws[0], Duration: 40 * time.Second, Clients: 8, At: 0.2, Rows: 5000}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*RotationConfig){
		"short":        func(c *RotationConfig) { c.Duration = 5 * time.Second },
		"no clients":   func(c *RotationConfig) { c.Clients = 0 },
		"at 0":         func(c *RotationConfig) { c.At = 0 },
		"at 1":         func(c *RotationConfig) { c.At = 1 },
		"pass-through": func(c *RotationConfig) { c.Workload = ws[1] },
	} {
		c := ok
		mut(&c)
		if err := c.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// In a Config: no workloads is fine with the scenario, which needs Setup.
	cfg := Config{Rounds: 1, Duration: time.Second, Scale: 1, Clients: []int{8}, Threads: 2, Rotation: &ok}
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "rotation scenario needs Config.Setup") {
		t.Errorf("rotation without Setup: %v", err)
	}
	cfg.Rotation = nil
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "at least one workload or the rotation scenario") {
		t.Errorf("nothing to run: %v", err)
	}
}

func TestParseReencryptJSON(t *testing.T) {
	out := `[
  {"column": "public.enc_accounts.email", "keyring": "confidential", "active_version": 2, "versions": [], "non_envelope_values": 0,
   "rows_to_reencrypt": 5200, "outcome": "done", "resumed": false, "passes": 2, "reencrypted": 5190, "skipped": 12, "left_unchanged": 0},
  {"column": "public.enc_accounts.balance_secret", "keyring": "confidential", "versions": [], "outcome": "nothing to do",
   "passes": 0, "reencrypted": 0, "skipped": 0, "left_unchanged": 0}
]
`
	cols, err := ParseReencryptJSON(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(cols) != 2 || cols[0] != (ReencryptColumn{Column: "public.enc_accounts.email", Outcome: "done", Passes: 2, Reencrypted: 5190, Skipped: 12}) ||
		cols[1].Outcome != "nothing to do" {
		t.Errorf("%+v", cols)
	}
	for _, bad := range []string{"", "rotated confidential", `[{"outcome": "done"}]`} {
		if _, err := ParseReencryptJSON(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	v, err := parseRotateJSON(`{"keyring": "confidential", "version": 2, "state": "active"}`)
	if err != nil || v != 2 {
		t.Errorf("rotate: %d, %v", v, err)
	}
	for _, bad := range []string{`{"version": 1, "state": "active"}`, `{"version": 3, "state": "decrypt_only"}`, "x"} {
		if _, err := parseRotateJSON(bad); err == nil {
			t.Errorf("rotate: accepted %q", bad)
		}
	}
}
