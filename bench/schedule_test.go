package bench

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func slotString(ss []Slot) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = fmt.Sprintf("%s/%d/%s#%d", s.Workload.Name, s.Clients, s.Target.Name, s.Position)
	}
	return strings.Join(parts, " ")
}

func testTargets(names ...string) []Target {
	ts := make([]Target, len(names))
	for i, n := range names {
		ts[i] = Target{Name: n}
	}
	return ts
}

// Workloads without a baseline keep the order of the original loop:
// workload, then clients, then the rotated targets.
func TestScheduleWithoutBaselines(t *testing.T) {
	ws := []Workload{{Name: "a"}, {Name: "b", Targets: []string{TargetPgBouncer}}}
	ts := testTargets(TargetDirect, TargetPgBouncer, TargetPgcloak)
	got := slotString(Schedule(ws, []int{8, 32}, ts, 1))
	want := "a/8/pgbouncer#1 a/8/pgcloak#2 a/8/direct#3 a/32/pgbouncer#1 a/32/pgcloak#2 a/32/direct#3 b/8/pgbouncer#1 b/32/pgbouncer#1"
	if got != want {
		t.Errorf("round 2:\n got %s\nwant %s", got, want)
	}
}

// A workload and its baseline run back to back at every client count,
// the one going first alternating every round, wherever the baseline is
// listed.
func TestSchedulePairsBaselines(t *testing.T) {
	enc := []string{TargetPgcloakEnc}
	ws := []Workload{
		{Name: "sel", Targets: PassthroughTargets()},
		{Name: "enc-p", Baseline: "plain-p", Targets: enc},
		{Name: "other", Targets: enc},
		{Name: "plain-p", Targets: enc},
		{Name: "plain-s", Targets: enc},
		{Name: "enc-s", Baseline: "plain-s", Targets: enc},
		{Name: "enc-x", Baseline: "not-selected", Targets: enc},
	}
	ts := testTargets(TargetDirect, TargetPgcloakEnc)
	r0 := slotString(Schedule(ws, []int{8, 32}, ts, 0))
	want0 := "sel/8/direct#1 sel/32/direct#1 " +
		"enc-p/8/pgcloak-enc#1 plain-p/8/pgcloak-enc#2 enc-p/32/pgcloak-enc#1 plain-p/32/pgcloak-enc#2 " +
		"other/8/pgcloak-enc#1 other/32/pgcloak-enc#1 " +
		"plain-s/8/pgcloak-enc#1 enc-s/8/pgcloak-enc#2 plain-s/32/pgcloak-enc#1 enc-s/32/pgcloak-enc#2 " +
		"enc-x/8/pgcloak-enc#1 enc-x/32/pgcloak-enc#1"
	if r0 != want0 {
		t.Errorf("round 1:\n got %s\nwant %s", r0, want0)
	}
	r1 := slotString(Schedule(ws, []int{8}, ts, 1))
	want1 := "sel/8/direct#1 plain-p/8/pgcloak-enc#1 enc-p/8/pgcloak-enc#2 other/8/pgcloak-enc#1 " +
		"enc-s/8/pgcloak-enc#1 plain-s/8/pgcloak-enc#2 enc-x/8/pgcloak-enc#1"
	if r1 != want1 {
		t.Errorf("round 2:\n got %s\nwant %s", r1, want1)
	}
	// Every workload × clients × target runs exactly once per round.
	for r := range 4 {
		seen := map[string]int{}
		for _, s := range Schedule(ws, []int{8, 32}, ts, r) {
			seen[fmt.Sprintf("%s/%d/%s", s.Workload.Name, s.Clients, s.Target.Name)]++
		}
		if len(seen) != 14 || slices.ContainsFunc(mapValues(seen), func(n int) bool { return n != 1 }) {
			t.Errorf("round %d: %v", r+1, seen)
		}
	}
}

func mapValues(m map[string]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestBaselineOf(t *testing.T) {
	ws := []Workload{{Name: "enc", Baseline: "plain"}, {Name: "plain"}, {Name: "lonely", Baseline: "absent"}}
	if b, ok := baselineOf(ws, "enc"); !ok || b != "plain" {
		t.Errorf("baselineOf(enc) = %q, %v", b, ok)
	}
	for _, name := range []string{"plain", "lonely", "unknown"} {
		if b, ok := baselineOf(ws, name); ok {
			t.Errorf("baselineOf(%s) = %q", name, b)
		}
	}
}
