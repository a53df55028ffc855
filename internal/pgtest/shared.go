package pgtest

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

// Shared is one throwaway cluster for a whole test package, started by
// Run (from TestMain); each test gets a fresh database of its own from
// Database. The zero value is ready to use with a Name.
//
//	var shared = pgtest.Shared{Name: "keys"}
//	func TestMain(m *testing.M) { os.Exit(shared.Run(m)) }
type Shared struct {
	Name string // prefix of database names and of messages

	c       *Cluster
	err     error
	missing bool // the server binaries are not installed
	n       atomic.Int64
}

// Run starts the cluster (unless the binaries are missing: Database then
// reports that per test), runs the tests and stops the cluster. It returns
// the tests' exit code.
func (s *Shared) Run(m interface{ Run() int }) int {
	if _, err := FindBinary("postgres"); err != nil {
		s.err, s.missing = err, true
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	s.c, s.err = Start(ctx, Opts{})
	cancel()
	code := m.Run()
	if s.c != nil {
		if err := s.c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "%s tests: stop cluster: %v\n", s.Name, err)
		}
	}
	return code
}

// Cluster returns the running cluster, or reports why there is none (a
// missing dependency as Missing does, a failed start as a failure) and
// returns nil.
func (s *Shared) Cluster(tb TB) *Cluster {
	tb.Helper()
	switch {
	case s.c == nil && s.missing:
		Missing(tb, "missing dependency: PostgreSQL: %v", s.err)
		return nil
	case s.c == nil:
		tb.Fatalf("PostgreSQL cluster did not start: %v", s.err)
		return nil
	}
	return s.c
}

// Database creates a fresh database NAME_N and returns its name and the
// cluster; nil when Cluster reported that there is none.
func (s *Shared) Database(ctx context.Context, tb TB) (string, *Cluster) {
	tb.Helper()
	c := s.Cluster(tb)
	if c == nil {
		return "", nil
	}
	name := fmt.Sprintf("%s_%d", s.Name, s.n.Add(1))
	if err := c.CreateDatabase(ctx, name, ""); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	return name, c
}
