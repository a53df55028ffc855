package bench

import (
	"context"
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
