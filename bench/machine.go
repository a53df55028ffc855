package bench

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Machine describes where a benchmark ran.
type Machine struct {
	NProc            int    `json:"nproc"`
	CPUModel         string `json:"cpu_model"`
	MemTotal         string `json:"mem_total"`
	Kernel           string `json:"kernel"`
	PostgresVersion  string `json:"postgres_version"`
	PgbenchVersion   string `json:"pgbench_version"`
	PgBouncerVersion string `json:"pgbouncer_version,omitempty"`
	PgcloakVersion   string `json:"pgcloak_version,omitempty"`
	GoVersion        string `json:"go_version"`
	GitCommit        string `json:"git_commit"`
	LoadAvgStart     string `json:"loadavg_start"`
	LoadAvgEnd       string `json:"loadavg_end"`
}

// probeMachine fills in what can be learnt before anything starts.
func probeMachine(ctx context.Context, moduleDir, pgbench string) Machine {
	m := Machine{
		NProc:        runtime.NumCPU(),
		CPUModel:     procField("/proc/cpuinfo", "model name"),
		MemTotal:     procField("/proc/meminfo", "MemTotal"),
		Kernel:       readTrim("/proc/sys/kernel/osrelease"),
		GoVersion:    runtime.Version(),
		GitCommit:    gitCommit(ctx, moduleDir),
		LoadAvgStart: readTrim("/proc/loadavg"),
	}
	m.PgbenchVersion = firstLine(ctx, pgbench, "--version")
	return m
}

// gitCommit is "HASH", "HASH (dirty)", or a note when unknown.
func gitCommit(ctx context.Context, dir string) string {
	if dir == "" {
		return "unknown (not run from the repository)"
	}
	cmd := exec.CommandContext(ctx, "git", "rev-parse", "HEAD")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "unknown (no commit yet)"
	}
	c := strings.TrimSpace(string(out))
	st := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no")
	st.Dir = dir
	if out, err := st.Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		c += " (dirty)"
	}
	return c
}

func firstLine(ctx context.Context, bin string, args ...string) string {
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// procField returns the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown"
}
