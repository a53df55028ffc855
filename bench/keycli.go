package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// KeyCLI runs pgcloak's key-management verbs with the configuration of
// pgcloak-enc (its key store and KEK), as an operator would during a
// rotation.
type KeyCLI struct {
	Binary string   // the pgcloak executable
	Config string   // the configuration file (same key store, KEK and columns as pgcloak-enc)
	Env    []string // added to the environment (the variable named by pin_env)
	Ring   string   // the key ring of the encrypted columns
	// AppDSN is the database holding the encrypted tables, as a role that
	// may update them (--dsn of reencrypt and set-state). It is never
	// printed.
	AppDSN string
}

// Timeouts of the verbs: the re-encryption is throttled and can take as
// long as the table needs.
const (
	keyVerbTimeout   = 2 * time.Minute
	reencryptTimeout = 30 * time.Minute
)

// Rotate runs `pgcloak keys rotate RING --reason REASON --json` and returns
// the version it made active.
func (k *KeyCLI) Rotate(ctx context.Context, reason string) (uint32, error) {
	out, err := k.run(ctx, keyVerbTimeout, "keys", "rotate", k.Ring, "--reason", reason, "--json")
	if err != nil {
		return 0, err
	}
	return parseRotateJSON(out)
}

// Reencrypt runs `pgcloak reencrypt --dsn APP_DSN --json` at the default
// throttle and returns what it did per column. A run that leaves rows
// behind exits non-zero: that is an error, with the columns it reported.
func (k *KeyCLI) Reencrypt(ctx context.Context) ([]ReencryptColumn, error) {
	out, err := k.run(ctx, reencryptTimeout, "reencrypt", "--dsn", k.AppDSN, "--json")
	cols, perr := ParseReencryptJSON(out)
	if err != nil {
		return cols, err
	}
	return cols, perr
}

// Retire runs `pgcloak keys set-state RING VERSION retired --dsn APP_DSN
// --yes`, which refuses while any row still references the version.
func (k *KeyCLI) Retire(ctx context.Context, version uint32) error {
	_, err := k.run(ctx, keyVerbTimeout, "keys", "set-state", k.Ring, strconv.FormatUint(uint64(version), 10), "retired",
		"--dsn", k.AppDSN, "--yes", "--reason", "bench rotation scenario")
	return err
}

// run runs `pgcloak --config CONFIG ARGS…` and returns its stdout; on
// failure the error carries the end of its output (stdout and stderr; the
// DSN is an argument, which pgcloak never prints).
func (k *KeyCLI) run(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.Binary, append([]string{"--config", k.Config}, args...)...)
	cmd.Env = append(os.Environ(), k.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("killed after %s: %w", timeout, err)
		}
		return stdout.String(), fmt.Errorf("bench: pgcloak %s %s: %w\n%s", args[0], args[1], err,
			strings.TrimSpace(lastLines(stdout.String(), 10)+"\n"+lastLines(stderr.String(), 10)))
	}
	return stdout.String(), nil
}

// parseRotateJSON reads the version of `pgcloak keys rotate --json`.
func parseRotateJSON(out string) (uint32, error) {
	var v struct {
		Keyring string `json:"keyring"`
		Version uint32 `json:"version"`
		State   string `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return 0, fmt.Errorf("bench: pgcloak keys rotate --json: %w", err)
	}
	if v.Version < 2 || v.State != "active" {
		return 0, fmt.Errorf("bench: pgcloak keys rotate --json: version %d is %q, want an active version ≥ 2", v.Version, v.State)
	}
	return v.Version, nil
}

// ParseReencryptJSON reads the per-column report of `pgcloak reencrypt
// --json`.
func ParseReencryptJSON(out string) ([]ReencryptColumn, error) {
	var cols []ReencryptColumn
	if err := json.Unmarshal([]byte(out), &cols); err != nil {
		return nil, fmt.Errorf("bench: pgcloak reencrypt --json: %w", err)
	}
	for _, c := range cols {
		if c.Column == "" || c.Outcome == "" {
			return nil, fmt.Errorf("bench: pgcloak reencrypt --json: a column without name or outcome: %+v", c)
		}
	}
	return cols, nil
}
