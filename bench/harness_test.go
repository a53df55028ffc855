package bench

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// A tiny real benchmark (direct and PgBouncer; pgcloak is covered by the
// smoke run of pgbench-compare, as building it here would be slow): every
// run must produce transactions, latencies from the log that match
// pgbench's count, proxy CPU for PgBouncer only, and the custom-script
// workload with its setup SQL must run where it is allowed to.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and PgBouncer")
	}
	pgtest.Require(t, "pgbench", "postgres", "initdb")
	if _, err := FindPgBouncer(); err != nil {
		pgtest.Missing(t, "%v", err)
		return
	}
	custom := Workload{
		Name: "custom", Title: "custom script", Args: []string{"-M", "prepared"}, NoVacuum: true,
		SetupSQL: "CREATE TABLE kv (k int PRIMARY KEY, v text); INSERT INTO kv SELECT g, 'v' || g FROM generate_series(1, 100) g;",
		Script:   "\\set k random(1, 100)\nSELECT v FROM kv WHERE k = :k;\n",
		Targets:  []string{TargetPgBouncer},
	}
	sel, err := SelectWorkloads("select-prepared", BuiltinWorkloads())
	if err != nil {
		t.Fatal(err)
	}
	setupRan := false
	cfg := Config{
		Rounds: 2, Duration: time.Second, Scale: 1, Clients: []int{2}, Threads: 2,
		Workloads: append(sel, custom), Targets: []string{TargetDirect, TargetPgBouncer},
		Label: "test",
		Setup: func(ctx context.Context, env SetupEnv) (PgcloakExtra, error) {
			setupRan = env.Cluster != nil && env.User == benchUser && env.Password != "" && env.Dir != ""
			return PgcloakExtra{}, nil
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !setupRan {
		t.Error("Setup hook not called with a usable environment")
	}
	// 2 rounds × (select on 2 targets + custom on pgbouncer only).
	if len(rep.Runs) != 6 {
		t.Fatalf("%d runs: %+v", len(rep.Runs), rep.Runs)
	}
	order := map[int]string{}
	for _, r := range rep.Runs {
		if r.TPS <= 0 || r.Processed <= 0 || r.Failed != 0 || r.Logged != r.Processed || r.LatP99Ms < r.LatP50Ms || r.LatP50Ms <= 0 {
			t.Errorf("bad run %+v", r)
		}
		if r.ProxyMeasured != (r.Target == TargetPgBouncer) {
			t.Errorf("%s: proxy measured = %v", r.Target, r.ProxyMeasured)
		}
		// Every transaction costs the server something (tens of µs).
		if !r.ServerMeasured || r.ServerCPUPerTxnUs() < 1 || r.ServerCPUPerTxnUs() > 10000 {
			t.Errorf("%s %s: server CPU %v (measured %v) for %d transactions", r.Target, r.Workload, r.ServerCPU, r.ServerMeasured, r.Processed)
		}
		if r.Workload == "custom" && r.Target != TargetPgBouncer {
			t.Errorf("custom workload ran on %s", r.Target)
		}
		if r.Workload == "select-prepared" && r.Position == 1 {
			order[r.Round] = r.Target
		}
	}
	if order[1] == order[2] || order[1] == "" {
		t.Errorf("first target per round %v: the order does not rotate", order)
	}
	var md strings.Builder
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, n := range rep.Notes {
		if strings.Contains(n, "logged") || strings.Contains(n, "NOT counted") {
			t.Errorf("note: %s", n)
		}
	}
	if rep.Machine.PgBouncerVersion == "" || !strings.Contains(md.String(), "| custom script | 2 | pgbouncer |") {
		t.Errorf("report:\n%s", md.String())
	}
}

func TestConfigValidate(t *testing.T) {
	base := func() Config {
		ws, _ := SelectWorkloads("select-simple,enc-prepared,plain-prepared", BuiltinWorkloads())
		return Config{Rounds: 1, Duration: time.Second, Scale: 1, Clients: []int{8}, Threads: 1, Workloads: ws,
			Targets: AllTargets(), Setup: func(context.Context, SetupEnv) (PgcloakExtra, error) { return PgcloakExtra{}, nil }}
	}
	c := base()
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	c.Setup = nil
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "Config.Setup") {
		t.Errorf("encrypted workloads without Setup: %v", err)
	}
	c = base()
	c.Targets = []string{TargetDirect, TargetPgcloak}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "workload enc-prepared runs on none of the targets direct, pgcloak") {
		t.Errorf("encrypted workloads without their target: %v", err)
	}
	// Only the targets some workload runs on are started.
	c = base()
	c.Workloads = c.Workloads[1:]
	if got := c.usedTargets(); !slices.Equal(got, []string{TargetPgcloakEnc}) {
		t.Errorf("used targets %v", got)
	}
	c.Setup = nil // pass-through only: no Setup needed
	c.Workloads = base().Workloads[:1]
	if got := c.usedTargets(); !slices.Equal(got, PassthroughTargets()) || c.validate() != nil {
		t.Errorf("used targets %v, %v", got, c.validate())
	}
}

func TestWarmupWorkload(t *testing.T) {
	ws, _ := SelectWorkloads("enc-simple,plain-simple,select-prepared", BuiltinWorkloads())
	if w := warmupWorkload(TargetPgcloak, ws); w.Name != "warmup" || !slices.Equal(w.Args, []string{"-S", "-M", "prepared"}) {
		t.Errorf("pgcloak warms up with %+v", w)
	}
	if w := warmupWorkload(TargetPgcloakEnc, ws); w.Name != "enc-simple" {
		t.Errorf("pgcloak-enc warms up with %s", w.Name)
	}
	if w := warmupWorkload(TargetPgcloakEnc, ws[2:]); w.Name != "warmup" {
		t.Errorf("a target without workloads warms up with %s", w.Name)
	}
}

func TestPostmasterPID(t *testing.T) {
	dir := t.TempDir()
	if _, err := postmasterPID(dir); err == nil {
		t.Error("no postmaster.pid: no error")
	}
	for content, want := range map[string]int{"4242\n/data\n1700000000\n5432\n": 4242, "x\n": 0, "": 0, "-3\n": 0} {
		if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := postmasterPID(dir)
		if got != want || (err == nil) != (want != 0) {
			t.Errorf("%q: %d, %v", content, got, err)
		}
	}
}
