package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// Names of the role and database the benchmark creates in its cluster.
const (
	benchUser = "bench"
	benchDB   = "bench"
)

// Config is one benchmark.
type Config struct {
	Rounds    int
	Duration  time.Duration // per pgbench run (-T, whole seconds)
	Warmup    time.Duration // per target before the first round; 0 = none
	Scale     int           // pgbench -i -s
	Clients   []int         // client counts (-c)
	Threads   int           // pgbench -j (capped at the client count)
	Workloads []Workload
	Targets   []string // subset of AllTargets()

	PgcloakBinary string            // "" = go build ./cmd/pgcloak of the current module
	PGConf        map[string]string // extra postgresql.conf settings (override the defaults)
	Goals         []Goal
	// Setup, when set, runs once the cluster holds the pgbench tables and
	// the workloads' setup SQL has run, before PgBouncer and pgcloak start.
	// Encrypted workloads use it (EncryptionSetup) to create their tables
	// and KEK and to configure pgcloak-enc; workloads that run on
	// TargetPgcloakEnc need it.
	Setup func(ctx context.Context, env SetupEnv) (PgcloakExtra, error)
	// Rotation, when set, runs the key-rotation scenario after the
	// workloads (on a fresh pgcloak-enc; needs Setup).
	Rotation *RotationConfig

	Label       string    // results file suffix, e.g. "passthrough"
	CommandLine string    // recorded in the report
	Progress    io.Writer // one line per run; nil = silent
	KeepTemp    bool      // keep the temporary directory (logs, configs)
}

func (c *Config) validate() error {
	var errs []error
	if c.Rounds < 1 {
		errs = append(errs, fmt.Errorf("rounds must be ≥ 1"))
	}
	if c.Duration < time.Second {
		errs = append(errs, fmt.Errorf("duration must be ≥ 1s"))
	}
	if c.Scale < 1 {
		errs = append(errs, fmt.Errorf("scale must be ≥ 1"))
	}
	if c.Threads < 1 {
		errs = append(errs, fmt.Errorf("threads must be ≥ 1"))
	}
	if len(c.Clients) == 0 || slices.Min(c.Clients) < 1 {
		errs = append(errs, fmt.Errorf("client counts must be ≥ 1"))
	}
	switch {
	case len(c.Workloads) == 0 && c.Rotation == nil:
		errs = append(errs, fmt.Errorf("need at least one workload or the rotation scenario"))
	case len(c.Workloads) > 0 && len(c.Targets) == 0:
		errs = append(errs, fmt.Errorf("need at least one target"))
	}
	for _, w := range c.Workloads {
		if len(c.Targets) > 0 && !slices.ContainsFunc(c.Targets, w.RunsOn) {
			errs = append(errs, fmt.Errorf("workload %s runs on none of the targets %s", w.Name, strings.Join(c.Targets, ", ")))
		}
	}
	if slices.Contains(c.usedTargets(), TargetPgcloakEnc) && c.Setup == nil {
		errs = append(errs, fmt.Errorf("workloads on %s need Config.Setup (EncryptionSetup)", TargetPgcloakEnc))
	}
	if c.Rotation != nil {
		if err := c.Rotation.validate(); err != nil {
			errs = append(errs, err)
		}
		if c.Setup == nil {
			errs = append(errs, fmt.Errorf("the rotation scenario needs Config.Setup (EncryptionSetup)"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// usedTargets are the selected targets at least one workload runs on, in
// presentation order: the only ones started.
func (c *Config) usedTargets() []string {
	var out []string
	for _, t := range c.Targets {
		if slices.ContainsFunc(c.Workloads, func(w Workload) bool { return w.RunsOn(t) }) {
			out = append(out, t)
		}
	}
	return out
}

// pgConf is the PostgreSQL configuration: enough connections for every
// target's clients at once (PgBouncer keeps its server connections open
// between runs) plus the caller's overrides.
func (c *Config) pgConf() map[string]string {
	maxc := slices.Max(c.Clients)
	conf := map[string]string{"max_connections": strconv.Itoa(max(100, 3*maxc+30))}
	for k, v := range c.PGConf {
		conf[k] = v
	}
	return conf
}

// SetupEnv is what Config.Setup gets to work with.
type SetupEnv struct {
	Cluster  *pgtest.Cluster
	Dir      string // private temporary directory, removed at the end
	User     string // the role pgbench connects as (md5 password)
	Password string
	DB       string // the database holding the pgbench tables
	// PgcloakBinary is the pgcloak executable the targets run ("" when
	// no pgcloak target is selected), for CLI verbs such as `kek create`.
	PgcloakBinary string
}

// PgcloakExtra is what Config.Setup returns: the configuration of
// pgcloak-enc on top of the pass-through one, and hooks around it. The
// pass-through pgcloak never gets it.
type PgcloakExtra struct {
	TOML string   // appended to pgcloak.toml ([keystore], [kek.*], [[column]] …)
	Env  []string // added to pgcloak's environment (e.g. the variable named by pin_env)
	// Load, when set, runs once pgcloak-enc listens, before the warm-up:
	// it writes the data that must go through pgcloak (encrypted columns
	// then hold real envelopes).
	Load func(ctx context.Context, env LoadEnv) error
	// Close, when set, runs at the very end (e.g. removes an HSM token),
	// also when Setup returned an error along with it.
	Close func() error
	// Description says how pgcloak-enc is set up (KEK, columns, data); it
	// goes into the report.
	Description string
	// Keys and Grow, when both set, make the rotation scenario possible:
	// Keys drives the key ring of the encrypted columns through the
	// pgcloak CLI; Grow writes n more rows through pgcloak-enc that no
	// workload touches (so the re-encryption has them to do) and returns
	// how many rows the encrypted table then holds.
	Keys *KeyCLI
	Grow func(ctx context.Context, env LoadEnv, n int) (rows int64, err error)
}

// LoadEnv is what PgcloakExtra.Load gets: connection strings (as the
// bench role, password included) through pgcloak-enc and straight to the
// server.
type LoadEnv struct {
	ProxyDSN  string
	DirectDSN string
}

// harness holds what the runs share.
type harness struct {
	cfg     Config
	tmp     string
	pgbench string
	env     []string
	clock   CPUClock
	// serverPID is PostgreSQL's postmaster, whose process tree is the
	// server CPU of a run; 0 when unknown.
	serverPID int
	scripts   map[string]string // workload name → script file
	seq       int
	notes     []string
}

// Run executes the benchmark. On a failure after some runs it returns the
// partial report together with the error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	rep := &Report{Label: cfg.Label, Started: time.Now(), CommandLine: cfg.CommandLine, Goals: cfg.Goals,
		Settings: Settings{Rounds: cfg.Rounds, Duration: cfg.Duration, Warmup: cfg.Warmup, Scale: cfg.Scale,
			Clients: cfg.Clients, Threads: cfg.Threads, Workloads: cfg.Workloads, Targets: cfg.usedTargets(), PGConf: cfg.pgConf(),
			Rotation: cfg.Rotation}}
	err := run(ctx, cfg, rep)
	rep.Elapsed = time.Since(rep.Started)
	rep.Machine.LoadAvgEnd = readTrim("/proc/loadavg")
	if err != nil && (len(rep.Runs) > 0 || rep.Rotation != nil) {
		rep.Notes = append(rep.Notes, "INCOMPLETE: the benchmark stopped early: "+err.Error())
	}
	return rep, err
}

func run(ctx context.Context, cfg Config, rep *Report) error {
	pgbench, err := pgtest.FindBinary("pgbench")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	want := func(t string) bool { return slices.Contains(rep.Settings.Targets, t) }
	var bouncerBin string
	if want(TargetPgBouncer) {
		if bouncerBin, err = FindPgBouncer(); err != nil {
			return err
		}
	}
	moduleDir, modErr := ModuleRoot(ctx)
	rep.Machine = probeMachine(ctx, moduleDir, pgbench)

	tmp, err := os.MkdirTemp("", "pgcloak-bench-")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	// PgBouncer runs as postgres when we are root: it must traverse tmp
	// (not list it) to reach its own 0700 directory.
	if err := os.Chmod(tmp, 0o711); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if cfg.KeepTemp {
		rep.Notes = append(rep.Notes, "temporary files kept in "+tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	h := &harness{cfg: cfg, tmp: tmp, pgbench: pgbench, clock: NewCPUClock(), scripts: map[string]string{}}
	defer func() { rep.Notes = append(rep.Notes, h.notes...) }()

	pgcloakBin := cfg.PgcloakBinary
	if (want(TargetPgcloak) || want(TargetPgcloakEnc) || cfg.Rotation != nil) && pgcloakBin == "" {
		if modErr != nil {
			return modErr
		}
		h.progressf("building ./cmd/pgcloak")
		if pgcloakBin, err = BuildPgcloak(ctx, moduleDir, filepath.Join(tmp, "bin")); err != nil {
			return err
		}
	}

	h.progressf("starting PostgreSQL")
	cluster, err := pgtest.Start(ctx, pgtest.Opts{Conf: rep.Settings.PGConf})
	if err != nil {
		return fmt.Errorf("bench: start PostgreSQL: %w", err)
	}
	defer cluster.Stop()
	password, err := randomHex(16)
	if err != nil {
		return err
	}
	if err := cluster.AddUser(ctx, benchUser, password, "md5"); err != nil {
		return fmt.Errorf("bench: create role: %w", err)
	}
	if err := cluster.CreateDatabase(ctx, benchDB, benchUser); err != nil {
		return fmt.Errorf("bench: create database: %w", err)
	}
	h.env = append(cleanEnv(os.Environ()), "PGPASSWORD="+password, "PGSSLMODE=disable", "PGGSSENCMODE=disable")
	if h.serverPID, err = postmasterPID(cluster.DataDir()); err != nil {
		h.notes = append(h.notes, "server CPU not measured: "+err.Error())
	}
	rep.Machine.PostgresVersion, rep.Notes = serverInfo(ctx, cluster.SuperDSN(), rep.Notes)

	direct := Target{Name: TargetDirect, Host: "127.0.0.1", Port: cluster.Port()}
	directDSN := cluster.DSN(benchUser, password, benchDB)
	if err := h.initData(ctx, direct, directDSN); err != nil {
		return err
	}
	var extra PgcloakExtra
	if cfg.Setup != nil {
		h.progressf("setting up encryption")
		dir := filepath.Join(tmp, "setup")
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		env := SetupEnv{Cluster: cluster, Dir: dir, User: benchUser, Password: password, DB: benchDB, PgcloakBinary: pgcloakBin}
		extra, err = cfg.Setup(ctx, env)
		if extra.Close != nil {
			defer func() {
				if err := extra.Close(); err != nil {
					h.notes = append(h.notes, "setup clean-up: "+err.Error())
				}
			}()
		}
		if err != nil {
			return fmt.Errorf("bench: setup: %w", err)
		}
		rep.Settings.Encryption = extra.Description
	}

	var targets []Target
	if want(TargetDirect) {
		targets = append(targets, direct)
	}
	if want(TargetPgBouncer) {
		b, err := h.startPgBouncer(ctx, bouncerBin, cluster.Port(), password)
		if err != nil {
			return err
		}
		defer b.Stop()
		rep.Machine.PgBouncerVersion = b.Version
		targets = append(targets, Target{Name: TargetPgBouncer, Host: "127.0.0.1", Port: b.Port, PID: b.PID})
	}
	if want(TargetPgcloak) {
		p, err := h.startPgcloak(ctx, "pgcloak", pgcloakBin, cluster.Addr(), PgcloakExtra{})
		if err != nil {
			return err
		}
		defer p.Stop()
		rep.Machine.PgcloakVersion = p.Version
		targets = append(targets, Target{Name: TargetPgcloak, Host: p.Host, Port: p.Port, PID: p.PID})
	}
	var enc *Pgcloak
	if want(TargetPgcloakEnc) {
		if enc, err = h.startPgcloak(ctx, "pgcloak-enc", pgcloakBin, cluster.Addr(), extra); err != nil {
			return err
		}
		defer enc.Stop()
		rep.Machine.PgcloakVersion = enc.Version
		targets = append(targets, Target{Name: TargetPgcloakEnc, Host: enc.Host, Port: enc.Port, PID: enc.PID})
		if extra.Load != nil {
			h.progressf("loading data through %s", TargetPgcloakEnc)
			if err := extra.Load(ctx, LoadEnv{ProxyDSN: h.dsn(enc, password), DirectDSN: directDSN}); err != nil {
				return fmt.Errorf("bench: load through %s: %w", TargetPgcloakEnc, err)
			}
		}
	}

	if cfg.Warmup > 0 {
		for _, t := range targets {
			warm := warmupWorkload(t.Name, cfg.Workloads)
			h.progressf("warming up %s for %s (%s)", t, cfg.Warmup, warm.Title)
			spec := RunSpec{Target: t, Workload: warm, Clients: slices.Max(cfg.Clients), Threads: cfg.Threads,
				Duration: cfg.Warmup, DB: benchDB, User: benchUser, ScriptFile: h.scripts[warm.Name]}
			if _, _, err := h.runPgbench(ctx, spec, ""); err != nil {
				return fmt.Errorf("bench: warm-up %s: %w", t.Name, err)
			}
		}
	}

	for r := 0; r < cfg.Rounds; r++ {
		for _, s := range Schedule(cfg.Workloads, cfg.Clients, targets, r) {
			w, c, t := s.Workload, s.Clients, s.Target
			run, err := h.measure(ctx, t, w, c)
			if err != nil {
				return fmt.Errorf("bench: round %d, %s, %d clients, %s: %w", r+1, w.Name, c, t.Name, err)
			}
			run.Round, run.Position = r+1, s.Position
			rep.Runs = append(rep.Runs, run)
			h.progressf("round %d/%d  %-16s c=%-3d %-11s %9.0f tps  avg %7.3f ms  p99 %7.3f ms  cpu %6s µs/txn  failed %d",
				r+1, cfg.Rounds, w.Name, c, t.Name, run.TPS, run.LatAvgMs, run.LatP99Ms, fnum(run.CPUPerTxnUs(), 1), run.Failed)
		}
	}
	for _, t := range targets {
		if t.PID != 0 {
			h.noteProcess(t)
		}
	}
	if enc != nil {
		enc.Stop()
		st, ok := enc.StoppedStats()
		if !ok {
			return fmt.Errorf("bench: %s logged no \"stopped\" line with its counters:\n%s", TargetPgcloakEnc, enc.logTail())
		}
		rep.EncStats = &st
		h.checkEncStats(st, "the whole run")
		if err := h.probe(ctx, rep, pgcloakBin, cluster.Addr(), extra); err != nil {
			return err
		}
	}
	if cfg.Rotation != nil {
		return h.rotation(ctx, rep, rotationPhase{bin: pgcloakBin, upstream: cluster.Addr(), password: password,
			directDSN: directDSN, superDSN: cluster.SuperDSN(), extra: extra, loaded: enc != nil})
	}
	return nil
}

// startPgcloak starts a pgcloak named name (its directory under tmp) with
// the pass-through configuration plus extra.
func (h *harness) startPgcloak(ctx context.Context, name, bin, upstream string, extra PgcloakExtra) (*Pgcloak, error) {
	dir := filepath.Join(h.tmp, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return StartPgcloak(ctx, PgcloakOpts{Binary: bin, Dir: dir, Upstream: upstream, ExtraTOML: extra.TOML, Env: extra.Env})
}

// dsn connects to p as the bench role.
func (h *harness) dsn(p *Pgcloak, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(benchUser, password), Host: p.Addr, Path: "/" + benchDB, RawQuery: "sslmode=disable"}
	return u.String()
}

// warmupWorkload is what warms target up before the first round:
// select-only (prepared) on the pgbench tables, except on a target where
// only custom-script workloads run (pgcloak-enc), which warms up with the
// first of them, so that its tables, keys and plans are warm too.
func warmupWorkload(target string, ws []Workload) Workload {
	sel := Workload{Name: "warmup", Title: "select-only, prepared", Args: []string{"-S", "-M", "prepared"}, NoVacuum: true}
	var first *Workload
	for i, w := range ws {
		if !w.RunsOn(target) {
			continue
		}
		if w.Script == "" {
			return sel
		}
		if first == nil {
			first = &ws[i]
		}
	}
	if first == nil {
		return sel
	}
	return *first
}

// initData runs `pgbench -i` (unless only the rotation scenario runs: it
// has its own tables) and the workloads' setup SQL, directly.
func (h *harness) initData(ctx context.Context, direct Target, dsn string) error {
	if len(h.cfg.Workloads) > 0 {
		h.progressf("pgbench -i -s %d", h.cfg.Scale)
		args := []string{"-i", "-s", strconv.Itoa(h.cfg.Scale), "-h", direct.Host, "-p", strconv.Itoa(direct.Port), "-U", benchUser, benchDB}
		if _, stderr, err := h.exec(ctx, 10*time.Minute, args); err != nil {
			return fmt.Errorf("bench: pgbench -i: %w\n%s", err, lastLines(stderr, 10))
		}
	}
	ws := h.cfg.Workloads
	if rc := h.cfg.Rotation; rc != nil && !slices.ContainsFunc(ws, func(w Workload) bool { return w.Name == rc.Workload.Name }) {
		ws = append(slices.Clip(ws), rc.Workload)
	}
	for _, w := range ws {
		if w.Script != "" {
			f := filepath.Join(h.tmp, "script-"+w.Name+".sql")
			if err := os.WriteFile(f, []byte(w.Script), 0o600); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			h.scripts[w.Name] = f
		}
		if w.SetupSQL == "" {
			continue
		}
		conn, err := pgconn.Connect(ctx, dsn)
		if err != nil {
			return fmt.Errorf("bench: setup of %s: %w", w.Name, err)
		}
		_, err = conn.Exec(ctx, w.SetupSQL).ReadAll()
		conn.Close(ctx)
		if err != nil {
			return fmt.Errorf("bench: setup of %s: %w", w.Name, err)
		}
	}
	return nil
}

func (h *harness) startPgBouncer(ctx context.Context, bin string, pgPort int, password string) (*PgBouncer, error) {
	dir := filepath.Join(h.tmp, "pgbouncer")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	maxc := slices.Max(h.cfg.Clients)
	return StartPgBouncer(ctx, PgBouncerOpts{Binary: bin, Dir: dir, Port: port, UpstreamHost: "127.0.0.1", UpstreamPort: pgPort,
		DB: benchDB, User: benchUser, Password: password, PoolSize: maxc + 5, MaxClients: 2*maxc + 20})
}

func (h *harness) progressf(format string, args ...any) {
	if h.cfg.Progress != nil {
		fmt.Fprintf(h.cfg.Progress, format+"\n", args...)
	}
}

// serverInfo returns the server version and appends the settings that
// matter for reading the numbers to notes.
func serverInfo(ctx context.Context, dsn string, notes []string) (string, []string) {
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return "unknown", append(notes, "cannot query server settings: "+err.Error())
	}
	defer conn.Close(ctx)
	res, err := conn.Exec(ctx, `SELECT current_setting('server_version'), string_agg(n || '=' || current_setting(n), ', ' ORDER BY n)
		FROM unnest(ARRAY['max_connections','shared_buffers','fsync','synchronous_commit','full_page_writes','wal_level']) n`).ReadAll()
	if err != nil || len(res) != 1 || len(res[0].Rows) != 1 {
		return "unknown", append(notes, fmt.Sprintf("cannot query server settings: %v", err))
	}
	row := res[0].Rows[0]
	return string(row[0]), append(notes, "PostgreSQL settings in effect: "+string(row[1]))
}

// postmasterPID reads the first line of postmaster.pid.
func postmasterPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("bench: postmaster.pid: bad pid %q", line)
	}
	return pid, nil
}

// cleanEnv drops libpq variables so only the harness decides where pgbench
// connects and how.
func cleanEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PG") {
			out = append(out, kv)
		}
	}
	return out
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	return hex.EncodeToString(b), nil
}
