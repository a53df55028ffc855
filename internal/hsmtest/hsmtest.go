package hsmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// ConfEnv is the environment variable SoftHSM2 reads its configuration
// path from.
const ConfEnv = "SOFTHSM2_CONF"

// ErrNoModule is returned by FindModule when no SoftHSM2 PKCS#11 module is
// installed.
var ErrNoModule = errors.New("hsmtest: SoftHSM2 module libsofthsm2.so not found")

// Token is an initialised SoftHSM2 token. PIN and SOPIN are random and
// live only as long as the token; never log them.
type Token struct {
	Module   string // path of libsofthsm2.so
	ConfPath string // softhsm2.conf; point SOFTHSM2_CONF here
	Label    string
	PIN      string // user PIN
	SOPIN    string // security officer PIN
	Dir      string // temp dir holding the conf and the token files
}

// moduleCandidates are the standard SoftHSM2 module locations of
// Debian/Ubuntu (multiarch and not), Fedora/RHEL and source installs.
var moduleCandidates = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/*/softhsm/libsofthsm2.so",
	"/usr/lib64/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/lib/*/pkcs11/libsofthsm2.so",
	"/usr/lib/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// FindModule returns the path of the SoftHSM2 PKCS#11 module.
func FindModule() (string, error) {
	for _, pattern := range moduleCandidates {
		m, _ := filepath.Glob(pattern)
		sort.Strings(m)
		for _, p := range m {
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	return "", ErrNoModule
}

// NewToken writes a softhsm2.conf into a fresh temp dir and initialises a
// token labelled label in the first free slot, with random PINs.
func NewToken(ctx context.Context, label string) (*Token, error) {
	module, err := FindModule()
	if err != nil {
		return nil, err
	}
	util, err := pgtest.FindBinary("softhsm2-util")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hsmtest-")
	if err != nil {
		return nil, fmt.Errorf("hsmtest: %w", err)
	}
	t := &Token{Module: module, ConfPath: filepath.Join(dir, "softhsm2.conf"), Label: label, Dir: dir}
	if t.PIN, err = randomPIN(); err != nil {
		_ = t.Close()
		return nil, err
	}
	if t.SOPIN, err = randomPIN(); err != nil {
		_ = t.Close()
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("hsmtest: %w", err)
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(t.ConfPath, []byte(conf), 0o600); err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("hsmtest: %w", err)
	}
	cmd := exec.CommandContext(ctx, util, "--init-token", "--free", "--label", label, "--pin", t.PIN, "--so-pin", t.SOPIN)
	cmd.Env = append(os.Environ(), t.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		// The output names neither PIN; the command line (not shown) does.
		_ = t.Close()
		return nil, fmt.Errorf("hsmtest: softhsm2-util --init-token: %w: %s", err, out)
	}
	return t, nil
}

// Env returns the environment entries a process needs to see this token.
func (t *Token) Env() []string { return []string{ConfEnv + "=" + t.ConfPath} }

// Close removes the token and its configuration.
func (t *Token) Close() error {
	if err := os.RemoveAll(t.Dir); err != nil {
		return fmt.Errorf("hsmtest: %w", err)
	}
	return nil
}

// setenver is implemented by *testing.T and *testing.B.
type setenver interface{ Setenv(key, value string) }

// New creates a token for a test, removes it in tb.Cleanup and points
// SOFTHSM2_CONF at it for the rest of the test (through tb.Setenv when tb
// has it, so it cannot be used in parallel tests). It skips (or fails
// with PGCLOAK_REQUIRE_INTEGRATION=1) when SoftHSM2 is not installed.
func New(tb pgtest.TB, label string) *Token {
	tb.Helper()
	if _, err := FindModule(); err != nil {
		pgtest.Missing(tb, "missing dependency: %v", err)
		return nil
	}
	pgtest.Require(tb, "softhsm2-util")
	t, err := NewToken(context.Background(), label)
	if err != nil {
		tb.Fatalf("hsmtest: %v", err)
		return nil
	}
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Logf("hsmtest: %v", err)
		}
	})
	if s, ok := tb.(setenver); ok {
		s.Setenv(ConfEnv, t.ConfPath)
		return t
	}
	old, had := os.LookupEnv(ConfEnv)
	if err := os.Setenv(ConfEnv, t.ConfPath); err != nil {
		tb.Fatalf("hsmtest: %v", err)
	}
	tb.Cleanup(func() {
		if had {
			_ = os.Setenv(ConfEnv, old)
		} else {
			_ = os.Unsetenv(ConfEnv)
		}
	})
	return t
}

func randomPIN() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("hsmtest: random PIN: %w", err)
	}
	return hex.EncodeToString(b), nil
}
