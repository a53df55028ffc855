package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// measure runs one workload against one target and collects everything.
func (h *harness) measure(ctx context.Context, t Target, w Workload, clients int) (Measurement, error) {
	h.seq++
	dir := filepath.Join(h.tmp, "runs", fmt.Sprintf("%04d", h.seq))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Measurement{}, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)
	spec := RunSpec{Target: t, Workload: w, Clients: clients, Threads: h.cfg.Threads, Duration: h.cfg.Duration,
		DB: benchDB, User: benchUser, ScriptFile: h.scripts[w.Name], LogPrefix: filepath.Join(dir, "tx")}

	var cpu0, cpu1, srv0, srv1 time.Duration
	var err error
	kids0, srvOK := 0, h.serverPID != 0
	if srvOK {
		srv0, kids0, err = h.clock.TreeCPU(h.serverPID)
		srvOK = err == nil
	}
	if t.PID != 0 {
		if cpu0, err = h.clock.ProcessCPU(t.PID); err != nil {
			return Measurement{}, err
		}
	}
	start := time.Now()
	out, clientCPU, err := h.runPgbench(ctx, spec, dir)
	wall := time.Since(start)
	if err != nil {
		return Measurement{}, err
	}
	if t.PID != 0 {
		if cpu1, err = h.clock.ProcessCPU(t.PID); err != nil {
			return Measurement{}, fmt.Errorf("%s is gone: %w", t.Name, err)
		}
	}
	if srvOK {
		srv1, srvOK = h.serverCPUSettled(kids0)
	}
	var log TxLog
	n, err := log.AddFiles(spec.LogPrefix)
	if err != nil {
		return Measurement{}, err
	}
	if n == 0 {
		return Measurement{}, fmt.Errorf("pgbench wrote no transaction log")
	}
	lat := log.Summary()
	if lat.Count != out.Processed || lat.Failed != out.Failed {
		h.notes = append(h.notes, fmt.Sprintf("%s %s c=%d: pgbench reported %d ok / %d failed transactions but logged %d / %d",
			t.Name, w.Name, clients, out.Processed, out.Failed, lat.Count, lat.Failed))
	}
	return Measurement{Target: t.Name, Workload: w.Name, Clients: clients,
		TPS: out.TPS, Processed: out.Processed, Failed: out.Failed,
		LatAvgMs: lat.MeanMs, LatP50Ms: lat.P50Ms, LatP99Ms: lat.P99Ms, LatMaxMs: lat.MaxMs,
		PgbenchLatAvgMs: out.LatencyAvgMs, InitialConnMs: out.InitialConnMs, Logged: lat.Count,
		ProxyCPU: cpu1 - cpu0, ProxyMeasured: t.PID != 0, ClientCPU: clientCPU, Wall: wall,
		ServerCPU: srv1 - srv0, ServerMeasured: srvOK,
		Timeline: lat.Timeline}, nil
}

// serverCPUSettled reads the server's CPU once the backends of the run
// have exited (at most kids children, waiting up to 2 s: a backend
// outliving that, e.g. an autovacuum worker, is counted as it stands).
func (h *harness) serverCPUSettled(kids int) (time.Duration, bool) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		cpu, n, err := h.clock.TreeCPU(h.serverPID)
		if err != nil {
			return 0, false
		}
		if n <= kids || time.Now().After(deadline) {
			return cpu, true
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runPgbench runs one pgbench and parses its summary.
func (h *harness) runPgbench(ctx context.Context, spec RunSpec, dir string) (Output, time.Duration, error) {
	stdout, stderr, cpu, err := h.execCPU(ctx, 2*spec.Duration+2*time.Minute, spec.Args(), dir)
	if err != nil {
		return Output{}, 0, fmt.Errorf("pgbench: %w\n%s", err, lastLines(stderr, 10))
	}
	out, err := ParseOutput(stdout)
	if err != nil {
		return Output{}, 0, fmt.Errorf("%w\n%s", err, lastLines(stderr, 10))
	}
	return out, cpu, nil
}

// noteProcess records whether a proxy's CPU was fully visible: a single
// process (no children, whose time /proc/PID/stat would not include).
func (h *harness) noteProcess(t Target) {
	st, err := ReadProcStat(t.PID)
	if err != nil {
		h.notes = append(h.notes, fmt.Sprintf("%s (pid %d): cannot read /proc stat at the end: %v", t.Name, t.PID, err))
		return
	}
	kids, err := ChildPIDs(t.PID)
	switch {
	case err != nil:
		h.notes = append(h.notes, fmt.Sprintf("%s (pid %d): cannot list child processes: %v", t.Name, t.PID, err))
	case len(kids) == 0:
		busy := "?"
		if ths, err := ThreadStats(t.PID); err == nil {
			n := 0
			for _, th := range ths {
				if th.UTime+th.STime > 0 {
					n++
				}
			}
			busy = fmt.Sprint(n)
		}
		h.notes = append(h.notes, fmt.Sprintf("%s ran as one process (pid %d, %d thread(s), %s of them used CPU; no child processes): "+
			"its /proc/PID/stat CPU time covers all its work.", t.Name, t.PID, st.Threads, busy))
	default:
		h.notes = append(h.notes, fmt.Sprintf("%s (pid %d) has child processes %v: their CPU time is NOT counted.", t.Name, t.PID, kids))
	}
}
