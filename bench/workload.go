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
	// Baseline names the workload this one is measured against on the
	// same target: for an encrypted workload, the same script over a
	// plaintext table. When both are selected they run back to back (the
	// one going first alternating every round) and the report shows the
	// TPS ratio and the latency and proxy CPU added per statement.
	Baseline string `json:",omitempty"`
	// Statements is the number of SQL statements per transaction, for
	// per-statement figures; 0 when not given.
	Statements int `json:",omitempty"`
}

// RunsOn reports whether the workload applies to the named target.
func (w Workload) RunsOn(target string) bool {
	return len(w.Targets) == 0 || slices.Contains(w.Targets, target)
}

// BuiltinWorkloads returns the workloads the harness knows by name, in
// presentation order. The slice is freshly allocated.
//
// The pass-through workloads (pgbench's built-in scripts) run on
// PassthroughTargets. The encrypted ones ("enc-MODE") run a read + write
// script over the two encrypted columns of enc_accounts on
// TargetPgcloakEnc, each against its baseline ("plain-MODE"): the same
// script over plain_accounts, through the same pgcloak process (see
// EncryptionSetup for the tables).
func BuiltinWorkloads() []Workload {
	pass := PassthroughTargets()
	ws := []Workload{
		{Name: "select-simple", Title: "select-only, simple", Args: []string{"-S", "-M", "simple"}, NoVacuum: true, Targets: pass},
		{Name: "select-extended", Title: "select-only, extended", Args: []string{"-S", "-M", "extended"}, NoVacuum: true, Targets: pass},
		{Name: "select-prepared", Title: "select-only, prepared", Args: []string{"-S", "-M", "prepared"}, NoVacuum: true, Targets: pass},
		{Name: "tpcb-simple", Title: "TPC-B-like, simple", Args: []string{"-b", "tpcb-like", "-M", "simple"}, Targets: pass},
		{Name: "tpcb-prepared", Title: "TPC-B-like, prepared", Args: []string{"-b", "tpcb-like", "-M", "prepared"}, Targets: pass},
	}
	for _, mode := range []string{"simple", "extended", "prepared"} {
		ws = append(ws,
			Workload{Name: "enc-" + mode, Title: "encrypted r/w, " + mode, Args: []string{"-M", mode}, NoVacuum: true,
				Script: AccountsScript(EncTable), Targets: []string{TargetPgcloakEnc}, Baseline: "plain-" + mode, Statements: 2},
			Workload{Name: "plain-" + mode, Title: "plaintext r/w, " + mode, Args: []string{"-M", mode}, NoVacuum: true,
				Script: AccountsScript(PlainTable), Targets: []string{TargetPgcloakEnc}, Statements: 2})
	}
	return ws
}

// DefaultWorkloads is the workload list of `make bench`. The extended
// protocol variants of the encrypted workloads are left out to keep the
// run under half an hour; name them to include them.
const DefaultWorkloads = "select-simple,select-prepared,tpcb-prepared,enc-simple,plain-simple,enc-prepared,plain-prepared"

// AccountsScript is the pgbench script of the encrypted workloads and
// their baselines: read one random row's two secret columns, then
// overwrite both with new random values. pgbench has no string
// expressions, so the new email is a random 12-digit number (sent as a
// parameter or an integer literal, stored as text). With -M simple the
// values are literals in the statement text; with -M extended and
// prepared they are parameters.
func AccountsScript(table string) string {
	return fmt.Sprintf(`\set aid random(1, %d)
\set email random(100000000000, 999999999999)
\set balance random(0, 1000000)
SELECT abalance, email, balance_secret FROM %s WHERE aid = :aid;
UPDATE %s SET email = :email, balance_secret = :balance WHERE aid = :aid;
`, AccountsRows, table, table)
}

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
