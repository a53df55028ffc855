package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/pgcloak/pgcloak/reencrypt"
)

// RotationConfig is the key-rotation scenario (issue 6): pgbench runs a
// workload on a fresh pgcloak-enc for Duration, with --progress 1; at At
// × Duration the harness rotates the key ring of the encrypted columns,
// re-encrypts every row (`pgcloak reencrypt`, default throttle) and
// retires the old version, and records when each step started and ended.
// It runs after the workloads and the probes, on the same cluster.
type RotationConfig struct {
	Workload Workload      `json:"workload"` // run by pgbench during the scenario (enc-prepared)
	Duration time.Duration `json:"duration_ns"`
	Clients  int           `json:"clients"`
	At       float64       `json:"at"` // fraction of Duration at which the rotation starts
	// Rows are added to the encrypted table before the run (Grow) for the
	// re-encryption to do; the workload never touches them. See
	// RotationRows.
	Rows int `json:"rows"`
	// MaxDip is the goal for the TPS dip during the re-encryption (a
	// fraction, Issue6MaxDip); 0 = no goal rows.
	MaxDip float64 `json:"max_dip,omitempty"`
}

// Defaults of the rotation scenario.
const (
	RotationDuration = 80 * time.Second
	RotationClients  = 8
	RotationAt       = 0.2
	// Issue6MaxDip: re-encrypting at the default throttle costs the live
	// traffic at most 10 % of its throughput.
	Issue6MaxDip = 0.10
	// rotationReencryptShare is the share of the run the re-encryption
	// of the added rows should take at the default throttle.
	rotationReencryptShare = 0.5
)

// RotationRows is how many rows to add for a scenario of duration d so
// that `pgcloak reencrypt` at its default throttle (reencrypt.DefaultRate
// rows per second, one encrypted column after the other) takes about half
// of it: 10,000 rows for 80 s. The rows the workload itself reads and
// writes do not count: at thousands of transactions per second the
// workload rewrites all of them under the new version within seconds of
// the rotation, leaving the re-encryption almost nothing to do.
func RotationRows(d time.Duration) int {
	return int(math.Round(d.Seconds() * rotationReencryptShare * reencrypt.DefaultRate / EncColumns))
}

func (c *RotationConfig) validate() error {
	var errs []error
	if c.Duration < 10*time.Second {
		errs = append(errs, fmt.Errorf("rotation: duration must be ≥ 10s"))
	}
	if c.Clients < 1 {
		errs = append(errs, fmt.Errorf("rotation: clients must be ≥ 1"))
	}
	if !(c.At > 0 && c.At < 1) {
		errs = append(errs, fmt.Errorf("rotation: the rotation must start within the run (0 < At < 1)"))
	}
	if c.Rows < 0 {
		errs = append(errs, fmt.Errorf("rotation: rows must be ≥ 0"))
	}
	if c.Workload.Name == "" || !c.Workload.RunsOn(TargetPgcloakEnc) {
		errs = append(errs, fmt.Errorf("rotation: needs a workload that runs on %s", TargetPgcloakEnc))
	}
	return errors.Join(errs...)
}

// rotationPhase is what the scenario gets from the rest of the run.
type rotationPhase struct {
	bin       string // pgcloak executable
	upstream  string // PostgreSQL host:port
	password  string // of the bench role
	directDSN string // bench role, straight to the server
	superDSN  string // for CHECKPOINT
	extra     PgcloakExtra
	loaded    bool // extra.Load already ran (the rounds' pgcloak-enc)
}

// rotation runs the scenario on a fresh pgcloak-enc and stores what it
// recorded in rep.Rotation, also when a step fails.
func (h *harness) rotation(ctx context.Context, rep *Report, ph rotationPhase) error {
	rc := h.cfg.Rotation
	if ph.extra.Keys == nil || ph.extra.Grow == nil {
		return errors.New("bench: rotation: the setup of pgcloak-enc cannot drive a rotation (PgcloakExtra.Keys, Grow)")
	}
	p, err := h.startPgcloak(ctx, "pgcloak-rotation", ph.bin, ph.upstream, ph.extra)
	if err != nil {
		return fmt.Errorf("bench: rotation: %w", err)
	}
	defer p.Stop()
	env := LoadEnv{ProxyDSN: h.dsn(p, ph.password), DirectDSN: ph.directDSN}
	if !ph.loaded && ph.extra.Load != nil {
		h.progressf("rotation: loading data through %s", TargetPgcloakEnc)
		if err := ph.extra.Load(ctx, env); err != nil {
			return fmt.Errorf("bench: rotation: load: %w", err)
		}
	}
	h.progressf("rotation: adding %d rows for the re-encryption through %s", rc.Rows, TargetPgcloakEnc)
	rows, err := ph.extra.Grow(ctx, env, rc.Rows)
	if err != nil {
		return fmt.Errorf("bench: rotation: %w", err)
	}
	// The WAL of the load is flushed now, not during the run.
	if err := execSQL(ctx, ph.superDSN, "CHECKPOINT"); err != nil {
		return fmt.Errorf("bench: rotation: checkpoint: %w", err)
	}

	t := Target{Name: TargetPgcloakEnc, Host: p.Host, Port: p.Port, PID: p.PID}
	if h.cfg.Warmup > 0 {
		h.progressf("rotation: warming up %s for %s (%s)", t, h.cfg.Warmup, rc.Workload.Title)
		if _, _, err := h.runPgbench(ctx, h.rotationSpec(t, h.cfg.Warmup), ""); err != nil {
			return fmt.Errorf("bench: rotation: warm-up: %w", err)
		}
	}
	res := &RotationResult{Workload: rc.Workload.Name, Clients: rc.Clients, Threads: min(h.cfg.Threads, rc.Clients),
		Duration: rc.Duration, RotateAt: time.Duration(rc.At * float64(rc.Duration)),
		Keyring: ph.extra.Keys.Ring, TableRows: rows, AddedRows: rc.Rows, MaxDip: rc.MaxDip}
	rep.Rotation = res
	h.progressf("rotation: %s for %s at %d clients; rotate at %s, then reencrypt and retire",
		rc.Workload.Name, rc.Duration, rc.Clients, res.RotateAt)
	runErr := h.runRotation(ctx, t, res, ph.extra.Keys)

	p.Stop()
	if st, ok := p.StoppedStats(); ok {
		res.ProxyStats = &st
		h.checkEncStats(st, "the rotation scenario")
	} else if runErr == nil {
		return fmt.Errorf("bench: rotation: %s logged no \"stopped\" line with its counters:\n%s", TargetPgcloakEnc, p.logTail())
	}
	if runErr != nil {
		return fmt.Errorf("bench: rotation: %w", runErr)
	}
	a := res.Analysis()
	re, _, _ := res.ReencryptedRows()
	h.progressf("rotation: TPS median %s before, %s during re-encryption (%d rows, %s s), %s after; dip %s; %d failed, %d clients aborted",
		fnum(a.Before.MedianTPS, 0), fnum(a.During.MedianTPS, 0), re, fnum(a.ReencryptSeconds, 1), fnum(a.After.MedianTPS, 0),
		fpct(a.Dip), res.Failed, res.Aborted)
	return nil
}

// rotationSpec is the scenario's pgbench run against t for d.
func (h *harness) rotationSpec(t Target, d time.Duration) RunSpec {
	rc := h.cfg.Rotation
	return RunSpec{Target: t, Workload: rc.Workload, Clients: rc.Clients, Threads: h.cfg.Threads, Duration: d,
		DB: benchDB, User: benchUser, ScriptFile: h.scripts[rc.Workload.Name]}
}

// pgbenchResult is what a pgbench process left behind.
type pgbenchResult struct {
	stdout, stderr string
	err            error
}

// runRotation runs pgbench with progress reports and, behind it, the
// rotation, the re-encryption and the retirement; then parses the run.
func (h *harness) runRotation(ctx context.Context, t Target, res *RotationResult, keys *KeyCLI) error {
	rc := h.cfg.Rotation
	spec := h.rotationSpec(t, rc.Duration)
	spec.Progress = true
	done := make(chan pgbenchResult, 1)
	start := time.Now()
	go func() {
		stdout, stderr, _, err := h.execCPU(ctx, 2*rc.Duration+2*time.Minute, spec.Args(), "")
		done <- pgbenchResult{stdout, stderr, err}
	}()
	since := func() float64 { return time.Since(start).Seconds() }

	var stepErr error
	var pb *pgbenchResult
	select {
	case <-time.After(res.RotateAt):
	case r := <-done:
		pb = &r // pgbench ended before the rotation was due: nothing to do but report it
	case <-ctx.Done():
		stepErr = ctx.Err()
	}
	if pb == nil && stepErr == nil {
		stepErr = h.rotationSteps(ctx, res, keys, since)
	}
	if pb == nil {
		r := <-done
		pb = &r
	}

	out, perr := ParseOutput(pb.stdout)
	res.Aborted = AbortedClients(pb.stderr)
	switch {
	case perr != nil:
		return errors.Join(stepErr, fmt.Errorf("pgbench: %v: %w\n%s", pb.err, perr, lastLines(pb.stderr, 10)))
	case pb.err != nil && res.Aborted == 0:
		// Aborted clients make pgbench exit non-zero; that is a result
		// (reported), anything else is a failure of the run.
		return errors.Join(stepErr, fmt.Errorf("pgbench: %w\n%s", pb.err, lastLines(pb.stderr, 10)))
	}
	res.TPS, res.Processed, res.Failed = out.TPS, out.Processed, out.Failed
	lines, err := ParseProgress(pb.stderr)
	if err != nil {
		return errors.Join(stepErr, err)
	}
	res.Series = TimelineFromProgress(lines, float64(start.UnixMicro())/1e6, 1)
	if len(res.Series) == 0 {
		return errors.Join(stepErr, fmt.Errorf("pgbench printed no progress line:\n%s", lastLines(pb.stderr, 10)))
	}
	if res.Aborted > 0 {
		h.notes = append(h.notes, fmt.Sprintf("rotation scenario: pgbench aborted %d client(s):\n%s", res.Aborted,
			indent(lastLines(pb.stderr, 5))))
	}
	if e, ok := res.Event(EventRetire); ok && e.End > rc.Duration.Seconds() {
		h.notes = append(h.notes, fmt.Sprintf("rotation scenario: the retirement ended %.1f s into a %s run: "+
			"no traffic after it to compare with", e.End, rc.Duration))
	}
	return stepErr
}

// rotationSteps rotates, re-encrypts and retires, one after the other,
// recording each step in res.Events; the first failure stops them.
func (h *harness) rotationSteps(ctx context.Context, res *RotationResult, keys *KeyCLI, since func() float64) error {
	step := func(name string, f func() error) error {
		e := RotationEvent{Name: name, Start: since()}
		err := f()
		e.End = since()
		if err != nil {
			e.Error = err.Error()
		}
		res.Events = append(res.Events, e)
		failed := ""
		if err != nil {
			failed = "  FAILED"
		}
		h.progressf("rotation: %-9s %6.1f s → %6.1f s%s", name, e.Start, e.End, failed)
		return err
	}
	err := step(EventRotate, func() error {
		v, err := keys.Rotate(ctx, "bench rotation scenario")
		if err == nil {
			res.FromVersion, res.ToVersion = v-1, v
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := step(EventReencrypt, func() error {
		var err error
		res.Columns, err = keys.Reencrypt(ctx)
		return err
	}); err != nil {
		return err
	}
	return step(EventRetire, func() error { return keys.Retire(ctx, res.FromVersion) })
}

// indent prefixes every line of s with four spaces (a Markdown list
// item's continuation).
func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
