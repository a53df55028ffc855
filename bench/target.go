package bench

import (
	"fmt"
	"slices"
	"strings"
)

// Target names known to the harness. The order of AllTargets is the
// presentation order in tables and charts and the first round's run order.
const (
	TargetDirect    = "direct"
	TargetPgBouncer = "pgbouncer"
	TargetPgcloak   = "pgcloak" // pass-through: no encrypted column configured
	// TargetPgcloakEnc is a second pgcloak process configured with a key
	// store, a KEK and encrypted columns (Config.Setup). It is separate so
	// that the pass-through numbers stay those of a pass-through proxy.
	TargetPgcloakEnc = "pgcloak-enc"
)

// AllTargets lists the target names in presentation order.
func AllTargets() []string {
	return []string{TargetDirect, TargetPgBouncer, TargetPgcloak, TargetPgcloakEnc}
}

// PassthroughTargets are the targets of the pass-through comparison.
func PassthroughTargets() []string { return []string{TargetDirect, TargetPgBouncer, TargetPgcloak} }

// Target is one endpoint pgbench connects to.
type Target struct {
	Name string // TargetDirect, TargetPgBouncer, TargetPgcloak, TargetPgcloakEnc
	Host string // loopback address
	Port int
	// PID is the proxy process whose CPU time is measured per run; 0 when
	// the target has no proxy process (direct).
	PID int
}

func (t Target) String() string { return fmt.Sprintf("%s (%s:%d)", t.Name, t.Host, t.Port) }

// SelectTargets parses a comma-separated list of target names, returning
// them in presentation order (AllTargets), without duplicates.
func SelectTargets(list string) ([]string, error) {
	want := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(AllTargets(), name) {
			return nil, fmt.Errorf("bench: unknown target %q (known: %s)", name, strings.Join(AllTargets(), ", "))
		}
		want[name] = true
	}
	var out []string
	for _, name := range AllTargets() {
		if want[name] {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: no target selected")
	}
	return out, nil
}

// Rotate returns the run order of round r (0-based): the targets rotated
// left by r, so that over len(targets) rounds every target runs once in
// every position.
func Rotate[T any](targets []T, r int) []T {
	n := len(targets)
	out := make([]T, n)
	if n == 0 {
		return out
	}
	for i := range targets {
		out[i] = targets[(i+r)%n]
	}
	return out
}
