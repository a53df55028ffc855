package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/internal/hsmtest"
	"github.com/pgcloak/pgcloak/internal/pgtest"
)

// Key rotation behind live traffic through the real binaries (issue 6):
// `pgcloak serve` with a SoftHSM2-held KEK, `keys rotate`, `pgcloak
// reencrypt` (interrupted with SIGINT and resumed), the refusal to retire
// or delete a version rows still use, crypto-shredding, and the
// compromise drill. Rows are written and read through the proxy; what is
// stored is checked directly in SQL.

// rotStack is the product on one machine, with two encrypted columns:
// accounts.ssn (integer primary key) and ledger.secret (primary key
// region, n).
type rotStack struct {
	c      *pgtest.Cluster
	p      *proxy
	cfg    proxyConfig // to start more proxies on the same key store
	conf   string
	env    []string
	marker string
	appDSN string    // superuser, straight to the application database
	direct *pgx.Conn // superuser, application database
	ks     *pgx.Conn // superuser, key-store database
	ringID uint32    // the confidential key ring
}

func newRotStack(t *testing.T) *rotStack {
	t.Helper()
	c := newCluster(t, pgtest.Opts{Conf: map[string]string{"timezone": "UTC"}})
	tok := hsmtest.New(t, "pgcloak-rot")
	mk := make([]byte, 6)
	_, _ = rand.Read(mk)
	s := &rotStack{c: c, marker: "rotk" + hex.EncodeToString(mk), appDSN: c.DSN("postgres", "", "app")}
	s.env = append(tok.Env(), "PGCLOAK_HSM_PIN="+tok.PIN)
	extra := fmt.Sprintf(`[keystore]
dsn = %q

[kek.hsm]
type = "pkcs11"
module = %q
token_label = %q
pin_env = "PGCLOAK_HSM_PIN"
key_label = "pgcloak-kek"

[classification.confidential]
kek = "hsm"
plaintext_roles = [%q]
on_denied = "error"

[[column]]
table = "accounts"
column = "ssn"
type = "text"
classification = "confidential"

[[column]]
table = "ledger"
column = "secret"
type = "text"
classification = "confidential"
`, c.DSN("postgres", "", "postgres"), tok.Module, tok.Label, roles.scram.name)
	cfg := proxyConfig{Upstream: c.Addr(), Extra: extra, Env: s.env}
	s.conf = filepath.Join(t.TempDir(), "pgcloak.toml")
	if err := os.WriteFile(s.conf, []byte(cfg.toml()), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cli(t, 0, "kek", "create")
	s.direct = connect(t, s.appDSN, pgx.QueryExecModeExec)
	for _, q := range []string{
		`CREATE TABLE accounts (id int PRIMARY KEY, ssn bytea)`,
		`CREATE TABLE ledger (region text, n int, secret bytea, PRIMARY KEY (region, n))`,
		`GRANT ALL ON accounts, ledger TO ` + roles.scram.name,
	} {
		if _, err := s.direct.Exec(t.Context(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	s.cli(t, 0, "schema", "apply", "--yes", "--dsn", s.appDSN)
	s.cfg = cfg
	s.p = startProxy(t, cfg)
	s.ks = connect(t, c.DSN("postgres", "", "postgres"), pgx.QueryExecModeExec)
	if err := s.ks.QueryRow(t.Context(), `SELECT id FROM pgcloak.keyrings WHERE name = 'confidential'`).Scan(&s.ringID); err != nil {
		t.Fatalf("confidential key ring: %v", err)
	}
	return s
}

// command is a pgcloak verb with the stack's configuration and
// environment (without PGCLOAK_SCHEMA_DSN, so that --dsn is explicit).
func (s *rotStack) command(ctx context.Context, args ...string) *exec.Cmd {
	bin := pgcloakBin
	cmd := exec.CommandContext(ctx, bin, append([]string{"--config", s.conf}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PGCLOAK_SCHEMA_DSN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, s.env...)
	return cmd
}

// cli runs a verb and requires exit code want; it returns stdout and
// stderr together, and checks that no test value leaked into them.
func (s *rotStack) cli(t *testing.T, want int, args ...string) string {
	t.Helper()
	needBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := s.command(ctx, args...)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != want {
		t.Fatalf("pgcloak %s: exit %d (%v), want %d\n%s", strings.Join(args, " "), code, err, want, out)
	}
	if s.marker != "" && bytes.Contains(out, []byte(s.marker)) {
		t.Fatalf("pgcloak %s printed a plaintext test value:\n%s", strings.Join(args, " "), out)
	}
	return string(out)
}

func (s *rotStack) dsn() string { return s.p.DSN(roles.scram.name, roles.scram.password, "app") }

func (s *rotStack) ssn(id int) string { return fmt.Sprintf("ssn-%s-%d", s.marker, id) }

// insertAccounts writes accounts from..to through the proxy, 100 rows per
// statement (parameters, multi-row VALUES).
func (s *rotStack) insertAccounts(t *testing.T, app *pgx.Conn, from, to int) {
	t.Helper()
	for lo := from; lo <= to; lo += 100 {
		hi := min(to, lo+99)
		var (
			vals []string
			args []any
		)
		for id := lo; id <= hi; id++ {
			vals = append(vals, fmt.Sprintf("($%d, $%d)", len(args)+1, len(args)+2))
			args = append(args, id, s.ssn(id))
		}
		if _, err := app.Exec(t.Context(), "INSERT INTO accounts (id, ssn) VALUES "+strings.Join(vals, ", "), args...); err != nil {
			t.Fatalf("insert accounts %d..%d through pgcloak: %v", lo, hi, err)
		}
	}
}

// checkAccounts reads every account through the proxy and compares it
// with what was written; it returns how many rows it read.
func (s *rotStack) checkAccounts(t *testing.T, app *pgx.Conn, where string) int {
	t.Helper()
	rows, err := app.Query(t.Context(), "SELECT id, ssn FROM accounts "+where+" ORDER BY id")
	if err != nil {
		t.Fatalf("read accounts through pgcloak: %v", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			id  int
			ssn string
		)
		if err := rows.Scan(&id, &ssn); err != nil {
			t.Fatal(err)
		}
		if ssn != s.ssn(id) {
			t.Errorf("account %d reads %q through pgcloak, want %q", id, ssn, s.ssn(id))
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read accounts through pgcloak: %v", err)
	}
	return n
}

// versionCounts counts the stored values of table.column per key version
// of the confidential ring, straight from PostgreSQL.
func (s *rotStack) versionCounts(t *testing.T, table, column string) map[uint32]int {
	t.Helper()
	rows, err := s.direct.Query(t.Context(), fmt.Sprintf(
		`SELECT substring(%[2]s from 6 for 4), substring(%[2]s from 10 for 4), count(*) FROM %[1]s WHERE %[2]s IS NOT NULL GROUP BY 1, 2`, table, column))
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint32]int{}
	var (
		ring, ver []byte
		n         int
	)
	if _, err := pgx.ForEachRow(rows, []any{&ring, &ver, &n}, func() error {
		if binary.BigEndian.Uint32(ring) != s.ringID {
			t.Errorf("%s.%s: %d value(s) of key ring %x", table, column, n, ring)
		}
		out[binary.BigEndian.Uint32(ver)] += n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// jobRecord is a row of pgcloak.reencrypt_jobs.
type jobRecord struct {
	id       int64
	state    string
	rowsDone int64
	lastPK   []string
}

func (s *rotStack) job(t *testing.T, table, column string) (jobRecord, bool) {
	t.Helper()
	var (
		j    jobRecord
		last []byte
	)
	err := s.ks.QueryRow(t.Context(), `SELECT id, state, rows_done, last_pk FROM pgcloak.reencrypt_jobs
		WHERE table_name = $1 AND column_name = $2 ORDER BY id DESC LIMIT 1`, table, column).Scan(&j.id, &j.state, &j.rowsDone, &last)
	if err == pgx.ErrNoRows {
		return j, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if last != nil {
		if err := json.Unmarshal(last, &j.lastPK); err != nil {
			t.Fatal(err)
		}
	}
	return j, true
}

// readErr reads account id through the proxy until the error matches re
// (the proxies learn of key state changes within about a second).
func (s *rotStack) readErr(t *testing.T, app *pgx.Conn, id int, state string, re *regexp.Regexp) error {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var ssn string
		err := app.QueryRow(t.Context(), "SELECT ssn FROM accounts WHERE id = $1", id).Scan(&ssn)
		if sqlState(err) == state && re.MatchString(err.Error()) {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("reading account %d: %v (value %q), want SQLSTATE %s matching %v", id, err, ssn, state, re)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestRotationReencryptRetireShred(t *testing.T) {
	s := newRotStack(t)
	ctx := t.Context()
	app := connect(t, s.dsn(), pgx.QueryExecModeCacheStatement)
	const accounts = 400
	s.insertAccounts(t, app, 1, accounts)
	for i := range 30 {
		if _, err := app.Exec(ctx, "INSERT INTO ledger (region, n, secret) VALUES ($1, $2, $3)",
			[]string{"eu", "us", "ap"}[i%3], i, fmt.Sprintf("secret-%s-%d", s.marker, i)); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.versionCounts(t, "accounts", "ssn"); got[1] != accounts || len(got) != 1 {
		t.Fatalf("stored before the rotation: %v", got)
	}
	out := s.cli(t, 0, "keys", "rotate", "confidential")
	if !strings.Contains(out, "version 2 is active") {
		t.Fatalf("rotate:\n%s", out)
	}

	t.Run("interrupted and resumed", func(t *testing.T) {
		out := s.cli(t, 0, "reencrypt", "--dsn", s.appDSN, "--dry-run")
		if !regexp.MustCompile(`public\.accounts\.ssn\s+confidential\s+1\s+decrypt_only\s+400\s+re-encrypt`).MatchString(out) {
			t.Fatalf("dry run:\n%s", out)
		}
		// A slow run, stopped with SIGINT after a few batches.
		var buf bytes.Buffer
		cmd := s.command(context.Background(), "reencrypt", "--dsn", s.appDSN, "--rate", "40", "--batch-size", "10")
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			if j, ok := s.job(t, "public.accounts", "ssn"); ok && j.rowsDone >= 30 {
				break
			}
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("no progress within 60s:\n%s", buf.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 130 || !strings.Contains(buf.String(), "interrupted: the re-encryption job is paused") || !strings.Contains(buf.String(), "public.accounts.ssn: paused after ") {
			t.Fatalf("reencrypt after SIGINT: exit %d\n%s", code, buf.String())
		}
		paused, _ := s.job(t, "public.accounts", "ssn")
		if paused.state != "paused" || len(paused.lastPK) != 1 || paused.rowsDone < 30 || paused.rowsDone >= accounts {
			t.Fatalf("job after SIGINT: %+v", paused)
		}
		// Exactly the rows up to the cursor were re-encrypted, in key order.
		var n2, maxV2, minV1 int
		if err := s.direct.QueryRow(ctx, `SELECT count(*) FILTER (WHERE substring(ssn from 10 for 4) = '\x00000002'::bytea),
			coalesce(max(id) FILTER (WHERE substring(ssn from 10 for 4) = '\x00000002'::bytea), 0),
			coalesce(min(id) FILTER (WHERE substring(ssn from 10 for 4) = '\x00000001'::bytea), 0) FROM accounts`).Scan(&n2, &maxV2, &minV1); err != nil {
			t.Fatal(err)
		}
		if int64(n2) != paused.rowsDone || fmt.Sprint(maxV2) != paused.lastPK[0] || minV1 != maxV2+1 {
			t.Fatalf("after SIGINT: %d rows at version 2 up to id %d, first version-1 id %d; job says %d rows, cursor %v",
				n2, maxV2, minV1, paused.rowsDone, paused.lastPK)
		}
		if n := s.checkAccounts(t, app, ""); n != accounts {
			t.Fatalf("read %d accounts mid-way, want %d", n, accounts)
		}

		out = s.cli(t, 0, "reencrypt", "--dsn", s.appDSN, "--rate", "0")
		if !strings.Contains(out, fmt.Sprintf("public.accounts.ssn: done, %d row(s) re-encrypted to confidential version 2 (job %d)", accounts-paused.rowsDone, paused.id)) ||
			!strings.Contains(out, "public.ledger.secret: done, 30 row(s) re-encrypted") {
			t.Fatalf("resumed run:\n%s", out)
		}
		done, _ := s.job(t, "public.accounts", "ssn")
		if done.id != paused.id || done.state != "done" || done.rowsDone != accounts {
			t.Fatalf("job after the resumed run: %+v (paused one was %+v)", done, paused)
		}
		status := s.cli(t, 0, "reencrypt", "status")
		if !regexp.MustCompile(fmt.Sprintf(`%d\s+public\.accounts\.ssn\s+confidential\s+older\s+2\s+done\s+400/400`, paused.id)).MatchString(status) {
			t.Fatalf("status:\n%s", status)
		}
	})

	t.Run("no row of the old version, every row reads back", func(t *testing.T) {
		if got := s.versionCounts(t, "accounts", "ssn"); got[2] != accounts || len(got) != 1 {
			t.Fatalf("accounts by version after re-encryption: %v", got)
		}
		if got := s.versionCounts(t, "ledger", "secret"); got[2] != 30 || len(got) != 1 {
			t.Fatalf("ledger by version after re-encryption: %v", got)
		}
		if n := s.checkAccounts(t, app, ""); n != accounts {
			t.Fatalf("read %d accounts, want %d", n, accounts)
		}
		rows, err := app.Query(ctx, "SELECT region, n, secret FROM ledger ORDER BY n")
		if err != nil {
			t.Fatal(err)
		}
		var (
			region, secret string
			n, count       int
		)
		if _, err := pgx.ForEachRow(rows, []any{&region, &n, &secret}, func() error {
			if want := fmt.Sprintf("secret-%s-%d", s.marker, n); secret != want || region != []string{"eu", "us", "ap"}[n%3] {
				t.Errorf("ledger (%s, %d) reads %q, want %q", region, n, secret, want)
			}
			count++
			return nil
		}); err != nil || count != 30 {
			t.Fatalf("ledger through pgcloak: %d rows, %v", count, err)
		}
	})

	t.Run("retirement refused while rows use the version", func(t *testing.T) {
		// Version 1 has no rows left: it retires, after counting.
		out := s.cli(t, 2, "keys", "set-state", "confidential", "1", "retired", "--yes")
		if !strings.Contains(out, "without counting the rows that still reference it: pass --dsn") {
			t.Fatalf("retire without --dsn:\n%s", out)
		}
		out = s.cli(t, 0, "keys", "set-state", "confidential", "1", "retired", "--yes", "--dsn", s.appDSN)
		if !strings.Contains(out, "no row references confidential version 1 (2 encrypted column(s) checked)") {
			t.Fatalf("retire version 1:\n%s", out)
		}
		// Version 2 holds every row: refused with the counts per column.
		s.cli(t, 0, "keys", "rotate", "confidential")
		out = s.cli(t, 3, "keys", "set-state", "confidential", "2", "retired", "--yes", "--dsn", s.appDSN)
		for _, want := range []string{"public.accounts.ssn: 400 row(s) reference confidential version 2",
			"public.ledger.secret: 30 row(s) reference confidential version 2", "430 row(s) still reference it"} {
			if !strings.Contains(out, want) {
				t.Fatalf("refusal lacks %q:\n%s", want, out)
			}
		}
		var state string
		if err := s.ks.QueryRow(ctx, `SELECT state FROM pgcloak.key_versions WHERE keyring_id = $1 AND version = 2`, s.ringID).Scan(&state); err != nil || state != "decrypt_only" {
			t.Fatalf("version 2 after the refusal: %s %v", state, err)
		}
		s.checkAccounts(t, app, "WHERE id <= 10")

		// --force retires it anyway: loud, audited with the counts, and the
		// rows stop being readable (58000) at once.
		out = s.cli(t, 0, "keys", "set-state", "confidential", "2", "retired", "--yes", "--dsn", s.appDSN, "--force", "--actor", "forcer@test")
		if !strings.Contains(out, "WARNING: --force: retire confidential version 2 although 430 row(s) still reference it") {
			t.Fatalf("forced retirement:\n%s", out)
		}
		var actor, details string
		if err := s.ks.QueryRow(ctx, `SELECT actor, details::text FROM pgcloak.audit_log WHERE event = 'key.forced' ORDER BY seq DESC LIMIT 1`).Scan(&actor, &details); err != nil {
			t.Fatal(err)
		}
		if actor != "forcer@test" || !strings.Contains(details, `"rows: public.accounts.ssn": "400"`) || !strings.Contains(details, `"rows: public.ledger.secret": "30"`) || !strings.Contains(details, `"total": "430"`) {
			t.Fatalf("key.forced entry: %s %s", actor, details)
		}
		s.readErr(t, app, 1, "58000", regexp.MustCompile(`key of encrypted column public\.accounts\.ssn \(key ring \d+, version 2\) is unavailable`))
	})

	t.Run("crypto-shredding", func(t *testing.T) {
		// New rows under the active version 3 stay readable throughout.
		s.insertAccounts(t, app, 1001, 1005)
		out := s.cli(t, 3, "keys", "schedule-deletion", "confidential", "2", "--in", "7d", "--yes", "--dsn", s.appDSN)
		if !strings.Contains(out, "430 row(s) still reference it") {
			t.Fatalf("schedule-deletion refusal:\n%s", out)
		}
		s.cli(t, 0, "keys", "schedule-deletion", "confidential", "2", "--in", "7d", "--yes", "--dsn", s.appDSN, "--force", "--actor", "scheduler@test")
		// The deletion window ends (moved into the past as the superuser,
		// triggers off for this transaction only).
		tx, err := s.ks.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"SET LOCAL session_replication_role = replica",
			fmt.Sprintf("UPDATE pgcloak.key_versions SET deletion_after = now() - interval '1 minute' WHERE keyring_id = %d AND version = 2", s.ringID)} {
			if _, err := tx.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		out = s.cli(t, 0, "keys", "destroy-due", "--yes", "--actor", "shredder@test")
		if !strings.Contains(out, "destroyed confidential version 2") {
			t.Fatalf("destroy-due:\n%s", out)
		}
		var wrapped []byte
		if err := s.ks.QueryRow(ctx, `SELECT wrapped_dek FROM pgcloak.key_versions WHERE keyring_id = $1 AND version = 2`, s.ringID).Scan(&wrapped); err != nil || wrapped != nil {
			t.Fatalf("wrapped DEK after destruction: %x %v", wrapped, err)
		}
		// Through the real proxy: unreadable, 58000, "destroyed".
		err = s.readErr(t, app, 1, "58000", regexp.MustCompile(`key of encrypted column public\.accounts\.ssn \(key ring \d+, version 2\) was destroyed`))
		if strings.Contains(err.Error(), s.marker) {
			t.Fatalf("the error carries a value: %v", err)
		}
		var ledgerSecret string
		err = app.QueryRow(ctx, "SELECT secret FROM ledger WHERE region = 'eu' AND n = 0").Scan(&ledgerSecret)
		if sqlState(err) != "58000" || !strings.Contains(err.Error(), "was destroyed") {
			t.Fatalf("ledger row under the destroyed version: %v", err)
		}
		if n := s.checkAccounts(t, app, "WHERE id > 1000"); n != 5 {
			t.Fatalf("rows of the active version: %d readable, want 5", n)
		}
		// The audit log says when and by whom.
		var (
			at      time.Time
			actor   string
			details string
		)
		if err := s.ks.QueryRow(ctx, `SELECT at, actor, details::text FROM pgcloak.audit_log WHERE event = 'key.destroy' AND keyring = 'confidential' AND version = 2`).Scan(&at, &actor, &details); err != nil {
			t.Fatalf("key.destroy entry: %v", err)
		}
		if actor != "shredder@test" || time.Since(at) > 5*time.Minute || !strings.Contains(details, `"scheduled_by": "scheduler@test"`) {
			t.Fatalf("key.destroy entry: at %v by %q, %s", at, actor, details)
		}
		tail := s.cli(t, 0, "audit", "tail", "-n", "5")
		if !strings.Contains(tail, "key.destroy") || !strings.Contains(tail, "shredder@test") {
			t.Fatalf("audit tail:\n%s", tail)
		}
		if out := s.cli(t, 0, "audit", "verify"); !strings.Contains(out, "audit chain intact:") {
			t.Fatalf("audit verify:\n%s", out)
		}
	})
}

func TestCompromiseDrill(t *testing.T) {
	s := newRotStack(t)
	ctx := t.Context()
	app := connect(t, s.dsn(), pgx.QueryExecModeCacheStatement)
	// A second proxy on the same key store: the drill must reach both.
	p2 := startProxy(t, s.cfg)
	dsn2 := p2.DSN(roles.scram.name, roles.scram.password, "app")
	app2 := connect(t, dsn2, pgx.QueryExecModeCacheStatement)
	s.insertAccounts(t, app, 1, 200) // version 1
	s.cli(t, 0, "keys", "rotate", "confidential")
	s.insertAccounts(t, app, 201, 300) // version 2: active, and compromised

	// Writers keep writing through the proxy during the whole drill (each
	// insert runs to completion, so that every row written is known).
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		mu      sync.Mutex
		written []int
		failed  []error
	)
	for w := range 2 {
		conn := connect(t, []string{s.dsn(), dsn2}[w], pgx.QueryExecModeCacheStatement)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				id := 10000 + w*100000 + i
				_, err := conn.Exec(ctx, "INSERT INTO accounts (id, ssn) VALUES ($1, $2)", id, s.ssn(id))
				mu.Lock()
				if err == nil {
					written = append(written, id)
				} else {
					failed = append(failed, err)
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	out := s.cli(t, 0, "keys", "compromise", "confidential", "2", "--dsn", s.appDSN, "--yes", "--deletion-window", "7d", "--actor", "responder@test")
	stop.Store(true)
	wg.Wait()
	for _, want := range []string{"1/3 confidential version 2 disabled (was active)", "confidential version 3 is now active",
		"2/3 re-encrypting the rows of confidential version 2 to version 3", "3/3 confidential version 2: pending_deletion",
		"compromise response for confidential version 2 complete"} {
		if !strings.Contains(out, want) {
			t.Errorf("compromise output lacks %q:\n%s", want, out)
		}
	}
	if len(failed) > 0 {
		t.Errorf("%d write(s) through pgcloak failed during the drill, first: %v", len(failed), failed[0])
	}
	if len(written) < 20 {
		t.Fatalf("only %d concurrent writes during the drill", len(written))
	}

	// After the command returns, new writes never use the compromised
	// version, through either proxy.
	s.insertAccounts(t, app, 500, 519)
	s.insertAccounts(t, app2, 520, 539)
	var newest map[uint32]int
	rows, err := s.direct.Query(ctx, `SELECT substring(ssn from 10 for 4) FROM accounts WHERE id BETWEEN 500 AND 539`)
	if err != nil {
		t.Fatal(err)
	}
	newest = map[uint32]int{}
	var v []byte
	if _, err := pgx.ForEachRow(rows, []any{&v}, func() error { newest[binary.BigEndian.Uint32(v)]++; return nil }); err != nil {
		t.Fatal(err)
	}
	if newest[3] != 40 || len(newest) != 1 {
		t.Fatalf("writes after the drill stored under versions %v, want all under 3", newest)
	}
	// No row at all is left under version 2, including those the writers
	// sealed before the proxy saw the change; version 1 was not part of
	// the drill.
	got := s.versionCounts(t, "accounts", "ssn")
	if got[2] != 0 || got[1] != 200 || got[3] != 100+len(written)+40 {
		t.Fatalf("accounts by version after the drill: %v (concurrent writes %d)", got, len(written))
	}
	for _, conn := range []*pgx.Conn{app, app2} {
		if n := s.checkAccounts(t, conn, ""); n != 340+len(written) {
			t.Fatalf("read %d accounts through pgcloak, want %d", n, 340+len(written))
		}
	}

	// Deletion scheduled; version 3 active.
	var (
		state, prior string
		window       time.Duration
	)
	if err := s.ks.QueryRow(ctx, `SELECT state, prior_state, deletion_after - state_changed_at FROM pgcloak.key_versions
		WHERE keyring_id = $1 AND version = 2`, s.ringID).Scan(&state, &prior, &window); err != nil {
		t.Fatal(err)
	}
	if state != "pending_deletion" || prior != "disabled" || window != 7*24*time.Hour {
		t.Fatalf("version 2: %s (prior %s, window %v)", state, prior, window)
	}
	// Every step is in the audit log, and the log verifies.
	var events string
	if err := s.ks.QueryRow(ctx, `SELECT string_agg(event || ':' || coalesce(details->>'step', details->>'to', ''), ' ' ORDER BY seq)
		FROM pgcloak.audit_log WHERE actor = 'responder@test'`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`key\.compromise:started key\.state:disabled key\.create: key\.rotate: .*reencrypt\.start: .*key\.disabled_access: .*reencrypt\.finish: .*key\.state:pending_deletion key\.compromise:completed`).MatchString(events) {
		t.Fatalf("audit trail of the drill: %s", events)
	}
	if out := s.cli(t, 0, "audit", "verify"); !strings.Contains(out, "audit chain intact:") {
		t.Fatalf("audit verify:\n%s", out)
	}
	// Running it again changes nothing.
	if out := s.cli(t, 0, "keys", "compromise", "confidential", "2", "--dsn", s.appDSN, "--yes"); !strings.Contains(out, "compromise response was completed") {
		t.Fatalf("rerun:\n%s", out)
	}
}
