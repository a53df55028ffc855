package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// The pgx packages whose own test suites TestPgxOwnSuite runs.
var pgxSuitePackages = []string{"github.com/jackc/pgx/v5", "github.com/jackc/pgx/v5/pgconn"}

const (
	pgxModule = "github.com/jackc/pgx/v5"
	// minPgxPasses keeps the test from passing vacuously: pgx v5.12.0 has
	// about 1,400 passing tests and subtests in these two packages.
	minPgxPasses = 1000
	// maxPgxReruns bounds the flake re-run: more differing top-level tests
	// than this is a broken proxy, not timing.
	maxPgxReruns  = 40
	pgxRunTimeout = 4 * time.Minute
)

// TestPgxOwnSuite runs pgx's own test suite (issue 3: "any driver's own
// test suite pointed at pgcloak instead of PostgreSQL should pass exactly
// as it does directly") once straight against PostgreSQL and once through
// pgcloak, and requires the same outcome for every test and subtest.
func TestPgxOwnSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pgx's test suite twice (minutes); skipped in -short")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		pgtest.Missing(t, "missing dependency: go toolchain: %v", err)
		return
	}
	needBinary(t)
	version := pgxVersion(t, goBin)
	mod := pgxSuiteModule(t, goBin, version)
	suite := &pgxSuite{goBin: goBin, mod: mod, tmp: t.TempDir()}

	// A dedicated cluster: the suite creates tables, types and extensions.
	// Each side gets its own fresh database with pgx's documented setup
	// (testsetup/postgresql_setup.sql, the parts these packages use).
	c := pgtest.New(t, pgtest.Opts{})
	setupPgxDatabases(t, c, "pgx_direct", "pgx_proxied", "pgx_encrypting")
	p := startProxy(t, proxyConfig{Upstream: c.Addr()})
	// The same suite through a proxy with column encryption turned on (for
	// a table the suite does not touch): every session then runs through
	// the encryption filters, which must be as transparent as the
	// pass-through relay for everything else.
	pe := startProxy(t, encryptingConfig(t, c, "pgx_encrypting"))
	direct := pgxSuiteDSN(c.Addr(), "pgx_direct")
	proxied := pgxSuiteDSN(p.Addr, "pgx_proxied")
	encrypting := pgxSuiteDSN(pe.Addr, "pgx_encrypting")

	start := time.Now()
	d := suite.run(t, direct, nil)
	t.Logf("pgx %s direct: %s (%v)", version, d.summary(), time.Since(start).Round(time.Second))
	start = time.Now()
	x := suite.run(t, proxied, nil)
	t.Logf("pgx %s through pgcloak: %s (%v)", version, x.summary(), time.Since(start).Round(time.Second))
	start = time.Now()
	xe := suite.run(t, encrypting, nil)
	t.Logf("pgx %s through pgcloak with encryption on: %s (%v)", version, xe.summary(), time.Since(start).Round(time.Second))

	for name, r := range map[string]*suiteRun{"direct": d, "through pgcloak": x, "through pgcloak with encryption on": xe} {
		if n := r.count("pass"); n < minPgxPasses {
			t.Errorf("pgx suite %s passed only %d tests (want > %d); the run is broken:\n%s",
				name, n, minPgxPasses, truncate(r.diagnostics(), 8000))
		}
	}
	if t.Failed() {
		return
	}
	if both := d.keys("fail"); len(both) > 0 {
		t.Logf("failing directly as well (not pgcloak's doing): %s", strings.Join(both, ", "))
	}
	suite.compare(t, "through pgcloak", d, x, direct, proxied)
	suite.compare(t, "through pgcloak with encryption on", d, xe, direct, encrypting)

	for _, pp := range []*proxy{p, pe} {
		if pp.Exited() {
			t.Fatalf("pgcloak exited during the pgx suite: %v", pp.exitErr)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	conn, err := tryConnect(ctx, proxied, pgx.QueryExecModeCacheStatement)
	if err != nil {
		t.Fatalf("pgcloak no longer serves after the pgx suite: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT 40 + $1::int", 2).Scan(&n); err != nil || n != 42 {
		t.Fatalf("pgcloak no longer serves after the pgx suite: got %d, %v", n, err)
	}
}

// compare requires the same outcome for every test of runs d (direct) and
// x (through a proxy); differences are re-run on both sides once to rule
// out flakes.
func (s *pgxSuite) compare(t *testing.T, name string, d, x *suiteRun, direct, proxied string) {
	t.Helper()
	diff := diffOutcomes(d, x, nil)
	if len(diff) == 0 {
		return
	}
	top := topLevelTests(diff)
	if n := len(top); n > maxPgxReruns {
		t.Errorf("%d top-level pgx tests behave differently %s:\n%s", n, name, x.report(d, diff))
		return
	}
	t.Logf("%s: %d tests differ; re-running %d top-level tests on both sides to rule out flakes:\n%s",
		name, len(diff), len(top), strings.Join(diff, "\n"))
	d2 := s.run(t, direct, top)
	x2 := s.run(t, proxied, top)
	for _, k := range top {
		if outcomeOf(d2, k) == "absent" || outcomeOf(x2, k) == "absent" {
			t.Errorf("the re-run did not run %s (direct %s, %s %s):\n%s\n%s",
				k, outcomeOf(d2, k), name, outcomeOf(x2, k), truncate(d2.diagnostics(), 4000), truncate(x2.diagnostics(), 4000))
			return
		}
	}
	t.Logf("re-run: direct %s; %s %s", d2.summary(), name, x2.summary())
	if diff2 := diffOutcomes(d2, x2, top); len(diff2) > 0 {
		t.Errorf("pgx's own suite behaves differently %s (persisted on a re-run):\n%s", name, x2.report(d2, diff2))
	} else {
		t.Logf("%s: the differences were flakes: the re-run agrees", name)
	}
}

// encryptingConfig is a proxy configuration with column encryption on for
// db (a local development KEK, classification internal, one column of a
// table created here that nothing else uses).
func encryptingConfig(t *testing.T, c *pgtest.Cluster, db string) proxyConfig {
	t.Helper()
	dir := t.TempDir()
	extra := fmt.Sprintf(`[keystore]
dsn = %q

[kek.dev]
type = "local"
key_file = %q

[classification.internal]
kek = "dev"
plaintext_roles = ["postgres"]
on_denied = "ciphertext"

[[column]]
table = "pgcloak_probe"
column = "secret"
type = "text"
classification = "internal"
`, c.DSN("postgres", "", "postgres"), filepath.Join(dir, "dev-kek.key"))
	cfg := proxyConfig{Upstream: c.Addr(), Extra: extra}
	conf := filepath.Join(dir, "pgcloak.toml")
	if err := os.WriteFile(conf, []byte(cfg.toml()), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, needBinary(t), "--config", conf, "kek", "create").CombinedOutput(); err != nil {
		t.Fatalf("kek create: %v\n%s", err, out)
	}
	conn, err := pgx.Connect(ctx, c.DSN("postgres", "", db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE pgcloak_probe (id int PRIMARY KEY, secret bytea)`); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// pgxVersion is the pgx version in the repository's go.mod (the one this
// test binary was built with).
func pgxVersion(t *testing.T, goBin string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), goBin, "list", "-mod=readonly", "-m", "-f", "{{.Version}}|{{with .Replace}}{{.Path}}{{end}}", pgxModule)
	cmd.Dir = ".." // the module root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", pgxModule, err)
	}
	version, replace, _ := strings.Cut(strings.TrimSpace(string(out)), "|")
	if replace != "" || version == "" {
		t.Fatalf("%s is %q, replaced by %q: cannot fetch the same test suite", pgxModule, version, replace)
	}
	return version
}

// pgxSuiteModule creates a module requiring pgx at version and downloads
// the suite's test dependencies. The shared GOMODCACHE/GOCACHE are used; a
// module proxy that cannot be reached is a missing dependency.
func pgxSuiteModule(t *testing.T, goBin, version string) string {
	t.Helper()
	dir := t.TempDir()
	src := "// Package driversuite exists to run pgx's own tests.\npackage driversuite\n\nimport _ \"github.com/jackc/pgx/v5\"\n"
	if err := os.WriteFile(filepath.Join(dir, "driversuite.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := goCmd(t.Context(), goBin, dir, nil, "mod", "init", "pgcloak.test/driversuite").CombinedOutput(); err != nil {
		t.Fatalf("go mod init: %v\n%s", err, out)
	}
	args := []string{"get", "-t"}
	for _, pkg := range pgxSuitePackages {
		args = append(args, pkg+"@"+version)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	if out, err := goCmd(ctx, goBin, dir, nil, args...).CombinedOutput(); err != nil {
		pgtest.Missing(t, "missing dependency: go %s (module proxy unreachable?): %v\n%s", strings.Join(args, " "), err, out)
		return ""
	}
	out, err := goCmd(t.Context(), goBin, dir, nil, "list", "-m", "-f", "{{.Version}}", pgxModule).Output()
	if err != nil || strings.TrimSpace(string(out)) != version {
		t.Fatalf("temp module resolves %s to %q (%v), want %s", pgxModule, bytes.TrimSpace(out), err, version)
	}
	return dir
}

// goCmd is the go command in dir with the caller's environment minus
// anything that could point pgx's tests elsewhere (PG*, PGX_TEST_*).
func goCmd(ctx context.Context, goBin, dir string, extraEnv []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") && !strings.HasPrefix(kv, "GOFLAGS=") && !strings.HasPrefix(kv, "GOWORK=") &&
			!strings.HasPrefix(kv, "GOTOOLCHAIN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "GOFLAGS=-mod=mod", "GOWORK=off", "GOTOOLCHAIN=local")
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// setupPgxDatabases creates each database with what pgx's CI creates in
// pgx_test and its tests in these packages rely on.
func setupPgxDatabases(t *testing.T, c *pgtest.Cluster, dbs ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, db := range dbs {
		if err := c.CreateDatabase(ctx, db, "postgres"); err != nil {
			t.Fatal(err)
		}
		conn := connect(t, pgxSuiteDSN(c.Addr(), db), pgx.QueryExecModeSimpleProtocol)
		for _, q := range []string{
			"CREATE EXTENSION hstore",
			"CREATE EXTENSION ltree",
			"CREATE DOMAIN uint64 AS numeric(20,0)",
		} {
			if _, err := conn.Exec(ctx, q); err != nil {
				// Both sides lack it alike; the affected tests fail on both.
				t.Logf("pgx setup in %s: %s: %v", db, q, err)
			}
		}
		if err := conn.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// pgxSuiteDSN is PGX_TEST_DATABASE for addr, built the same way for both
// sides so that no test sees a different connection string shape.
func pgxSuiteDSN(addr, db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable", addr, db)
}

// suiteRun is the parsed `go test -json` output of one run.
type suiteRun struct {
	outcome map[string]string   // "pkg Test/sub" → pass, fail, skip, or run (never finished)
	output  map[string][]string // the same key → its output lines
	other   []string            // package-level output, stderr, non-JSON lines
	exitErr error
}

// pgxSuite is where and how the suite runs.
type pgxSuite struct {
	goBin string
	mod   string // the temp module requiring pgx
	tmp   string // TMPDIR of the runs
}

// run runs the suite with PGX_TEST_DATABASE=dsn; top limits it to those
// "pkg TestName" top-level tests.
func (s *pgxSuite) run(t *testing.T, dsn string, top []string) *suiteRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), pgxRunTimeout)
	defer cancel()
	args := []string{"test", "-count=1", "-json", "-timeout", (pgxRunTimeout - 15*time.Second).String()}
	pkgs := pgxSuitePackages
	if top != nil {
		pkgs = nil
		var names []string
		for _, k := range top {
			pkg, name, _ := strings.Cut(k, " ")
			if !slices.Contains(pkgs, pkg) {
				pkgs = append(pkgs, pkg)
			}
			names = append(names, regexp.QuoteMeta(name))
		}
		// A name matching in the other package as well only runs more tests.
		args = append(args, "-run", "^("+strings.Join(names, "|")+")$")
	}
	args = append(args, pkgs...)
	cmd := goCmd(ctx, s.goBin, s.mod, []string{"PGX_TEST_DATABASE=" + dsn, "TMPDIR=" + s.tmp}, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Some subtest names contain a t.TempDir() path, random per run: name
	// it by its place instead.
	r := parseTestJSON(stdout, regexp.MustCompile(regexp.QuoteMeta(s.tmp)+`/[^/]+`), "$$TMPDIR/*")
	r.exitErr = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("go test of pgx's suite did not finish within %v (PGX_TEST_DATABASE=%s):\n%s",
			pgxRunTimeout, dsn, truncate(r.diagnostics(), 8000))
	}
	var exit *exec.ExitError
	if r.exitErr != nil && !errors.As(r.exitErr, &exit) {
		t.Fatalf("go test: %v", r.exitErr)
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		r.other = append(r.other, strings.Split(s, "\n")...)
	}
	return r
}

// testEvent is one line of `go test -json` (cmd/test2json).
type testEvent struct {
	Action  string
	Package string
	Test    string
	Output  string
}

// parseTestJSON reads `go test -json` output; tmp in test names is
// replaced by repl.
func parseTestJSON(rd io.Reader, tmp *regexp.Regexp, repl string) *suiteRun {
	r := &suiteRun{outcome: map[string]string{}, output: map[string][]string{}}
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ev testEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			r.other = append(r.other, sc.Text())
			continue
		}
		if ev.Test == "" {
			if ev.Output != "" {
				r.other = append(r.other, strings.TrimRight(ev.Output, "\n"))
			}
			continue
		}
		key := ev.Package + " " + tmp.ReplaceAllString(ev.Test, repl)
		switch ev.Action {
		case "run":
			r.outcome[key] = "run"
		case "pass", "fail", "skip":
			r.outcome[key] = ev.Action
		case "output":
			r.output[key] = append(r.output[key], strings.TrimRight(ev.Output, "\n"))
		}
	}
	return r
}

func (r *suiteRun) count(outcome string) int { return len(r.keys(outcome)) }

// keys lists the tests with outcome, sorted.
func (r *suiteRun) keys(outcome string) []string {
	var ks []string
	for k, o := range r.outcome {
		if o == outcome {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}

func (r *suiteRun) summary() string {
	return fmt.Sprintf("%d pass, %d skip, %d fail, %d unfinished",
		r.count("pass"), r.count("skip"), r.count("fail"), r.count("run"))
}

// diagnostics is the package-level output, for a run that went wrong as a
// whole (build failure, panic, timeout).
func (r *suiteRun) diagnostics() string {
	return fmt.Sprintf("%s; exit: %v\n%s", r.summary(), r.exitErr, strings.Join(r.other, "\n"))
}

// diffOutcomes lists the tests ("pkg Test/sub") whose outcome differs
// between a and b; a test missing on one side counts as "absent". With
// top, only tests under those top-level tests are compared.
func diffOutcomes(a, b *suiteRun, top []string) []string {
	var diff []string
	seen := map[string]bool{}
	for _, m := range []map[string]string{a.outcome, b.outcome} {
		for k := range m {
			if seen[k] || (top != nil && !slices.Contains(top, topLevel(k))) {
				continue
			}
			seen[k] = true
			if outcomeOf(a, k) != outcomeOf(b, k) {
				diff = append(diff, k)
			}
		}
	}
	slices.Sort(diff)
	return diff
}

func outcomeOf(r *suiteRun, k string) string {
	if o, ok := r.outcome[k]; ok {
		return o
	}
	return "absent"
}

// topLevel maps "pkg TestX/sub/…" to "pkg TestX".
func topLevel(k string) string {
	pkg, name, _ := strings.Cut(k, " ")
	name, _, _ = strings.Cut(name, "/")
	return pkg + " " + name
}

func topLevelTests(keys []string) []string {
	var top []string
	for _, k := range keys {
		if t := topLevel(k); !slices.Contains(top, t) {
			top = append(top, t)
		}
	}
	return top
}

// report describes each differing test and shows r's (the proxied run's)
// output for it, or direct's when only the direct run failed.
func (r *suiteRun) report(direct *suiteRun, diff []string) string {
	var b strings.Builder
	for i, k := range diff {
		if i == 30 {
			fmt.Fprintf(&b, "… and %d more\n", len(diff)-i)
			break
		}
		fmt.Fprintf(&b, "%s: direct %s, through pgcloak %s\n", k, outcomeOf(direct, k), outcomeOf(r, k))
		src, side := r, "through pgcloak"
		if outcomeOf(r, k) == "pass" && outcomeOf(direct, k) != "pass" {
			src, side = direct, "direct"
		}
		var lines []string
		for _, l := range src.output[k] {
			if s := strings.TrimSpace(l); s != "" && !strings.HasPrefix(s, "=== ") {
				lines = append(lines, "    "+l)
			}
		}
		if n := len(lines); n > 25 {
			lines = append([]string{fmt.Sprintf("    (%d earlier lines left out)", n-25)}, lines[n-25:]...)
		}
		if len(lines) > 0 {
			fmt.Fprintf(&b, "  output %s:\n%s\n", side, strings.Join(lines, "\n"))
		}
	}
	return b.String()
}

// TestPgxSuiteCompare checks the comparison itself on a made-up run.
func TestPgxSuiteCompare(t *testing.T) {
	const tmp = "/tmp/x1"
	parse := func(events ...string) *suiteRun {
		var b strings.Builder
		for _, e := range events {
			b.WriteString(e + "\n")
		}
		b.WriteString("not json\n")
		return parseTestJSON(strings.NewReader(b.String()), regexp.MustCompile(regexp.QuoteMeta(tmp)+`/[^/]+`), "$$TMPDIR/*")
	}
	ev := func(action, test, output string) string {
		b, _ := json.Marshal(testEvent{Action: action, Package: "example.com/p", Test: test, Output: output})
		return string(b)
	}
	a := parse(ev("run", "TestA", ""), ev("pass", "TestA", ""),
		ev("run", "TestB/f='"+tmp+"/TestB123/001/x'", ""), ev("pass", "TestB/f='"+tmp+"/TestB123/001/x'", ""),
		ev("pass", "TestB", ""), ev("skip", "TestC", ""), ev("pass", "TestD/x", ""))
	b := parse(ev("run", "TestA", ""), ev("output", "TestA", "    a_test.go:9: broken\n"), ev("fail", "TestA", ""),
		ev("run", "TestB/f='"+tmp+"/TestB456/001/x'", ""), ev("pass", "TestB/f='"+tmp+"/TestB456/001/x'", ""),
		ev("pass", "TestB", ""), ev("skip", "TestC", ""), ev("run", "TestD/x", ""))
	if got := strings.Join(a.other, "|"); got != "not json" {
		t.Errorf("other = %q", got)
	}
	diff := diffOutcomes(a, b, nil)
	want := []string{"example.com/p TestA", "example.com/p TestD/x"}
	if !slices.Equal(diff, want) {
		t.Fatalf("diff = %q, want %q", diff, want)
	}
	if top := topLevelTests(diff); !slices.Equal(top, []string{"example.com/p TestA", "example.com/p TestD"}) {
		t.Errorf("top = %q", top)
	}
	if d := diffOutcomes(a, b, []string{"example.com/p TestD"}); !slices.Equal(d, want[1:]) {
		t.Errorf("diff under TestD = %q", d)
	}
	if r := b.report(a, diff); !strings.Contains(r, "TestA: direct pass, through pgcloak fail") ||
		!strings.Contains(r, "a_test.go:9: broken") || !strings.Contains(r, "TestD/x: direct pass, through pgcloak run") {
		t.Errorf("report:\n%s", r)
	}
	if a.count("pass") != 4 || b.count("fail") != 1 {
		t.Errorf("a: %s; b: %s", a.summary(), b.summary())
	}
}
