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
	if got := workloadNames(ws); !slices.Equal(got, []string{"select-simple", "select-prepared", "tpcb-prepared",
		"enc-simple", "plain-simple", "enc-prepared", "plain-prepared"}) {
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
	// Select-only workloads skip vacuum; TPC-B ones vacuum before each
	// run; custom scripts never touch the tables pgbench vacuums.
	for _, w := range BuiltinWorkloads() {
		if w.NoVacuum != (slices.Contains(w.Args, "-S") || w.Script != "") {
			t.Errorf("%s: NoVacuum %v with args %v", w.Name, w.NoVacuum, w.Args)
		}
	}
}

// The pass-through workloads stay on the pass-through targets; every
// encrypted workload runs on pgcloak-enc against a baseline that is the
// same script over the plaintext table in the same query mode.
func TestBuiltinEncryptedWorkloads(t *testing.T) {
	ws := BuiltinWorkloads()
	byName := map[string]Workload{}
	for _, w := range ws {
		if _, dup := byName[w.Name]; dup {
			t.Errorf("workload %s twice", w.Name)
		}
		byName[w.Name] = w
	}
	encrypted := 0
	for _, w := range ws {
		if w.Script == "" {
			if !slices.Equal(w.Targets, PassthroughTargets()) || w.Baseline != "" {
				t.Errorf("%s: targets %v, baseline %q", w.Name, w.Targets, w.Baseline)
			}
			continue
		}
		if !slices.Equal(w.Targets, []string{TargetPgcloakEnc}) || w.Statements != 2 {
			t.Errorf("%s: targets %v, %d statements", w.Name, w.Targets, w.Statements)
		}
		if w.Baseline == "" {
			continue
		}
		encrypted++
		base, ok := byName[w.Baseline]
		if !ok || base.Baseline != "" || !slices.Equal(base.Args, w.Args) || base.Script != AccountsScript(PlainTable) ||
			w.Script != AccountsScript(EncTable) || base.Statements != w.Statements {
			t.Errorf("%s: baseline %q is not the plaintext twin: %+v", w.Name, w.Baseline, base)
		}
	}
	if encrypted != 3 {
		t.Errorf("%d encrypted workloads, want one per query mode", encrypted)
	}
}

func TestSelectTargetsAndRotate(t *testing.T) {
	got, err := SelectTargets("pgcloak-enc,pgcloak, direct")
	if err != nil || !slices.Equal(got, []string{"direct", "pgcloak", "pgcloak-enc"}) {
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
	if got := Rotate(PassthroughTargets(), 1); !slices.Equal(got, []string{"pgbouncer", "pgcloak", "direct"}) {
		t.Errorf("Rotate(1) = %v", got)
	}
	if !(Workload{}).RunsOn("pgcloak") || (Workload{Targets: []string{"pgcloak"}}).RunsOn("direct") {
		t.Error("RunsOn")
	}
}
