package bench

import (
	"fmt"
	"slices"
	"strings"
)

// Workload is one pgbench workload, described as data.
type Workload struct {
	// Name identifies the workload on the command line and in results,
	// e.g. "select-prepared".
	Name string
	// Title is the human label used in tables and charts.
	Title string
	// Args are the pgbench arguments that select the workload, e.g.
	// {"-S", "-M", "prepared"}. Connection, client, duration and logging
	// arguments are added by the harness.
	Args []string
	// Script, when not empty, is the content of a custom pgbench script;
	// the harness writes it to a file and passes it with -f.
	Script string
	// SetupSQL, when not empty, runs once against the database (directly,
	// as the bench user) after `pgbench -i` and before any run.
	SetupSQL string
	// NoVacuum passes --no-vacuum: the workload does not modify the
	// standard pgbench tables, so vacuuming before each run only costs time.
	NoVacuum bool
	// Targets restricts the workload to the named targets; empty means all.
	Targets []string
}

// RunsOn reports whether the workload applies to the named target.
func (w Workload) RunsOn(target string) bool {
	return len(w.Targets) == 0 || slices.Contains(w.Targets, target)
}

// BuiltinWorkloads returns the workloads the harness knows by name, in
// presentation order. The slice is freshly allocated.
func BuiltinWorkloads() []Workload {
	return []Workload{
		{Name: "select-simple", Title: "select-only, simple", Args: []string{"-S", "-M", "simple"}, NoVacuum: true},
		{Name: "select-extended", Title: "select-only, extended", Args: []string{"-S", "-M", "extended"}, NoVacuum: true},
		{Name: "select-prepared", Title: "select-only, prepared", Args: []string{"-S", "-M", "prepared"}, NoVacuum: true},
		{Name: "tpcb-simple", Title: "TPC-B-like, simple", Args: []string{"-b", "tpcb-like", "-M", "simple"}},
		{Name: "tpcb-prepared", Title: "TPC-B-like, prepared", Args: []string{"-b", "tpcb-like", "-M", "prepared"}},
	}
}

// DefaultWorkloads is the workload list of `make bench`.
const DefaultWorkloads = "select-simple,select-prepared,tpcb-prepared"

// SelectWorkloads resolves a comma-separated list of names against the
// available workloads, keeping the order of the list.
func SelectWorkloads(list string, available []Workload) ([]Workload, error) {
	var out []Workload
	seen := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if seen[name] {
			return nil, fmt.Errorf("bench: workload %q listed twice", name)
		}
		seen[name] = true
		i := slices.IndexFunc(available, func(w Workload) bool { return w.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("bench: unknown workload %q (known: %s)", name, strings.Join(workloadNames(available), ", "))
		}
		out = append(out, available[i])
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: no workload selected")
	}
	return out, nil
}

func workloadNames(ws []Workload) []string {
	names := make([]string, len(ws))
	for i, w := range ws {
		names[i] = w.Name
	}
	return names
}
