package pgtest

import (
	"context"
	"os"
	"time"
)

// TB is the subset of testing.TB that New and Require use. *testing.T and
// *testing.B satisfy it.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	Logf(format string, args ...any)
}

// RequireEnv is the environment variable that turns a missing dependency
// into a test failure instead of a skip (set in CI).
const RequireEnv = "PGCLOAK_REQUIRE_INTEGRATION"

// Required reports whether missing dependencies must fail tests.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Missing skips tb, or fails it when PGCLOAK_REQUIRE_INTEGRATION=1.
func Missing(tb TB, format string, args ...any) {
	tb.Helper()
	if Required() {
		tb.Fatalf(format+" ("+RequireEnv+"=1)", args...)
		return
	}
	tb.Skipf(format, args...)
}

// Require skips (or fails, see RequireEnv) tb unless every named
// executable can be found by FindBinary.
func Require(tb TB, binaries ...string) {
	tb.Helper()
	for _, b := range binaries {
		if _, err := FindBinary(b); err != nil {
			Missing(tb, "missing dependency: %v", err)
			return
		}
	}
}

// New starts a cluster for a test and stops it in tb.Cleanup. It skips (or
// fails) when the server binaries are missing and fails when the cluster
// does not start.
func New(tb TB, opts Opts) *Cluster {
	tb.Helper()
	if _, _, err := serverBinaries(); err != nil {
		Missing(tb, "missing dependency: %v", err)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		tb.Fatalf("pgtest: start cluster: %v", err)
		return nil
	}
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Logf("pgtest: stop cluster: %v", err)
		}
	})
	return c
}
