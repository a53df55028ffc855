package bench

import (
	"slices"
	"testing"
)

func TestSelectWorkloads(t *testing.T) {
	ws, err := SelectWorkloads(DefaultWorkloads, BuiltinWorkloads())
	if err != nil {
		t.Fatal(err)
	}
	if got := workloadNames(ws); !slices.Equal(got, []string{"select-simple", "select-prepared", "tpcb-prepared"}) {
		t.Errorf("default workloads %v", got)
	}
	ws, err = SelectWorkloads(" tpcb-prepared, select-simple ", BuiltinWorkloads())
	if err != nil || !slices.Equal(workloadNames(ws), []string{"tpcb-prepared", "select-simple"}) {
		t.Errorf("order not kept: %v %v", workloadNames(ws), err)
	}
	for _, bad := range []string{"", ",", "select", "select-simple,select-simple"} {
		if _, err := SelectWorkloads(bad, BuiltinWorkloads()); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	// Select-only workloads skip vacuum; TPC-B ones vacuum before each run.
	for _, w := range BuiltinWorkloads() {
		if w.NoVacuum != slices.Contains(w.Args, "-S") {
			t.Errorf("%s: NoVacuum %v with args %v", w.Name, w.NoVacuum, w.Args)
		}
	}
}

func TestSelectTargetsAndRotate(t *testing.T) {
	got, err := SelectTargets("pgcloak, direct")
	if err != nil || !slices.Equal(got, []string{"direct", "pgcloak"}) {
		t.Errorf("SelectTargets = %v, %v", got, err)
	}
	for _, bad := range []string{"", "haproxy", "direct,nope"} {
		if _, err := SelectTargets(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	// Over len(targets) rounds every target takes every position once.
	ts := AllTargets()
	seen := map[[2]string]bool{}
	for r := range ts {
		order := Rotate(ts, r)
		if len(order) != len(ts) {
			t.Fatalf("round %d: %v", r, order)
		}
		for pos, name := range order {
			seen[[2]string{name, string(rune('0' + pos))}] = true
		}
	}
	if len(seen) != len(ts)*len(ts) {
		t.Errorf("rotation does not cover every position: %v", seen)
	}
	if got := Rotate(ts, 1); !slices.Equal(got, []string{"pgbouncer", "pgcloak", "direct"}) {
		t.Errorf("Rotate(1) = %v", got)
	}
	if !(Workload{}).RunsOn("pgcloak") || (Workload{Targets: []string{"pgcloak"}}).RunsOn("direct") {
		t.Error("RunsOn")
	}
}
