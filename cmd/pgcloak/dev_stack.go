package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm/pkcs11"
	"github.com/pgcloak/pgcloak/internal/hsmtest"
	"github.com/pgcloak/pgcloak/internal/pgtest"
	"github.com/pgcloak/pgcloak/keyring"
)

// devPINEnv names the variable that hands the throwaway token's PIN to the
// configuration, as an operator's environment would.
const devPINEnv = "PGCLOAK_HSM_PIN"

// devStack is the encryption side of `pgcloak dev`: a SoftHSM2 token with a
// non-extractable KEK, a configuration file that classifies two columns of
// the table patients as confidential, the key store in the throwaway
// cluster, and the keys, catalog and auditor the proxy needs. It is built
// with the same code paths as `pgcloak serve`.
type devStack struct {
	dir     string // temp dir holding the configuration
	conf    string
	cfg     *config.Config
	tok     *hsmtest.Token
	store   *keyring.Store
	enc     *encryption
	closers []func()
}

// devColumns is the table the dev stack encrypts and its configuration.
const (
	devTableDDL = `CREATE TABLE patients (
		id         int PRIMARY KEY,
		name       text NOT NULL,
		ssn        bytea,
		birth_date bytea)`
	devColumnsTOML = `[[column]]
table = "patients"
column = "ssn"
type = "text"
classification = "confidential"

[[column]]
table = "patients"
column = "birth_date"
type = "date"
classification = "confidential"
`
)

func startDevStack(ctx context.Context, g *globals, cluster *pgtest.Cluster, log zerolog.Logger) (_ *devStack, err error) {
	s := &devStack{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	tok, err := hsmtest.NewToken(ctx, "pgcloak-dev")
	if err != nil {
		if errors.Is(err, hsmtest.ErrNoModule) {
			return nil, fmt.Errorf("dev: %w (install softhsm2: make deps)", err)
		}
		return nil, fmt.Errorf("dev: SoftHSM2 token: %w", err)
	}
	s.tok = tok
	s.closers = append(s.closers, func() { _ = tok.Close() })
	// The module reads its configuration from the environment when it is
	// loaded, in this process; the PIN reaches the configuration the way an
	// operator's would.
	if err := os.Setenv(hsmtest.ConfEnv, tok.ConfPath); err != nil {
		return nil, err
	}
	if err := os.Setenv(devPINEnv, tok.PIN); err != nil {
		return nil, err
	}
	popts := pkcs11.Opts{Module: tok.Module, TokenLabel: tok.Label, PIN: secret.New([]byte(tok.PIN)), KeyLabel: "pgcloak-kek"}
	defer popts.PIN.Zero()
	t, err := pkcs11.OpenToken(ctx, popts)
	if err != nil {
		return nil, fmt.Errorf("dev: open token: %w", err)
	}
	_, err = t.CreateKey(ctx, popts.KeyLabel)
	t.Close()
	if err != nil {
		return nil, fmt.Errorf("dev: create KEK: %w", err)
	}

	if s.dir, err = os.MkdirTemp("", "pgcloak-dev-"); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { _ = os.RemoveAll(s.dir) })
	s.conf = filepath.Join(s.dir, "pgcloak.toml")
	text := fmt.Sprintf(`# Written by pgcloak dev; removed when it stops.
[upstream]
addr = %s
tls = "disable"

[keystore]
dsn = %s

[kek.hsm]
type = "pkcs11"
module = %s
token_label = %s
pin_env = %q
key_label = "pgcloak-kek"

[classification.confidential]
kek = "hsm"
plaintext_roles = [%q]
on_denied = "mask"

%s`, strconv.Quote(cluster.Addr()), strconv.Quote(cluster.DSN("postgres", "", devDatabase)),
		strconv.Quote(tok.Module), strconv.Quote(tok.Label), devPINEnv, devRole, devColumnsTOML)
	if err := os.WriteFile(s.conf, []byte(text), 0o600); err != nil {
		return nil, err
	}
	if s.cfg, err = g.loadConfig(s.conf, false); err != nil {
		return nil, err
	}

	// The table, owned by app, with the leak guard of `schema apply`.
	conn, err := pgx.Connect(ctx, cluster.DSN("postgres", "", devDatabase))
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	stmts := []string{devTableDDL, "ALTER TABLE patients OWNER TO " + devRole}
	for _, c := range encryptedColumns(s.cfg) {
		q := pgx.Identifier{c.Column}.Sanitize()
		stmts = append(stmts, fmt.Sprintf("ALTER TABLE patients ADD CONSTRAINT %s CHECK (%s)",
			pgx.Identifier{guardName(c.Column)}.Sanitize(), envelopePredicate(q)))
	}
	for _, q := range stmts {
		if _, err := conn.Exec(ctx, q); err != nil {
			return nil, fmt.Errorf("dev: %w", err)
		}
	}

	store, closeStore, err := prepareKeyStore(ctx, g, s.cfg, log)
	if err != nil {
		return nil, err
	}
	s.store = store
	s.closers = append(s.closers, closeStore)
	if s.enc, err = startEncryption(ctx, s.cfg, store, log); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.enc.close)
	return s, nil
}

// close releases everything in reverse order of creation.
func (s *devStack) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}
