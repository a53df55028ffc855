package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgcloak/pgcloak/bench"
)

func main() {
	os.Exit(run())
}

// confFlag collects repeated -pg-conf key=value flags.
type confFlag map[string]string

func (c confFlag) String() string {
	var parts []string
	for k, v := range c {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func (c confFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	c[strings.TrimSpace(k)] = strings.TrimSpace(v)
	return nil
}

func run() int {
	fs := flag.NewFlagSet("pgbench-compare", flag.ContinueOnError)
	var (
		pgcloak   = fs.String("pgcloak", "", "pgcloak binary to use (default: go build ./cmd/pgcloak)")
		rounds    = fs.Int("rounds", 5, "interleaved rounds; every round runs each target once per workload × clients")
		duration  = fs.Duration("duration", 10*time.Second, "pgbench -T per run (whole seconds)")
		warmup    = fs.Duration("warmup", 3*time.Second, "warm-up per target before the first round, and of the rotation scenario's pgcloak-enc (0 = none)")
		scale     = fs.Int("scale", 10, "pgbench -i scale factor")
		clients   = fs.String("clients", "8,32", "comma-separated client counts (pgbench -c)")
		threads   = fs.Int("threads", 2, "pgbench -j (capped at the client count)")
		workloads = fs.String("workloads", bench.DefaultWorkloads, "comma-separated workloads (see -list-workloads), or none (with -rotation: the rotation scenario alone)")
		targets   = fs.String("targets", strings.Join(bench.AllTargets(), ","), "comma-separated targets")
		out       = fs.String("out", "", "results directory (default: bench/results of the module)")
		label     = fs.String("label", "", "suffix of the result files (default: passthrough, encrypted or passthrough-encrypted after the targets that run, -rotation appended with the rotation scenario; rotation alone)")
		kek       = fs.String("kek", bench.KEKAuto, "KEK of pgcloak-enc: softhsm (throwaway SoftHSM2 token, classification confidential), local (dev key file, classification internal) or auto (softhsm when installed)")
		keep      = fs.Bool("keep-temp", false, "keep the temporary directory (configs, proxy logs)")
		list      = fs.Bool("list-workloads", false, "list the known workloads and exit")
		goals     = fs.Bool("goals", true, "check the targets of issue 3 (pass-through), issue 5 (encrypted ÷ plaintext) and issue 6 (TPS dip during re-encryption) in the report")
		rotation  = fs.Bool("rotation", true, "after the workloads, run the key-rotation scenario on pgcloak-enc: pgbench "+rotationWorkload+
			" with rotate, reencrypt and retire in the middle (issue 6)")
		rotationDuration = fs.Duration("rotation-duration", bench.RotationDuration, "pgbench -T of the rotation scenario; the rotation starts at 20 % "+
			"and the rows added for the re-encryption scale with it (half the run at the default throttle)")
		pgConf = confFlag{"shared_buffers": "512MB"}
	)
	fs.Var(pgConf, "pg-conf", "extra postgresql.conf setting key=value (repeatable)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *list {
		for _, w := range bench.BuiltinWorkloads() {
			args := strings.Join(w.Args, " ")
			if w.Script != "" {
				args += " -f <script>"
			}
			fmt.Printf("%-16s %-24s pgbench %-26s on %s\n", w.Name, w.Title, args, strings.Join(w.Targets, ", "))
		}
		return 0
	}
	cfg := bench.Config{
		Rounds: *rounds, Duration: *duration, Warmup: *warmup, Scale: *scale, Threads: *threads,
		PgcloakBinary: *pgcloak, PGConf: pgConf, KeepTemp: *keep,
		CommandLine: commandLine(), Progress: os.Stderr,
	}
	var err error
	if cfg.Clients, err = parseInts(*clients); err != nil {
		return usage(fs, "-clients: %v", err)
	}
	if strings.TrimSpace(*workloads) != "none" {
		if cfg.Workloads, err = bench.SelectWorkloads(*workloads, bench.BuiltinWorkloads()); err != nil {
			return usage(fs, "-workloads: %v", err)
		}
	}
	if cfg.Targets, err = bench.SelectTargets(*targets); err != nil {
		return usage(fs, "-targets: %v", err)
	}
	if !flagSet(fs, "workloads") {
		// The default list adapts to -targets; a list given explicitly
		// must fit them (Config validation says which does not).
		cfg.Workloads = slices.DeleteFunc(cfg.Workloads, func(w bench.Workload) bool {
			return !slices.ContainsFunc(cfg.Targets, w.RunsOn)
		})
	}
	if *rotation {
		switch {
		case slices.Contains(cfg.Targets, bench.TargetPgcloakEnc):
			if cfg.Rotation, err = rotationConfig(*rotationDuration, *goals); err != nil {
				return usage(fs, "-rotation: %v", err)
			}
		case flagSet(fs, "rotation"):
			return usage(fs, "-rotation: runs on %s, which -targets leaves out", bench.TargetPgcloakEnc)
		}
	}
	if len(cfg.Workloads) == 0 && cfg.Rotation == nil {
		return usage(fs, "-workloads none: nothing to run without the rotation scenario")
	}
	if *goals {
		cfg.Goals = append(bench.Issue3Goals(), bench.EncryptionGoals()...)
	}
	if !slices.Contains([]string{bench.KEKAuto, bench.KEKSoftHSM, bench.KEKLocal}, *kek) {
		return usage(fs, "-kek: %q is not one of %s, %s, %s", *kek, bench.KEKAuto, bench.KEKSoftHSM, bench.KEKLocal)
	}
	if runsOn(cfg, bench.TargetPgcloakEnc) || cfg.Rotation != nil {
		cfg.Setup = bench.EncryptionSetup(bench.EncryptionOpts{KEK: *kek})
	}
	cfg.Label = *label
	if cfg.Label == "" {
		cfg.Label = defaultLabel(cfg)
	}
	if cfg.PgcloakBinary != "" {
		if cfg.PgcloakBinary, err = filepath.Abs(cfg.PgcloakBinary); err != nil {
			return usage(fs, "-pgcloak: %v", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir := *out
	if dir == "" {
		root, err := bench.ModuleRoot(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		dir = filepath.Join(root, "bench", "results")
	}

	rep, runErr := bench.Run(ctx, cfg)
	if runErr != nil {
		fmt.Fprintf(os.Stderr, "pgbench-compare: %v\n", runErr)
	}
	if rep == nil || (len(rep.Runs) == 0 && rep.Rotation == nil) {
		return 1
	}
	if runErr != nil {
		rep.Label += "-incomplete"
	}
	fmt.Println()
	if err := rep.WriteTables(os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "pgbench-compare: %v\n", err)
		return 1
	}
	paths, err := rep.WriteFiles(dir)
	for _, p := range paths {
		fmt.Printf("wrote %s\n", p)
	}
	if err != nil || runErr != nil {
		if err != nil {
			fmt.Fprintf(os.Stderr, "pgbench-compare: %v\n", err)
		}
		return 1
	}
	return 0
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// runsOn reports whether a selected workload runs on the selected target.
func runsOn(cfg bench.Config, target string) bool {
	if !slices.Contains(cfg.Targets, target) {
		return false
	}
	return slices.ContainsFunc(cfg.Workloads, func(w bench.Workload) bool { return w.RunsOn(target) })
}

// rotationWorkload is the workload of the rotation scenario: the
// encrypted read/write script, prepared.
const rotationWorkload = "enc-prepared"

// rotationConfig is the rotation scenario of the command line: the
// encrypted read/write script (prepared) at bench.RotationClients
// clients for d, the rotation at 20 %, the goal of issue 6 with goals.
func rotationConfig(d time.Duration, goals bool) (*bench.RotationConfig, error) {
	ws, err := bench.SelectWorkloads(rotationWorkload, bench.BuiltinWorkloads())
	if err != nil {
		return nil, err
	}
	rc := &bench.RotationConfig{Workload: ws[0], Duration: d, Clients: bench.RotationClients, At: bench.RotationAt,
		Rows: bench.RotationRows(d)}
	if goals {
		rc.MaxDip = bench.Issue6MaxDip
	}
	return rc, nil
}

// defaultLabel names the results after what was compared:
// passthrough, encrypted or passthrough-encrypted, with -rotation
// appended when the rotation scenario runs ("rotation" alone).
func defaultLabel(cfg bench.Config) string {
	var parts []string
	if slices.ContainsFunc(bench.PassthroughTargets(), func(t string) bool { return runsOn(cfg, t) }) {
		parts = append(parts, "passthrough")
	}
	if runsOn(cfg, bench.TargetPgcloakEnc) {
		parts = append(parts, "encrypted")
	}
	if cfg.Rotation != nil {
		parts = append(parts, "rotation")
	}
	if len(parts) == 0 {
		return "passthrough"
	}
	return strings.Join(parts, "-")
}

func usage(fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "pgbench-compare: "+format+"\n", args...)
	fs.Usage()
	return 2
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list")
	}
	return out, nil
}

// commandLine is how this run was started, for the report. Under `go run`
// the program path is a temporary build, so it is written as the go run
// invocation instead.
func commandLine() string {
	prog := os.Args[0]
	if strings.Contains(prog, "go-build") {
		prog = "go run ./bench/cmd/pgbench-compare"
	}
	parts := []string{prog}
	for _, a := range os.Args[1:] {
		if a == "" || strings.ContainsAny(a, " \t\n'\"$\\;&|<>*?()[]{}") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
