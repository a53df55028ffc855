package bench

import "slices"

// Slot is one pgbench run of a round.
type Slot struct {
	Workload Workload
	Clients  int
	Target   Target
	// Position is the 1-based place of the run among the runs of its
	// group (a workload, or a workload and its baseline) at its client
	// count in this round.
	Position int
}

// Schedule returns the runs of round r (0-based), in order. Workloads keep
// their order; for every client count each target a workload runs on gets
// one run, the targets in Rotate(targets, r) order. A workload whose
// Baseline is also listed forms a group with it: at every client count
// the two run back to back (each on all of its targets) and which of them
// goes first alternates with r, so that neither always runs on a warmer
// or more bloated table than the other.
func Schedule(workloads []Workload, clients []int, targets []Target, r int) []Slot {
	order := Rotate(targets, r)
	var out []Slot
	for _, g := range workloadGroups(workloads) {
		g = Rotate(g, r)
		for _, c := range clients {
			pos := 0
			for _, w := range g {
				for _, t := range order {
					if !w.RunsOn(t.Name) {
						continue
					}
					pos++
					out = append(out, Slot{Workload: w, Clients: c, Target: t, Position: pos})
				}
			}
		}
	}
	return out
}

// workloadGroups pairs every workload with its baseline when both are
// listed (a workload is in one group only), keeping the list order.
func workloadGroups(ws []Workload) [][]Workload {
	used := make([]bool, len(ws))
	var groups [][]Workload
	for i, w := range ws {
		if used[i] {
			continue
		}
		used[i] = true
		g := []Workload{w}
		// Its baseline, or else a later workload it is the baseline of.
		j := slices.IndexFunc(ws, func(x Workload) bool { return w.Baseline != "" && x.Name == w.Baseline })
		if j < 0 || used[j] {
			j = -1
			for k := i + 1; k < len(ws); k++ {
				if !used[k] && ws[k].Baseline == w.Name {
					j = k
					break
				}
			}
		}
		if j >= 0 {
			used[j] = true
			g = append(g, ws[j])
		}
		groups = append(groups, g)
	}
	return groups
}

// baselineOf returns the baseline of workload name when it is listed too.
func baselineOf(ws []Workload, name string) (string, bool) {
	i := slices.IndexFunc(ws, func(w Workload) bool { return w.Name == name })
	if i < 0 || ws[i].Baseline == "" {
		return "", false
	}
	if !slices.ContainsFunc(ws, func(w Workload) bool { return w.Name == ws[i].Baseline }) {
		return "", false
	}
	return ws[i].Baseline, true
}
