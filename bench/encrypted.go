package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/internal/hsmtest"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// The tables of the encrypted workloads. Both have the same columns and
// the same rows; only EncTable's email and balance_secret are configured
// as encrypted (so they are bytea holding envelopes after `pgcloak schema
// apply`).
const (
	EncTable     = "enc_accounts"
	PlainTable   = "plain_accounts"
	AccountsRows = 10000 // rows of each table; AccountsScript picks among them
	// EncColumns is the number of encrypted columns of EncTable; `pgcloak
	// reencrypt` works through them one after the other.
	EncColumns = 2
)

// accountsDDL creates table with the logical column types; schema apply
// converts the encrypted ones of EncTable to bytea.
func accountsDDL(table string) string {
	return fmt.Sprintf(`CREATE TABLE %s (aid int PRIMARY KEY, abalance int NOT NULL, email text, balance_secret int4, filler text)`, table)
}

// KEK choices of EncryptionOpts.
const (
	KEKAuto    = "auto"    // SoftHSM2 when installed, else local
	KEKSoftHSM = "softhsm" // a throwaway SoftHSM2 token; classification confidential
	KEKLocal   = "local"   // a development key file; classification internal
)

// EncryptionOpts configures EncryptionSetup.
type EncryptionOpts struct {
	KEK string // KEKAuto, KEKSoftHSM or KEKLocal; "" = KEKAuto
}

// EncryptionSetup returns the Config.Setup of the encrypted workloads. It
// creates EncTable and PlainTable, a KEK (on a throwaway SoftHSM2 token, or
// a local key file), and the pgcloak-enc configuration: a key store in the
// cluster's postgres database, EncTable.email (text) and
// EncTable.balance_secret (int4) encrypted, the bench role allowed
// plaintext and every other role refused (on_denied = "error"). It runs
// `pgcloak kek create` and `pgcloak schema apply --yes`, so the columns
// are bytea with their leak-guard CHECK constraints, as in production.
// Once pgcloak-enc listens, Load writes AccountsRows identical rows into
// both tables through it (so EncTable holds real envelopes) and checks
// that they read back.
func EncryptionSetup(o EncryptionOpts) func(context.Context, SetupEnv) (PgcloakExtra, error) {
	return func(ctx context.Context, env SetupEnv) (PgcloakExtra, error) {
		return setupEncryption(ctx, o, env)
	}
}

func setupEncryption(ctx context.Context, o EncryptionOpts, env SetupEnv) (PgcloakExtra, error) {
	var extra PgcloakExtra
	if env.PgcloakBinary == "" {
		return extra, errors.New("encryption: no pgcloak binary")
	}
	ownerDSN := env.Cluster.DSN(env.User, env.Password, env.DB)
	if err := execSQL(ctx, ownerDSN, accountsDDL(EncTable), accountsDDL(PlainTable)); err != nil {
		return extra, fmt.Errorf("encryption: create tables: %w", err)
	}

	kek := o.KEK
	if kek == "" || kek == KEKAuto {
		kek = KEKLocal
		if _, err := hsmtest.FindModule(); err == nil {
			if _, err := pgtest.FindBinary("softhsm2-util"); err == nil {
				kek = KEKSoftHSM
			}
		}
	}
	var kekTOML, class, kekDesc string
	switch kek {
	case KEKSoftHSM:
		tok, err := hsmtest.NewToken(ctx, "pgcloak-bench")
		if err != nil {
			return extra, fmt.Errorf("encryption: %w", err)
		}
		// Returned with any later error too: the harness always closes.
		extra.Close = tok.Close
		// The PIN reaches pgcloak through its environment only.
		extra.Env = append(tok.Env(), hsmPINEnv+"="+tok.PIN)
		kekTOML = pkcs11KEKTOML(tok.Module, tok.Label)
		class = "confidential"
		kekDesc = "SoftHSM2 token (PKCS#11, " + softhsmVersion(ctx) + "), classification `confidential`"
	case KEKLocal:
		kekTOML = localKEKTOML(filepath.Join(env.Dir, "kek.key"))
		class = "internal"
		kekDesc = "local key file (development KEK), classification `internal`"
	default:
		return extra, fmt.Errorf("encryption: unknown KEK choice %q (want %s, %s or %s)", o.KEK, KEKAuto, KEKSoftHSM, KEKLocal)
	}

	extra.TOML = encryptionTOML(env.Cluster.SuperDSN(), kekTOML, class, env.User)

	// The CLI verbs read the same configuration pgcloak-enc gets.
	conf := filepath.Join(env.Dir, "pgcloak.toml")
	if err := os.WriteFile(conf, []byte(pgcloakConfig(PgcloakOpts{Upstream: env.Cluster.Addr(), ExtraTOML: extra.TOML})), 0o600); err != nil {
		return extra, fmt.Errorf("encryption: %w", err)
	}
	if err := runPgcloakCLI(ctx, env.PgcloakBinary, conf, extra.Env, "kek", "create"); err != nil {
		return extra, err
	}
	if err := runPgcloakCLI(ctx, env.PgcloakBinary, conf, extra.Env,
		"schema", "apply", "--yes", "--dsn", env.Cluster.DSN("postgres", "", env.DB)); err != nil {
		return extra, err
	}
	if err := checkGuards(ctx, ownerDSN); err != nil {
		return extra, err
	}
	extra.Load = loadAccounts
	extra.Grow = growAccounts
	extra.Keys = &KeyCLI{Binary: env.PgcloakBinary, Config: conf, Env: extra.Env, Ring: class,
		AppDSN: env.Cluster.DSN("postgres", "", env.DB)}
	extra.Description = fmt.Sprintf("KEK: %s; encrypted columns `%s.email` (text) and `%s.balance_secret` (int4), bytea with "+
		"the CHECK constraints of `pgcloak schema apply`; role %s allowed plaintext; %d rows in %s and in %s (the same values), "+
		"written through pgcloak-enc; key store in the same cluster (database postgres)",
		kekDesc, EncTable, EncTable, env.User, AccountsRows, EncTable, PlainTable)
	return extra, nil
}

// hsmPINEnv carries the SoftHSM2 token's PIN to pgcloak-enc.
const hsmPINEnv = "PGCLOAK_BENCH_HSM_PIN"

// pkcs11KEKTOML is the [kek.bench] section of a key on a PKCS#11 token.
func pkcs11KEKTOML(module, tokenLabel string) string {
	return fmt.Sprintf("[kek.bench]\ntype = \"pkcs11\"\nmodule = %s\ntoken_label = %s\npin_env = %q\nkey_label = \"pgcloak-bench-kek\"\n",
		strconv.Quote(module), strconv.Quote(tokenLabel), hsmPINEnv)
}

// localKEKTOML is the [kek.bench] section of a development key file.
func localKEKTOML(keyFile string) string {
	return fmt.Sprintf("[kek.bench]\ntype = \"local\"\nkey_file = %s\n", strconv.Quote(keyFile))
}

// encryptionTOML is pgcloak-enc's configuration on top of the pass-through
// one: the key store, the KEK section [kek.bench], the classification
// (only user sees plaintext; anyone else gets an error) and the two
// encrypted columns of EncTable.
func encryptionTOML(keystoreDSN, kekTOML, class, user string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[keystore]\ndsn = %s\n\n%s\n", strconv.Quote(keystoreDSN), kekTOML)
	fmt.Fprintf(&b, "[classification.%s]\nkek = \"bench\"\nplaintext_roles = [%s]\non_denied = \"error\"\n", class, strconv.Quote(user))
	for _, c := range [][2]string{{"email", "text"}, {"balance_secret", "int4"}} {
		fmt.Fprintf(&b, "\n[[column]]\ntable = \"public.%s\"\ncolumn = %q\ntype = %q\nclassification = %q\n", EncTable, c[0], c[1], class)
	}
	return b.String()
}

// runPgcloakCLI runs `pgcloak --config conf ARGS…` and returns its output
// in the error when it fails.
func runPgcloakCLI(ctx context.Context, bin, conf string, env []string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--config", conf}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("encryption: pgcloak %s %s: %w\n%s", args[0], args[1], err, lastLines(string(out), 15))
	}
	return nil
}

// checkGuards makes sure schema apply did its job: both encrypted columns
// are bytea and guarded, the plaintext table is untouched.
func checkGuards(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("encryption: %w", err)
	}
	defer conn.Close(ctx)
	var byteaCols, guards int
	err = conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND data_type = 'bytea'
			AND table_name IN ($1, $2)),
		(SELECT count(*) FROM pg_constraint WHERE contype = 'c' AND conrelid IN ($1::regclass, $2::regclass))`,
		EncTable, PlainTable).Scan(&byteaCols, &guards)
	if err != nil {
		return fmt.Errorf("encryption: inspect the tables: %w", err)
	}
	if byteaCols != 2 || guards != 2 {
		return fmt.Errorf("encryption: after schema apply: %d bytea columns and %d CHECK constraints in %s and %s, want 2 and 2 (all in %s)",
			byteaCols, guards, EncTable, PlainTable, EncTable)
	}
	return nil
}

// accountsRow is row i (1-based) of both tables.
func accountsRow(i int) (email string, balance int32, filler string) {
	return fmt.Sprintf("user%d@example.com", i), int32(i * 37 % 1000003), strings.Repeat("x", 84)
}

// loadAccounts writes the rows of both tables through pgcloak-enc (pgx,
// prepared INSERTs in pipelined batches), then checks that the encrypted
// table holds only envelopes and that a sample of rows reads back equal
// through the proxy, and vacuums and analyses both tables directly.
func loadAccounts(ctx context.Context, env LoadEnv) error {
	conn, err := pgx.Connect(ctx, env.ProxyDSN)
	if err != nil {
		return fmt.Errorf("encryption: connect through pgcloak-enc: %w", err)
	}
	defer conn.Close(ctx)
	for _, table := range []string{EncTable, PlainTable} {
		if err := insertAccounts(ctx, conn, table, 1, AccountsRows); err != nil {
			return err
		}
	}
	for _, i := range []int{1, AccountsRows / 2, AccountsRows} {
		for _, table := range []string{EncTable, PlainTable} {
			var email string
			var bal int32
			err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT email, balance_secret FROM %s WHERE aid = $1`, table), i).Scan(&email, &bal)
			wantEmail, wantBal, _ := accountsRow(i)
			if err != nil {
				return fmt.Errorf("encryption: read %s row %d back through pgcloak-enc: %w", table, i, err)
			}
			if email != wantEmail || bal != wantBal {
				return fmt.Errorf("encryption: %s row %d reads back different values through pgcloak-enc", table, i)
			}
		}
	}

	direct, err := pgx.Connect(ctx, env.DirectDSN)
	if err != nil {
		return fmt.Errorf("encryption: %w", err)
	}
	defer direct.Close(ctx)
	var rows, envelopes int
	err = direct.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), count(*) FILTER (WHERE substring(email from 1 for 3) = '\xc10a01'::bytea
		AND substring(balance_secret from 1 for 3) = '\xc10a01'::bytea) FROM %s`, EncTable)).Scan(&rows, &envelopes)
	if err != nil {
		return fmt.Errorf("encryption: inspect %s: %w", EncTable, err)
	}
	if rows != AccountsRows || envelopes != rows {
		return fmt.Errorf("encryption: %s has %d rows, %d of them with two envelopes; want %d", EncTable, rows, envelopes, AccountsRows)
	}
	for _, table := range []string{EncTable, PlainTable} {
		if _, err := direct.Exec(ctx, "VACUUM ANALYZE "+table); err != nil {
			return fmt.Errorf("encryption: vacuum %s: %w", table, err)
		}
	}
	return nil
}

// insertAccounts writes rows lo…hi (accountsRow) into table with
// prepared INSERTs in pipelined batches.
func insertAccounts(ctx context.Context, conn *pgx.Conn, table string, lo, hi int) error {
	const batchRows = 500
	ins := fmt.Sprintf(`INSERT INTO %s (aid, abalance, email, balance_secret, filler) VALUES ($1, 0, $2, $3, $4)`, table)
	for first := lo; first <= hi; first += batchRows {
		var batch pgx.Batch
		for i := first; i < first+batchRows && i <= hi; i++ {
			email, bal, filler := accountsRow(i)
			batch.Queue(ins, i, email, bal, filler)
		}
		if err := conn.SendBatch(ctx, &batch).Close(); err != nil {
			return fmt.Errorf("encryption: load %s through pgcloak-enc: %w", table, err)
		}
	}
	return nil
}

// growAccounts is PgcloakExtra.Grow: it appends n rows to EncTable through
// pgcloak-enc, after the highest aid (AccountsScript never picks them),
// checks that the table holds only envelopes, vacuums and analyses it
// directly and returns its row count.
func growAccounts(ctx context.Context, env LoadEnv, n int) (int64, error) {
	conn, err := pgx.Connect(ctx, env.ProxyDSN)
	if err != nil {
		return 0, fmt.Errorf("encryption: connect through pgcloak-enc: %w", err)
	}
	defer conn.Close(ctx)
	var top int
	if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT coalesce(max(aid), 0) FROM %s`, EncTable)).Scan(&top); err != nil {
		return 0, fmt.Errorf("encryption: %s: %w", EncTable, err)
	}
	if err := insertAccounts(ctx, conn, EncTable, top+1, top+n); err != nil {
		return 0, err
	}
	direct, err := pgx.Connect(ctx, env.DirectDSN)
	if err != nil {
		return 0, fmt.Errorf("encryption: %w", err)
	}
	defer direct.Close(ctx)
	var rows, envelopes int64
	err = direct.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), count(*) FILTER (WHERE substring(email from 1 for 3) = '\xc10a01'::bytea
		AND substring(balance_secret from 1 for 3) = '\xc10a01'::bytea) FROM %s`, EncTable)).Scan(&rows, &envelopes)
	if err != nil {
		return 0, fmt.Errorf("encryption: inspect %s: %w", EncTable, err)
	}
	if envelopes != rows || rows < int64(top+n) {
		return 0, fmt.Errorf("encryption: %s has %d rows, %d of them with two envelopes; want at least %d, all envelopes", EncTable, rows, envelopes, top+n)
	}
	if _, err := direct.Exec(ctx, "VACUUM ANALYZE "+EncTable); err != nil {
		return 0, fmt.Errorf("encryption: vacuum %s: %w", EncTable, err)
	}
	return rows, nil
}

// execSQL runs statements, in order, on one connection.
func execSQL(ctx context.Context, dsn string, stmts ...string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// softhsmVersion is "SoftHSM2 2.6.1"-ish, or "version unknown".
func softhsmVersion(ctx context.Context) string {
	util, err := pgtest.FindBinary("softhsm2-util")
	if err != nil {
		return "version unknown"
	}
	v := firstLine(ctx, util, "--version")
	if v == "unknown" {
		return "version unknown"
	}
	return "softhsm2-util " + v
}
