package keyring

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/keyring/audit"
)

// auditEnv is an env with a chain of 12 entries (the audit ring: 2; the
// ring "confidential": 2; eight Audit calls: 8) and a checkpoint at 8.
func auditEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.ring("confidential")
	for i := range 8 {
		if i == 4 {
			if _, err := e.store.Checkpoint(e.ctx); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.store.Audit(e.ctx, audit.Record{Event: audit.EventDataRead, Keyring: "confidential", Version: 1,
			Details: map[string]string{"role": "app", "column": "public.customers.ssn", "rows": fmt.Sprint(i + 1)}}); err != nil {
			t.Fatal(err)
		}
	}
	rep := e.verify()
	if !rep.OK() || rep.Entries != 12 || rep.LastCheckpoint != 8 || rep.Uncovered != 4 || rep.VerifiedMACs != 1 {
		t.Fatalf("untampered chain: %+v", rep)
	}
	return e
}

func (e *env) verify() *audit.Report {
	e.t.Helper()
	rep, err := e.store.VerifyAudit(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return rep
}

// tamper runs statements with every user trigger off (an attacker with the
// owner's or a superuser's rights).
func (e *env) tamper(stmts ...string) {
	e.t.Helper()
	c := e.conn()
	if _, err := c.Exec(e.ctx, "SET session_replication_role = replica"); err != nil {
		e.t.Fatal(err)
	}
	for _, q := range stmts {
		if _, err := c.Exec(e.ctx, q); err != nil {
			e.t.Fatalf("%s: %v", q, err)
		}
	}
}

// wantProblems checks the report's problems exactly (kind@seq[-last]).
func wantProblems(t *testing.T, rep *audit.Report, want ...string) {
	t.Helper()
	var got []string
	for _, p := range rep.Problems {
		s := fmt.Sprintf("%s@%d", p.Kind, p.Seq)
		if p.LastSeq != p.Seq {
			s += fmt.Sprintf("-%d", p.LastSeq)
		}
		got = append(got, s)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("problems:\n got %v\nwant %v\n%s", got, want, problemText(rep))
	}
	if len(want) > 0 && !rep.Tampered() {
		t.Fatal("Tampered() = false")
	}
}

func problemText(rep *audit.Report) string {
	var b strings.Builder
	for _, p := range rep.Problems {
		b.WriteString("  " + p.String() + "\n")
	}
	return b.String()
}

// rowHash recomputes the hash of the stored row seq as an attacker would
// (the chain has no secret) and writes it back together with prev_hash.
func (e *env) rehash(seq int64, prev audit.Hash) audit.Hash {
	e.t.Helper()
	es, err := audit.Range(e.ctx, e.pool, seq, seq)
	if err != nil || len(es) != 1 {
		e.t.Fatalf("read %d: %v", seq, err)
	}
	en := es[0]
	en.PrevHash = prev
	en.Hash = en.ComputeHash()
	e.tamper(fmt.Sprintf("UPDATE pgcloak.audit_log SET prev_hash = '\\x%x', hash = '\\x%x' WHERE seq = %d", en.PrevHash[:], en.Hash[:], seq))
	return en.Hash
}

func TestAuditEditedEntry(t *testing.T) {
	t.Parallel()
	e := auditEnv(t)
	e.tamper("UPDATE pgcloak.audit_log SET actor = 'someone else' WHERE seq = 6")
	rep := e.verify()
	wantProblems(t, rep, "edited@6")
	if !strings.Contains(rep.Problems[0].Detail, "entry 6 was edited") {
		t.Errorf("detail = %q", rep.Problems[0].Detail)
	}
	if rep.LastCheckpoint != 8 {
		t.Errorf("the checkpoint still vouches for the original hashes: LastCheckpoint = %d", rep.LastCheckpoint)
	}
}

func TestAuditEditedDetails(t *testing.T) {
	t.Parallel()
	e := auditEnv(t)
	e.tamper(`UPDATE pgcloak.audit_log SET details = jsonb_set(details, '{rows}', '"999"') WHERE seq = 10`)
	wantProblems(t, e.verify(), "edited@10")
	e2 := auditEnv(t)
	e2.tamper(`UPDATE pgcloak.audit_log SET details = '{"rows": 1}' WHERE seq = 11`) // not a string map at all
	wantProblems(t, e2.verify(), "edited@11")
}

func TestAuditReplacedEntryWithRecomputedHash(t *testing.T) {
	t.Parallel()
	e := auditEnv(t)
	es, _ := audit.Range(e.ctx, e.pool, 9, 9)
	e.tamper("UPDATE pgcloak.audit_log SET event = 'nothing.happened' WHERE seq = 10")
	e.rehash(10, es[0].Hash)
	rep := e.verify()
	wantProblems(t, rep, "broken_link@11")
	if !strings.Contains(rep.Problems[0].Detail, "entry 10 was replaced") {
		t.Errorf("detail = %q", rep.Problems[0].Detail)
	}
}

func TestAuditReplacedGenesis(t *testing.T) {
	t.Parallel()
	e := auditEnv(t)
	var notGenesis audit.Hash
	notGenesis[0] = 1
	e.rehash(1, notGenesis)
	wantProblems(t, e.verify(), "broken_link@1", "broken_link@2")
}

func TestAuditDeletedEntry(t *testing.T) {
	t.Parallel()
	e := auditEnv(t)
	e.tamper("DELETE FROM pgcloak.audit_log WHERE seq = 5")
	wantProblems(t, e.verify(), "missing@5")

	e2 := auditEnv(t)
	e2.tamper("DELETE FROM pgcloak.audit_log WHERE seq BETWEEN 2 AND 4")
	wantProblems(t, e2.verify(), "missing@2-4")
}

func TestAuditReorderedEntries(t *testing.T) {
	t.Parallel()
	e := auditEnv(t)
	// Swap the contents of rows 3 and 4 (seq stays where it was).
	cols := "at, actor, db_user, event, keyring, version, details, prev_hash, hash"
	e.tamper(
		"CREATE TEMP TABLE swap AS SELECT seq, "+cols+" FROM pgcloak.audit_log WHERE seq IN (3, 4)",
		"UPDATE pgcloak.audit_log a SET ("+cols+") = (SELECT "+cols+" FROM swap s WHERE s.seq = 7 - a.seq) WHERE a.seq IN (3, 4)",
	)
	rep := e.verify()
	wantProblems(t, rep, "reordered@3", "reordered@4")
	if !strings.Contains(rep.Problems[0].Detail, "stored at seq 3 was written as seq 4") {
		t.Errorf("detail = %q", rep.Problems[0].Detail)
	}
}

func TestAuditInsertedEntry(t *testing.T) {
	t.Parallel()
	e := auditEnv(t)
	// Make room at seq 6 by renumbering 6..12 to 7..13, then insert a
	// well-formed entry that links to 5, and fix the head: everything an
	// attacker without the checkpoint key can do.
	prev, _ := audit.Range(e.ctx, e.pool, 5, 5)
	fake := audit.Entry{Seq: 6, At: prev[0].At, Actor: "tester", DBUser: "postgres", Event: "key.rotate",
		Keyring: "confidential", Version: 1, PrevHash: prev[0].Hash}
	fake.Hash = fake.ComputeHash()
	e.tamper(
		"UPDATE pgcloak.audit_log SET seq = seq + 1000 WHERE seq >= 6",
		"UPDATE pgcloak.audit_log SET seq = seq - 999 WHERE seq >= 1000",
		fmt.Sprintf(`INSERT INTO pgcloak.audit_log (seq, at, actor, db_user, event, keyring, version, details, prev_hash, hash)
			VALUES (6, now(), 'tester', 'postgres', 'key.rotate', 'confidential', 1, '{}', '\x%x', '\x%x')`, fake.PrevHash[:], fake.Hash[:]),
		"UPDATE pgcloak.audit_log SET at = (SELECT at FROM pgcloak.audit_log WHERE seq = 5) WHERE seq = 6",
		"UPDATE pgcloak.audit_head SET seq = seq + 1, hash = (SELECT hash FROM pgcloak.audit_log ORDER BY seq DESC LIMIT 1)",
	)
	rep := e.verify()
	// Entry 6 is named as inserted; the renumbered rest is one finding; the
	// checkpoint at 8 no longer matches the entry now stored at 8.
	wantProblems(t, rep, "inserted@6", "reordered@7-13", "checkpoint_mismatch@8")
	if rep.LastCheckpoint != 0 {
		t.Errorf("LastCheckpoint = %d, want 0 (the only checkpoint no longer matches)", rep.LastCheckpoint)
	}
}

func TestAuditTruncation(t *testing.T) {
	t.Parallel()
	// The tail after the checkpoint deleted, head untouched: the head says so.
	e := auditEnv(t)
	e.tamper("DELETE FROM pgcloak.audit_log WHERE seq > 10")
	wantProblems(t, e.verify(), "truncated@11-12")

	// Deleted back past the checkpoint, head rewritten too: the
	// checkpoint still names seq 8.
	e2 := auditEnv(t)
	e2.tamper("DELETE FROM pgcloak.audit_log WHERE seq > 6",
		"UPDATE pgcloak.audit_head SET seq = 6, hash = (SELECT hash FROM pgcloak.audit_log WHERE seq = 6)")
	wantProblems(t, e2.verify(), "truncated@8")

	// The documented limit: a careful truncation after the last checkpoint
	// (log and head both) is not detectable; Uncovered says how many
	// entries were at risk, and shrinks to what is left.
	e3 := auditEnv(t)
	e3.tamper("DELETE FROM pgcloak.audit_log WHERE seq > 10",
		"UPDATE pgcloak.audit_head SET seq = 10, hash = (SELECT hash FROM pgcloak.audit_log WHERE seq = 10)")
	rep := e3.verify()
	if !rep.OK() || rep.LastCheckpoint != 8 || rep.Uncovered != 2 {
		t.Fatalf("careful truncation after the checkpoint: %+v\n%s", rep, problemText(rep))
	}
}

func TestAuditRewrittenPrefixAndForgedCheckpoint(t *testing.T) {
	t.Parallel()
	e := auditEnv(t)
	// Rewrite entry 3 and recompute every hash after it: the chain itself
	// is consistent again; only the checkpoint at 8 can tell.
	e.tamper("UPDATE pgcloak.audit_log SET actor = 'nobody' WHERE seq = 3")
	prev, _ := audit.Range(e.ctx, e.pool, 2, 2)
	h := prev[0].Hash
	for seq := int64(3); seq <= 12; seq++ {
		h = e.rehash(seq, h)
	}
	e.tamper(fmt.Sprintf("UPDATE pgcloak.audit_head SET hash = '\\x%x'", h[:]))
	rep := e.verify()
	wantProblems(t, rep, "checkpoint_mismatch@8")

	// …so the attacker replaces the checkpoint too, without the key.
	e.tamper(fmt.Sprintf("UPDATE pgcloak.audit_checkpoints SET hash = (SELECT hash FROM pgcloak.audit_log WHERE seq = 8), mac = '\\x%x' WHERE seq = 8",
		bytes.Repeat([]byte{0x42}, 32)))
	rep = e.verify()
	wantProblems(t, rep, "checkpoint_forged@8")
	if rep.LastCheckpoint != 0 || rep.Uncovered != 12 {
		t.Errorf("after a forged checkpoint: LastCheckpoint %d, Uncovered %d", rep.LastCheckpoint, rep.Uncovered)
	}
}

func TestAuditCheckpointsAutomaticAndUnverifiable(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // 2 entries
	s := e.newStore(StoreOpts{CheckpointEvery: 5})
	for i := range 9 {
		if _, err := s.Audit(e.ctx, audit.Record{Event: audit.EventConfig, Details: map[string]string{"i": fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	cps, err := audit.Checkpoints(e.ctx, e.pool)
	if err != nil || len(cps) != 2 || cps[0].Seq != 5 || cps[1].Seq != 10 {
		t.Fatalf("automatic checkpoints = %+v, %v; want at 5 and 10", cps, err)
	}
	// On demand: the head (11); again: nothing new is written.
	for range 2 {
		cp, err := s.Checkpoint(e.ctx)
		if err != nil || cp.Seq != 11 {
			t.Fatalf("Checkpoint = %+v, %v; want seq 11", cp, err)
		}
	}
	if cps, _ := audit.Checkpoints(e.ctx, e.pool); len(cps) != 3 {
		t.Fatalf("%d checkpoints, want 3", len(cps))
	}
	// Without the KEK, checkpoints cannot be verified, and Verify says so
	// without calling it tampering.
	noKEK := e.newStore(StoreOpts{KEKs: map[string]hsm.KEK{}})
	rep, err := noKEK.VerifyAudit(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantProblemsKinds(t, rep, audit.ProblemUnverifiable)
	if rep.Tampered() || rep.LastCheckpoint != 0 {
		t.Fatalf("unverifiable report: %+v", rep)
	}
}

func TestAuditConcurrentAppendsNeverFork(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stores := e.separateStores(4)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 10 {
				if _, err := s.Audit(e.ctx, audit.Record{Event: audit.EventDataRead, Details: map[string]string{"writer": fmt.Sprint(i), "n": fmt.Sprint(j)}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	// Key changes interleave with them.
	e.ring("confidential")
	e.must(e.store.Rotate(e.ctx, "confidential", "r"))
	wg.Wait()
	rep := e.verify()
	if !rep.OK() || rep.Entries != 2+2+3+40 || rep.LastSeq != rep.Entries {
		t.Fatalf("after concurrent appends: %+v\n%s", rep, problemText(rep))
	}
}

func TestAuditSinkAndTail(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var buf syncBuffer
	s := e.newStore(StoreOpts{AuditSink: &buf, Actor: "alice"})
	kr, _, err := s.EnsureKeyring(e.ctx, KeyringSpec{Name: "restricted", Purpose: PurposeEncryption, Classification: "restricted", KEK: "hsm"})
	if err != nil {
		t.Fatal(err)
	}
	e.must(s.Rotate(e.ctx, "restricted", "r"))
	// A failed operation sends nothing to the sink.
	if _, err := s.SetState(e.ctx, "restricted", 2, StateRetired, "x"); err == nil {
		t.Fatal("retiring the active version succeeded")
	}
	var lines []audit.Entry
	sc := bufio.NewScanner(bytes.NewReader(buf.Bytes()))
	for sc.Scan() {
		var en audit.Entry
		if err := json.Unmarshal(sc.Bytes(), &en); err != nil {
			t.Fatalf("sink line %q: %v", sc.Text(), err)
		}
		if en.ComputeHash() != en.Hash {
			t.Errorf("sink line for seq %d does not hash to its hash", en.Seq)
		}
		lines = append(lines, en)
	}
	tail, err := s.AuditTail(e.ctx, 5)
	if err != nil || len(tail) != 5 || len(lines) != 5 {
		t.Fatalf("tail %d entries, sink %d lines, %v", len(tail), len(lines), err)
	}
	for i := range tail {
		if tail[i].Hash != lines[i].Hash || tail[i].Actor != "alice" {
			t.Errorf("entry %d: sink and log differ or wrong actor: %+v vs %+v", i, lines[i], tail[i])
		}
	}
	if tail[0].Event != "keyring.create" || tail[0].Details["id"] != fmt.Sprint(kr.ID) || tail[4].Event != "key.rotate" {
		t.Errorf("tail = %+v", tail)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

func wantProblemsKinds(t *testing.T, rep *audit.Report, kinds ...audit.ProblemKind) {
	t.Helper()
	if len(rep.Problems) != len(kinds) {
		t.Fatalf("problems = %s, want kinds %v", problemText(rep), kinds)
	}
	for i, k := range kinds {
		if rep.Problems[i].Kind != k {
			t.Fatalf("problem %d = %s, want %s", i, rep.Problems[i], k)
		}
	}
}

func TestAuditHeadChecks(t *testing.T) {
	t.Parallel()
	// An entry appended around the trigger (head not advanced).
	e := auditEnv(t)
	tail, _ := e.store.AuditTail(e.ctx, 1)
	extra := audit.Entry{Seq: 13, At: tail[0].At, Actor: "x", DBUser: "postgres", Event: "x", PrevHash: tail[0].Hash}
	extra.Hash = extra.ComputeHash()
	e.tamper(fmt.Sprintf(`INSERT INTO pgcloak.audit_log (seq, at, actor, db_user, event, prev_hash, hash)
		VALUES (13, (SELECT at FROM pgcloak.audit_log WHERE seq = 12), 'x', 'postgres', 'x', '\x%x', '\x%x')`, extra.PrevHash[:], extra.Hash[:]))
	wantProblems(t, e.verify(), "inserted@13")

	// A checkpoint row deleted: the head remembers it.
	e2 := auditEnv(t)
	e2.tamper("DELETE FROM pgcloak.audit_checkpoints")
	rep := e2.verify()
	wantProblems(t, rep, "checkpoint_deleted@8")
	if rep.Uncovered != 12 {
		t.Errorf("Uncovered = %d, want 12", rep.Uncovered)
	}

	// Normal roles cannot do any of this: the triggers refuse.
	for _, q := range []string{
		"UPDATE pgcloak.audit_log SET actor = 'x' WHERE seq = 1",
		"DELETE FROM pgcloak.audit_log WHERE seq = 1",
		"TRUNCATE pgcloak.audit_log",
		"DELETE FROM pgcloak.audit_checkpoints",
		"INSERT INTO pgcloak.audit_log (seq, at, actor, db_user, event, prev_hash, hash) VALUES (100, now(), 'x', 'x', 'x', '\\x" + strings.Repeat("00", 32) + "', '\\x" + strings.Repeat("00", 32) + "')",
	} {
		if _, err := e.pool.Exec(e.ctx, q); err == nil { // e still has its checkpoint
			t.Errorf("%s: accepted", q)
		}
	}
}

func TestAuditBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	es, err := e.store.AuditBatch(e.ctx, []audit.Record{
		{Event: audit.EventDataRead, Keyring: "restricted", Version: 1, Details: map[string]string{"rows": "3"}},
		{Event: audit.EventDataRead, Keyring: "restricted", Version: 1, Actor: "proxy@h", Details: map[string]string{"rows": "1"}},
	})
	if err != nil || len(es) != 2 || es[0].Seq != 3 || es[1].Seq != 4 || es[1].PrevHash != es[0].Hash || es[0].Actor != "tester" || es[1].Actor != "proxy@h" {
		t.Fatalf("AuditBatch = %+v, %v", es, err)
	}
	if rep := e.verify(); !rep.OK() || rep.Entries != 4 {
		t.Fatalf("%+v", rep)
	}
}
