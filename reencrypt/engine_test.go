package reencrypt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/catalog"
	"github.com/pgcloak/pgcloak/crypto/envelope"
	"github.com/pgcloak/pgcloak/keyring"
)

const ctxAcct = "public.accounts.ssn"

// accounts creates public.accounts (id int primary key, ssn bytea, note
// bytea) with n rows sealed under confidential version v, plus a NULL row
// (id 0). Plaintexts are "ssn-<id>".
func (e *env) accounts(n int, v uint32) {
	e.t.Helper()
	e.exec("CREATE TABLE accounts (id int PRIMARY KEY, ssn bytea, note bytea)")
	e.exec("INSERT INTO accounts (id) VALUES (0)")
	e.addAccounts(1, n, v)
}

func (e *env) addAccounts(from, to int, v uint32) {
	e.t.Helper()
	k := e.key("confidential", v)
	for id := from; id <= to; id++ {
		val, err := k.Seal(nil, nil, ctxAcct, fmt.Appendf(nil, "ssn-%d", id))
		if err != nil {
			e.t.Fatal(err)
		}
		e.exec("INSERT INTO accounts (id, ssn) VALUES ($1, $2)", id, val)
	}
}

// checkAccounts requires every row 1..n to decrypt to "ssn-<id>" under
// version want.
func (e *env) checkAccounts(n int, want uint32) {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, "SELECT id, ssn FROM accounts WHERE id > 0 ORDER BY id")
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var (
			id  int
			val []byte
		)
		if err := rows.Scan(&id, &val); err != nil {
			e.t.Fatal(err)
		}
		plain, h := e.open(ctxAcct, val)
		if plain != fmt.Sprintf("ssn-%d", id) || h.KeyVersion != want || h.KeyringID != e.ringID {
			e.t.Errorf("row %d: %q under ring %d version %d, want ssn-%d under %d/%d", id, plain, h.KeyringID, h.KeyVersion, id, e.ringID, want)
		}
		seen++
	}
	if seen != n {
		e.t.Fatalf("%d rows, want %d", seen, n)
	}
}

func TestRoutineReencryption(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	e.accounts(40, 1)
	e.rotate()
	e.addAccounts(41, 50, 2)
	// A value with a blind index keeps it; a value under another key ring
	// is left alone.
	bi := bytes.Repeat([]byte{0xb1}, envelope.BlindIndexSize)
	withBI, err := e.key("confidential", 2).Seal(nil, bi, ctxAcct, []byte("ssn-51"))
	if err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO accounts (id, ssn) VALUES (51, $1), (52, $2)", withBI, e.seal("internal", 1, ctxAcct, "ssn-52"))
	v3 := e.rotate()

	var progress []Progress
	rep, err := e.run(e.ctx, Opts{Columns: []catalog.Column{col("accounts", "ssn")}, BatchSize: 7,
		Progress: func(p Progress) { progress = append(progress, p) }})
	if err != nil {
		t.Fatal(err)
	}
	r := e.result(rep, ctxAcct)
	if r.Outcome != OutcomeDone || r.Reencrypted != 51 || r.Skipped != 0 || r.Failed != 0 || r.Resumed ||
		r.Job.State != keyring.JobDone || r.Job.RowsDone != 51 || r.Job.RowsTotal != 51 || r.Job.ToVersion != v3 {
		t.Fatalf("result = %+v", r)
	}
	vs := e.versions("accounts", "ssn", "id")
	for id, v := range vs {
		want := v3
		if id == "52" {
			want = 1 // the internal ring's version, untouched
		}
		if v != want {
			t.Errorf("row %s: version %d, want %d", id, v, want)
		}
	}
	var val []byte
	if err := e.pool.QueryRow(e.ctx, "SELECT ssn FROM accounts WHERE id = 51").Scan(&val); err != nil {
		t.Fatal(err)
	}
	if plain, h := e.open(ctxAcct, val); plain != "ssn-51" || !h.HasBlindIndex || !bytes.Equal(h.BlindIndex[:], bi) || h.KeyVersion != v3 {
		t.Errorf("blind-indexed row: %q, header %+v", plain, h)
	}
	if err := e.pool.QueryRow(e.ctx, "SELECT ssn FROM accounts WHERE id = 0").Scan(&val); err != nil || val != nil {
		t.Errorf("NULL row now %x (%v)", val, err)
	}
	e.exec("DELETE FROM accounts WHERE id IN (51, 52)")
	e.checkAccounts(50, v3)

	// Progress was reported batch by batch, then once at the end.
	if len(progress) < 8 || !progress[len(progress)-1].Final || progress[len(progress)-1].Outcome != OutcomeDone ||
		progress[len(progress)-2].Done != 51 || progress[0].Total != 51 || progress[0].Job != r.Job.ID {
		t.Errorf("progress reports: %+v", progress)
	}
	// Encryptions counted under the new version; starts and ends audited.
	v, err := e.store.Get(e.ctx, "confidential", v3)
	if err != nil || v.Encryptions != 51 {
		t.Errorf("encryptions of version %d = %d (%v), want 51", v3, v.Encryptions, err)
	}
	evs := e.auditEvents()
	if count(evs, "reencrypt.start") != 1 || count(evs, "reencrypt.finish") != 1 || count(evs, "key.disabled_access") != 0 {
		t.Errorf("audit events: %v", evs)
	}
	// A second run has nothing to do and creates no job.
	rep, err = e.run(e.ctx, Opts{Columns: []catalog.Column{col("accounts", "ssn")}})
	if err != nil || e.result(rep, ctxAcct).Outcome != OutcomeNothing {
		t.Fatalf("second run: %+v, %v", rep, err)
	}
	if jobs, _ := e.store.Jobs(e.ctx); len(jobs) != 1 {
		t.Errorf("%d jobs after a run with nothing to do, want 1", len(jobs))
	}
	if strings.Contains(e.logs.String(), "ssn-") {
		t.Errorf("a plaintext value reached the log:\n%s", e.logs.String())
	}
}

func TestInterruptAndResumeCompositeKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	const cctx = "public.ledger.secret"
	e.exec(`CREATE TABLE ledger (region text COLLATE "C", n int, at timestamptz, secret bytea, PRIMARY KEY (region, n, at))`)
	regions := []string{"", "a'b", "A", "ü", "z\"q", "b c"}
	k1 := e.key("confidential", 1)
	at := time.Date(2024, 2, 29, 23, 59, 59, 123456000, time.UTC)
	want := map[string]string{}
	for _, r := range regions {
		for n := range 5 {
			plain := fmt.Sprintf("%s|%d", r, n)
			val, err := k1.Seal(nil, nil, cctx, []byte(plain))
			if err != nil {
				t.Fatal(err)
			}
			e.exec("INSERT INTO ledger VALUES ($1, $2, $3, $4)", r, n, at.Add(time.Duration(n)*time.Hour), val)
			want[fmt.Sprintf("%s|%d", r, n)] = plain
		}
	}
	v2 := e.rotate()
	cols := []catalog.Column{{Schema: "public", Table: "ledger", Column: "secret", Type: "text", Classification: "confidential"}}

	// Interrupt after the second batch (the interruption lands between
	// batches, as Ctrl-C does).
	ctx, cancel := context.WithCancel(e.ctx)
	rep, err := e.run(ctx, Opts{Columns: cols, BatchSize: 4, Progress: func(p Progress) {
		if p.Done >= 8 {
			cancel()
		}
	}})
	if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	r := e.result(rep, cctx)
	if r.Outcome != OutcomePaused || r.Job.State != keyring.JobPaused || r.Job.RowsDone != 8 || len(r.Job.LastPK) != 3 {
		t.Fatalf("after the interruption: %+v", r)
	}
	paused, err := e.store.Job(e.ctx, r.Job.ID)
	if err != nil || paused.State != keyring.JobPaused || !slices.Equal(paused.LastPK, r.Job.LastPK) || paused.Error != "" {
		t.Fatalf("job record: %+v, %v", paused, err)
	}
	if !slices.Equal(paused.PKColumns, []string{"region", "n", "at"}) {
		t.Errorf("pk columns %v", paused.PKColumns)
	}
	// Exactly the first 8 rows in key order were re-encrypted, and the
	// cursor names the 8th.
	var (
		done8  []bool
		eighth []string
	)
	err = e.pool.QueryRow(e.ctx, `SELECT array_agg(substring(secret from 10 for 4) = '\x00000002'::bytea ORDER BY region, n, at),
		(array_agg(ARRAY[region, n::text, at::text] ORDER BY region, n, at))[8:8]
		FROM ledger`).Scan(&done8, &eighth)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range done8 {
		if d != (i < 8) {
			t.Fatalf("after the interruption, row %d in key order re-encrypted = %v: %v", i+1, d, done8)
		}
	}
	if strings.Join(eighth, "|") != strings.Join(paused.LastPK, "|") {
		t.Fatalf("cursor %q, want the 8th key %q", paused.LastPK, eighth)
	}

	// A row before the cursor still under version 1 (a proxy that had not
	// seen the rotation): the resumed run starts after the cursor, so only
	// its second pass finds it.
	early, err := k1.Seal(nil, nil, cctx, []byte("|-1"))
	if err != nil {
		t.Fatal(err)
	}
	e.exec("INSERT INTO ledger VALUES ('', -1, $1, $2)", at, early)
	want["|-1"] = "|-1"

	// The next run resumes the same job after its cursor.
	rep, err = e.run(e.ctx, Opts{Columns: cols, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	r = e.result(rep, cctx)
	if r.Outcome != OutcomeDone || !r.Resumed || r.Job.ID != paused.ID || r.Reencrypted != 23 || r.Job.RowsDone != 31 ||
		r.Job.RowsTotal != 31 || r.Passes != 2 {
		t.Fatalf("resumed run: %+v", r)
	}
	rows, err := e.pool.Query(e.ctx, "SELECT region, n, secret FROM ledger")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var (
			region string
			n      int
			val    []byte
		)
		if err := rows.Scan(&region, &n, &val); err != nil {
			t.Fatal(err)
		}
		plain, h := e.open(cctx, val)
		if plain != want[fmt.Sprintf("%s|%d", region, n)] || h.KeyVersion != v2 {
			t.Errorf("(%q, %d): %q version %d", region, n, plain, h.KeyVersion)
		}
		got++
	}
	if got != 31 {
		t.Fatalf("%d rows", got)
	}
	evs := e.auditEvents()
	if count(evs, "reencrypt.start") != 2 || count(evs, "reencrypt.finish") != 2 {
		t.Errorf("audit events: %v", evs)
	}
}

func TestUndecryptableRowsAreLeftAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	e.accounts(10, 1)
	// Row 3 holds a ciphertext of another column (authentication fails),
	// row 5 a header with no body (malformed).
	e.exec("UPDATE accounts SET ssn = $1 WHERE id = 3", e.seal("confidential", 1, "public.other.col", "moved"))
	e.exec(`UPDATE accounts SET ssn = substring(ssn from 1 for 20) WHERE id = 5`)
	var bad3, bad5 []byte
	if err := e.pool.QueryRow(e.ctx, "SELECT (SELECT ssn FROM accounts WHERE id = 3), (SELECT ssn FROM accounts WHERE id = 5)").Scan(&bad3, &bad5); err != nil {
		t.Fatal(err)
	}
	v2 := e.rotate()
	rep, err := e.run(e.ctx, Opts{Columns: []catalog.Column{col("accounts", "ssn")}, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	r := e.result(rep, ctxAcct)
	if r.Outcome != OutcomeFailed || r.Failed != 2 || r.Reencrypted != 8 || r.Job.State != keyring.JobFailed ||
		!strings.Contains(r.Job.Error, "2 row(s) could not be decrypted") {
		t.Fatalf("result = %+v", r)
	}
	reasons := map[string]string{}
	for _, f := range r.Failures {
		reasons[strings.Join(f.PK, ",")] = f.Reason
		if f.Version != 1 || f.KeyringID != e.ringID {
			t.Errorf("failure %+v names the wrong version", f)
		}
	}
	if !strings.Contains(reasons["3"], "authentication") || !strings.Contains(reasons["5"], "malformed") {
		t.Errorf("failures: %+v", r.Failures)
	}
	var now3, now5 []byte
	if err := e.pool.QueryRow(e.ctx, "SELECT (SELECT ssn FROM accounts WHERE id = 3), (SELECT ssn FROM accounts WHERE id = 5)").Scan(&now3, &now5); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(now3, bad3) || !bytes.Equal(now5, bad5) {
		t.Error("an undecryptable value was overwritten")
	}
	for id, v := range e.versions("accounts", "ssn", "id") {
		if id != "3" && id != "5" && v != v2 {
			t.Errorf("row %s at version %d", id, v)
		}
	}
	// Each row is reported once, by primary key, never by value.
	if n := strings.Count(e.logs.String(), "row left unchanged"); n != 2 {
		t.Errorf("%d log lines for undecryptable rows, want 2:\n%s", n, e.logs.String())
	}
	if strings.Contains(e.logs.String(), "moved") || strings.Contains(e.logs.String(), "ssn-") {
		t.Errorf("a value reached the log:\n%s", e.logs.String())
	}
}

func TestRefusalsAndSkips(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	e.accounts(3, 1)
	e.exec("CREATE TABLE nopk (id int, ssn bytea)")
	e.exec("INSERT INTO nopk VALUES (1, $1)", e.seal("confidential", 1, "public.nopk.ssn", "x"))
	e.exec("CREATE TABLE plain (id int PRIMARY KEY, ssn text)")
	e.rotate()
	cols := []catalog.Column{col("nopk", "ssn"), col("missing", "ssn"), col("plain", "ssn"), col("accounts", "ssn")}
	rep, err := e.run(e.ctx, Opts{Columns: cols})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.result(rep, "public.nopk.ssn"); r.Outcome != OutcomeRefused || !strings.Contains(r.Message, "public.nopk has no primary key") {
		t.Errorf("table without a primary key: %+v", r)
	}
	if r := e.result(rep, "public.missing.ssn"); r.Outcome != OutcomeSkipped || !strings.Contains(r.Message, "does not exist") {
		t.Errorf("missing table: %+v", r)
	}
	if r := e.result(rep, "public.plain.ssn"); r.Outcome != OutcomeSkipped || !strings.Contains(r.Message, "bytea") {
		t.Errorf("text column: %+v", r)
	}
	if r := e.result(rep, ctxAcct); r.Outcome != OutcomeDone || r.Reencrypted != 3 {
		t.Errorf("accounts after the refusals: %+v", r)
	}
	if v := e.versions("nopk", "ssn", "id"); v["1"] != 1 {
		t.Errorf("refused table changed: %v", v)
	}
}

func TestVersionStatesAndCompromise(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	e.accounts(6, 1)
	e.rotate()
	e.addAccounts(7, 12, 2)
	e.rotate()
	e.addAccounts(13, 14, 3)
	v4 := e.rotate()
	// Version 1 retired (forced: rows still use it), version 2 disabled.
	if _, err := e.store.RetireForced(e.ctx, "confidential", 1, "test", keyring.Override{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.Disable(e.ctx, "confidential", 2, "suspected"); err != nil {
		t.Fatal(err)
	}
	cols := []catalog.Column{col("accounts", "ssn")}
	plans, err := Plan(e.ctx, e.store, e.db, cols, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := plans[0]
	got := map[uint32]Action{}
	for _, vr := range p.Versions {
		got[vr.Version] = vr.Action
	}
	if got[1] != ActionExcluded || got[2] != ActionExcluded || got[3] != ActionReencrypt || p.Remaining != 2 || p.Active != v4 {
		t.Fatalf("routine plan: %+v", p)
	}

	// A routine run touches neither the retired nor the disabled version.
	rep, err := e.run(e.ctx, Opts{Columns: cols})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.result(rep, ctxAcct); r.Outcome != OutcomeDone || r.Reencrypted != 2 {
		t.Fatalf("routine run: %+v", r)
	}
	counts := map[uint32]int{}
	for _, v := range e.versions("accounts", "ssn", "id") {
		counts[v]++
	}
	if counts[1] != 6 || counts[2] != 6 || counts[v4] != 2 {
		t.Fatalf("versions after the routine run: %v", counts)
	}
	if evs := e.auditEvents(); count(evs, "key.disabled_access") != 0 {
		t.Fatalf("a routine run unwrapped a disabled key: %v", evs)
	}

	// The compromise procedure re-encrypts the disabled version, and only
	// it; every load of the disabled key is audited.
	rep, err = e.run(e.ctx, Opts{Columns: cols, Compromise: &Compromise{Keyring: "confidential", Version: 2}})
	if err != nil {
		t.Fatal(err)
	}
	r := e.result(rep, ctxAcct)
	if r.Outcome != OutcomeDone || r.Reencrypted != 6 || r.Job.FromVersion != 2 || r.Job.ToVersion != v4 {
		t.Fatalf("compromise run: %+v", r)
	}
	counts = map[uint32]int{}
	for _, v := range e.versions("accounts", "ssn", "id") {
		counts[v]++
	}
	if counts[1] != 6 || counts[2] != 0 || counts[v4] != 8 {
		t.Fatalf("versions after the compromise run: %v", counts)
	}
	if evs := e.auditEvents(); count(evs, "key.disabled_access") != 1 {
		t.Fatalf("disabled-key loads audited %d times, want 1: %v", count(evs, "key.disabled_access"), evs)
	}
	// The retired version's rows are still there, and the references
	// count says so.
	cc, err := CountReferences(e.ctx, e.db, append(cols, col("missing", "x")), e.ringID, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(cc) != 2 || cc[0].Rows != 6 || cc[0].Note != "" || cc[1].Rows != 0 || !strings.Contains(cc[1].Note, "does not exist") {
		t.Fatalf("CountReferences = %+v", cc)
	}
	if cc, err := CountReferences(e.ctx, e.db, cols, e.ringID, 2); err != nil || cc[0].Rows != 0 {
		t.Fatalf("CountReferences(v2) = %+v, %v", cc, err)
	}
}

func TestRotationDuringRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	e.accounts(20, 1)
	e.rotate()
	rotated := false
	rep, err := e.run(e.ctx, Opts{Columns: []catalog.Column{col("accounts", "ssn")}, BatchSize: 5, Progress: func(p Progress) {
		if !rotated && p.Done >= 5 {
			rotated = true
			e.rotate()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := e.result(rep, ctxAcct)
	if r.Outcome != OutcomeDone || r.Job.ToVersion != 3 || r.Reencrypted != 25 {
		t.Fatalf("result = %+v", r)
	}
	e.checkAccounts(20, 3)
	jobs, err := e.store.Jobs(e.ctx)
	if err != nil || len(jobs) != 2 || jobs[1].State != keyring.JobCancelled || !strings.Contains(jobs[1].Error, "rotated to version 3") || jobs[0].State != keyring.JobDone {
		t.Fatalf("jobs = %+v, %v", jobs, err)
	}
}

func TestLockedRowsAndSettle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	e.accounts(12, 1)
	e.rotate()
	// An application transaction holds row 4.
	app := e.conn()
	tx, err := app.Begin(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(e.ctx, "SELECT 1 FROM accounts WHERE id = 4 FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	released := false
	// Rows written with the old version while the run settles (a proxy
	// that has not seen the rotation yet).
	settle := time.Now().Add(1500 * time.Millisecond)
	late := false
	rep, err := e.run(e.ctx, Opts{Columns: []catalog.Column{col("accounts", "ssn")}, BatchSize: 5, SettleUntil: settle,
		Progress: func(p Progress) {
			if p.Pass >= 2 && !released {
				released = true
				if err := tx.Rollback(e.ctx); err != nil {
					t.Error(err)
				}
			}
			if !late && released {
				late = true
				e.addAccounts(13, 13, 1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	r := e.result(rep, ctxAcct)
	if r.Outcome != OutcomeDone || r.Reencrypted != 13 || r.Passes < 3 || !released {
		t.Fatalf("result = %+v (released %v)", r, released)
	}
	if time.Now().Before(settle) {
		t.Error("the run ended before SettleUntil")
	}
	e.checkAccounts(13, 2)
}

func TestBusyJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	e.accounts(4, 1)
	e.rotate()
	other, _, err := e.store.ClaimJob(e.ctx, keyring.JobSpec{Keyring: "confidential", ToVersion: 2, Table: "public.accounts",
		Column: "ssn", PKColumns: []string{"id"}, Remaining: 4}, keyring.ClaimOpts{Owner: "elsewhere:9", StaleAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cols := []catalog.Column{col("accounts", "ssn")}
	rep, err := e.run(e.ctx, Opts{Columns: cols})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.result(rep, ctxAcct); r.Outcome != OutcomeRefused || !strings.Contains(r.Message, "elsewhere:9") {
		t.Fatalf("run while another holds the job: %+v", r)
	}
	rep, err = e.run(e.ctx, Opts{Columns: cols, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.result(rep, ctxAcct); r.Outcome != OutcomeDone || r.Job.ID != other.ID || !r.Job.Forced || r.Reencrypted != 4 {
		t.Fatalf("forced run: %+v", r)
	}
	if evs := e.auditEvents(); count(evs, "reencrypt.force") != 1 {
		t.Errorf("audit events: %v", evs)
	}
}

func TestStatements(t *testing.T) {
	s := buildStatements(tableRef{Schema: "App", Table: "t x", Column: `c"1`, PK: []pkColumn{
		{Name: "id", Type: "integer"}, {Name: "Region", Type: "character varying(40)"}}})
	for _, want := range []string{
		`FROM "App"."t x" AS t`, `t."c""1"`, `t."id"::text, t."Region"::text`,
		`(t."id", t."Region") > ($5::text::integer, $6::text::character varying(40))`,
		`ORDER BY t."id", t."Region" LIMIT $4 FOR UPDATE OF t SKIP LOCKED`,
		`substring(t."c""1" from 10 for 4) = ANY ($3::bytea[])`,
	} {
		if !strings.Contains(s.batch, want) {
			t.Errorf("batch statement lacks %q:\n%s", want, s.batch)
		}
	}
	if strings.Contains(s.batchFirst, "$5") {
		t.Errorf("first batch uses a cursor: %s", s.batchFirst)
	}
	for _, want := range []string{`SET "c""1" = u.new_value`, `unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[]) AS u(k1, k2, old_value, new_value)`,
		`t."id" = u.k1::integer AND t."Region" = u.k2::character varying(40) AND t."c""1" = u.old_value`} {
		if !strings.Contains(s.update, want) {
			t.Errorf("update statement lacks %q:\n%s", want, s.update)
		}
	}
}

func TestThrottle(t *testing.T) {
	th := newThrottle(-1, 10, 3, 5*time.Second)
	ms := time.Millisecond
	for range 3 {
		if p := th.observe(10 * ms); p != 0 {
			t.Fatalf("pause during warm-up: %v", p)
		}
	}
	if p := th.observe(25 * ms); p != 0 {
		t.Fatalf("pause for a batch under 3x the baseline: %v", p)
	}
	base := th.baseline
	if p := th.observe(100 * ms); p != 100*ms {
		t.Fatalf("first slow batch: pause %v, want 100ms", p)
	}
	if p := th.observe(100 * ms); p != 200*ms {
		t.Fatalf("second slow batch: pause %v, want 200ms", p)
	}
	if th.baseline-base > 5*ms {
		t.Errorf("slow batches moved the baseline from %v to %v", base, th.baseline)
	}
	if p := th.observe(10 * time.Second); p != 5*time.Second {
		t.Errorf("pause not capped: %v", p)
	}
	if p := th.observe(12 * ms); p != 0 || th.slow != 0 {
		t.Errorf("a normal batch after slow ones: pause %v, slow %d", p, th.slow)
	}
	// The rate limit: 100 rows/s with a burst of 10 lets 30 rows through in
	// about 0.2 s.
	lim := newThrottle(100, 10, 3, time.Second)
	start := time.Now()
	for range 3 {
		if err := lim.wait(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 150*time.Millisecond || el > 2*time.Second {
		t.Errorf("30 rows at 100/s took %v", el)
	}
	if err := newThrottle(-1, 10, 3, time.Second).wait(context.Background(), 10); err != nil {
		t.Errorf("unlimited: %v", err)
	}
}

func TestCompromiseLeavesOtherRingsAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	e.accounts(4, 1)
	e.exec("CREATE TABLE notes (id int PRIMARY KEY, body bytea)")
	e.exec("INSERT INTO notes VALUES (1, $1)", e.seal("internal", 1, "public.notes.body", "n1"))
	if _, err := e.store.Rotate(e.ctx, "internal", "test"); err != nil {
		t.Fatal(err)
	}
	// A routine job on the internal column, paused.
	j, _, err := e.store.ClaimJob(e.ctx, keyring.JobSpec{Keyring: "internal", ToVersion: 2, Table: "public.notes", Column: "body",
		PKColumns: []string{"id"}, Remaining: 1}, keyring.ClaimOpts{Owner: "x:1", StaleAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.FinishJob(e.ctx, j.ID, "x:1", keyring.JobPaused, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.Disable(e.ctx, "confidential", 1, "compromise"); err != nil {
		t.Fatal(err)
	}
	notes := catalog.Column{Schema: "public", Table: "notes", Column: "body", Type: "text", Classification: "internal"}
	rep, err := e.run(e.ctx, Opts{Columns: []catalog.Column{notes, col("accounts", "ssn")}, Compromise: &Compromise{Keyring: "confidential", Version: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if r := e.result(rep, "public.notes.body"); r.Outcome != OutcomeNothing || r.Job.ID != 0 {
		t.Fatalf("other ring's column: %+v", r)
	}
	if r := e.result(rep, ctxAcct); r.Outcome != OutcomeDone || r.Reencrypted != 4 {
		t.Fatalf("compromised ring's column: %+v", r)
	}
	still, err := e.store.Job(e.ctx, j.ID)
	if err != nil || still.State != keyring.JobPaused {
		t.Fatalf("the other ring's routine job: %+v, %v", still, err)
	}
	if v := e.versions("notes", "body", "id"); v["1"] != 1 {
		t.Fatalf("notes re-encrypted by a compromise of another ring: %v", v)
	}
}

func TestKEKOutagePausesTheJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if e == nil {
		return
	}
	e.accounts(6, 1)
	e.rotate()
	e.kek.SetUnavailable(true)
	cols := []catalog.Column{col("accounts", "ssn")}
	rep, err := e.run(e.ctx, Opts{Columns: cols})
	if err == nil || errors.Is(err, ErrInterrupted) {
		t.Fatalf("run during a KEK outage: %v", err)
	}
	r := e.result(rep, ctxAcct)
	if r.Outcome != OutcomePaused || r.Job.State != keyring.JobPaused || !strings.Contains(r.Job.Error, "unavailable") {
		t.Fatalf("after the outage: %+v", r)
	}
	if v := e.versions("accounts", "ssn", "id"); v["1"] != 1 {
		t.Fatalf("rows changed during the outage: %v", v)
	}
	e.kek.SetUnavailable(false)
	rep, err = e.run(e.ctx, Opts{Columns: cols})
	if err != nil {
		t.Fatal(err)
	}
	if r2 := e.result(rep, ctxAcct); r2.Outcome != OutcomeDone || !r2.Resumed || r2.Job.ID != r.Job.ID || r2.Job.Error != "" {
		t.Fatalf("after the KEK is back: %+v", r2)
	}
	e.checkAccounts(6, 2)
}
