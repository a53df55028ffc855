package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// pgcloakBin is the pgcloak executable built by TestMain ("" if the build
// failed; buildErr says why).
var (
	pgcloakBin string
	buildErr   error
)

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "pgcloak-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(1)
	}
	pgcloakBin, buildErr = buildBinary(dir)
	code := m.Run()
	shared.stop()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinary runs `go build` for cmd/pgcloak into dir, with -race when
// the tests themselves run with -race.
func buildBinary(dir string) (string, error) {
	out := filepath.Join(dir, "pgcloak")
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/pgcloak")
	cmd := exec.Command("go", args...)
	cmd.Dir = ".." // the module root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/pgcloak: %w\n%s", err, b)
	}
	return out, nil
}

// needBinary fails the test when the binary could not be built: it is
// part of this repository, so that is never a missing dependency.
func needBinary(t *testing.T) string {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("pgcloak binary not available: %v", buildErr)
	}
	return pgcloakBin
}

// Roles created in every cluster from newCluster / sharedCluster. The
// passwords are random per run.
type role struct{ name, password, method string }

var roles = struct{ scram, md5, clear, trust role }{
	scram: role{"app_scram", randomPassword(), pgtest.MethodSCRAM},
	md5:   role{"app_md5", randomPassword(), pgtest.MethodMD5},
	clear: role{"app_clear", randomPassword(), pgtest.MethodPassword},
	trust: role{"app_trust", "", pgtest.MethodTrust},
}

func allRoles() []role { return []role{roles.scram, roles.md5, roles.clear, roles.trust} }

func randomPassword() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "pw-" + hex.EncodeToString(b)
}

// shared is one plain cluster with the roles above, used by the tests that
// do not change server state beyond their own temp tables and databases.
var shared sharedCluster

type sharedCluster struct {
	once sync.Once
	c    *pgtest.Cluster
	err  error
}

func (s *sharedCluster) get(t *testing.T) *pgtest.Cluster {
	t.Helper()
	needBinary(t)
	pgtest.Require(t, "postgres", "initdb")
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s.c, s.err = pgtest.Start(ctx, pgtest.Opts{})
		if s.err == nil {
			s.err = addRoles(ctx, s.c)
		}
	})
	if s.err != nil {
		t.Fatalf("shared cluster: %v", s.err)
	}
	return s.c
}

func (s *sharedCluster) stop() {
	if s.c != nil {
		if err := s.c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "integration: stop shared cluster:", err)
		}
	}
}

// newCluster starts a fresh cluster with the standard roles for one test.
func newCluster(t *testing.T, opts pgtest.Opts) *pgtest.Cluster {
	t.Helper()
	needBinary(t)
	c := pgtest.New(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := addRoles(ctx, c); err != nil {
		t.Fatal(err)
	}
	return c
}

func addRoles(ctx context.Context, c *pgtest.Cluster) error {
	for _, r := range allRoles() {
		if err := c.AddUser(ctx, r.name, r.password, r.method); err != nil {
			return err
		}
	}
	return c.CreateDatabase(ctx, "app", roles.scram.name)
}

// clientBinary finds a client tool, preferring the cluster's own version.
func clientBinary(t *testing.T, c *pgtest.Cluster, name string) string {
	t.Helper()
	p := filepath.Join(c.BinDir(), name)
	if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
		return p
	}
	pgtest.Require(t, name)
	p, err := pgtest.FindBinary(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pgtestOpts() pgtest.Opts { return pgtest.Opts{} }

// errorsAs is errors.As, named to keep imports short in test files.
func errorsAs(err error, target any) bool { return errors.As(err, target) }
