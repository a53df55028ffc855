package keyring

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/keyring/audit"
)

// jobSpec is a job for public.t.c of ring "confidential" to version to.
func jobSpec(to uint32, remaining int64) JobSpec {
	return JobSpec{Keyring: "confidential", ToVersion: to, Table: "public.t", Column: "c",
		PKColumns: []string{"id"}, BatchSize: 100, Remaining: remaining}
}

func claimOpts(owner string) ClaimOpts { return ClaimOpts{Owner: owner, StaleAfter: time.Minute} }

// events returns the audit events after seq, in order.
func (e *env) eventsAfter(seq int64) []audit.Entry {
	e.t.Helper()
	tail, err := e.store.AuditTail(e.ctx, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []audit.Entry
	for _, en := range tail {
		if en.Seq > seq {
			out = append(out, en)
		}
	}
	return out
}

func (e *env) lastSeq() int64 {
	e.t.Helper()
	var seq int64
	if err := e.pool.QueryRow(e.ctx, "SELECT seq FROM pgcloak.audit_head").Scan(&seq); err != nil {
		e.t.Fatal(err)
	}
	return seq
}

func eventNames(es []audit.Entry) string {
	var names []string
	for _, en := range es {
		names = append(names, en.Event)
	}
	return strings.Join(names, " ")
}

func TestJobClaimProgressResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, s := e.ctx, e.store
	e.ring("confidential")
	e.must(s.Rotate(ctx, "confidential", "routine"))
	seq := e.lastSeq()

	j, resumed, err := s.ClaimJob(ctx, jobSpec(2, 10), claimOpts("host-a:1"))
	if err != nil || resumed {
		t.Fatalf("first claim = %+v, resumed %v, %v", j, resumed, err)
	}
	if j.State != JobRunning || j.Owner != "host-a:1" || j.RowsTotal != 10 || j.RowsDone != 0 || j.LastPK != nil ||
		j.FromVersion != 0 || j.ToVersion != 2 || j.Keyring != "confidential" || j.CreatedBy != "tester" ||
		j.HeartbeatAt.IsZero() || j.StartedAt.IsZero() || !j.FinishedAt.IsZero() || !slices.Equal(j.PKColumns, []string{"id"}) {
		t.Fatalf("new job = %+v", j)
	}
	last := []string{`a"b`, "ü", ""}
	if err := s.UpdateJob(ctx, j.ID, "host-a:1", JobProgress{LastPK: last, Done: 4, Skipped: 1, Total: -1}); err != nil {
		t.Fatal(err)
	}
	// Another run cannot take a job whose heartbeat is fresh.
	_, _, err = s.ClaimJob(ctx, jobSpec(2, 5), claimOpts("host-b:2"))
	var busy *JobBusyError
	if !errors.Is(err, ErrJobBusy) || !errors.As(err, &busy) || busy.JobID != j.ID || busy.Owner != "host-a:1" {
		t.Fatalf("claim of a live job = %v, want ErrJobBusy naming host-a:1", err)
	}
	paused, err := s.FinishJob(ctx, j.ID, "host-a:1", JobPaused, "")
	if err != nil || paused.State != JobPaused || !paused.FinishedAt.IsZero() || !slices.Equal(paused.LastPK, last) || paused.RowsDone != 4 || paused.RowsSkipped != 1 {
		t.Fatalf("paused = %+v, %v", paused, err)
	}
	// A paused job is resumed by the next run, from its cursor.
	r, resumed, err := s.ClaimJob(ctx, jobSpec(2, 6), claimOpts("host-b:2"))
	if err != nil || !resumed || r.ID != j.ID || !slices.Equal(r.LastPK, last) || r.RowsDone != 4 || r.RowsTotal != 10 ||
		r.Owner != "host-b:2" || r.State != JobRunning || r.Forced {
		t.Fatalf("resume = %+v, resumed %v, %v", r, resumed, err)
	}
	// The previous owner has lost it.
	if err := s.UpdateJob(ctx, j.ID, "host-a:1", JobProgress{Done: 1, Total: -1}); !errors.Is(err, ErrJobLost) {
		t.Fatalf("update by the previous owner = %v, want ErrJobLost", err)
	}
	if err := s.HeartbeatJob(ctx, j.ID, "host-a:1"); !errors.Is(err, ErrJobLost) {
		t.Fatalf("heartbeat by the previous owner = %v, want ErrJobLost", err)
	}
	if err := s.HeartbeatJob(ctx, j.ID, "host-b:2"); err != nil {
		t.Fatal(err)
	}
	// A nil cursor starts a new pass.
	if err := s.UpdateJob(ctx, j.ID, "host-b:2", JobProgress{Done: 6, Total: 12}); err != nil {
		t.Fatal(err)
	}
	done, err := s.FinishJob(ctx, j.ID, "host-b:2", JobDone, "")
	if err != nil || done.State != JobDone || done.FinishedAt.IsZero() || done.LastPK != nil || done.RowsDone != 10 || done.RowsTotal != 12 {
		t.Fatalf("done = %+v, %v", done, err)
	}
	if _, err := s.FinishJob(ctx, j.ID, "host-b:2", JobDone, ""); !errors.Is(err, ErrJobLost) {
		t.Fatalf("finishing twice = %v, want ErrJobLost", err)
	}
	if _, open, err := s.OpenJob(ctx, "public.t", "c"); err != nil || open {
		t.Fatalf("open job after done: %v %v", open, err)
	}
	jobs, err := s.Jobs(ctx)
	if err != nil || len(jobs) != 1 || jobs[0].ID != j.ID {
		t.Fatalf("Jobs = %+v, %v", jobs, err)
	}

	es := e.eventsAfter(seq)
	if got, want := eventNames(es), "reencrypt.start reencrypt.finish reencrypt.start reencrypt.finish"; got != want {
		t.Fatalf("audit events %q, want %q", got, want)
	}
	if d := es[2].Details; d["resumed"] != "true" || d["owner"] != "host-b:2" || d["previous_state"] != "paused" || d["table"] != "public.t" {
		t.Errorf("resume entry details = %v", d)
	}
	if d := es[3].Details; d["state"] != "done" || d["rows_done"] != "10" || es[3].Keyring != "confidential" || es[3].Version != 2 {
		t.Errorf("finish entry = %+v", es[3])
	}
	for _, en := range es {
		for k, v := range en.Details {
			if strings.Contains(v, `a"b`) || strings.Contains(k, "ü") {
				t.Errorf("audit entry %s carries a primary-key value: %v", en.Event, en.Details)
			}
		}
	}
}

func TestJobStaleAndTakeover(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, s := e.ctx, e.store
	e.ring("confidential")
	e.must(s.Rotate(ctx, "confidential", "routine"))

	j, _, err := s.ClaimJob(ctx, jobSpec(2, 3), claimOpts("crashed:1"))
	if err != nil {
		t.Fatal(err)
	}
	// The run died: its heartbeat ages.
	e.exec("UPDATE pgcloak.reencrypt_jobs SET heartbeat_at = now() - interval '5 minutes' WHERE id = $1", j.ID)
	seq := e.lastSeq()
	r, resumed, err := s.ClaimJob(ctx, jobSpec(2, 3), claimOpts("next:2"))
	if err != nil || !resumed || r.ID != j.ID || r.Forced {
		t.Fatalf("claim of a stale job = %+v, %v, %v", r, resumed, err)
	}
	if got := eventNames(e.eventsAfter(seq)); got != "reencrypt.start" {
		t.Fatalf("stale claim audited as %q, want reencrypt.start only", got)
	}
	// A fresh job taken over on purpose.
	seq = e.lastSeq()
	f, resumed, err := s.ClaimJob(ctx, jobSpec(2, 3), ClaimOpts{Owner: "forcer:3", StaleAfter: time.Minute, Takeover: true, Reason: "operator --force"})
	if err != nil || !resumed || f.ID != j.ID || !f.Forced || f.Owner != "forcer:3" {
		t.Fatalf("takeover = %+v, %v, %v", f, resumed, err)
	}
	es := e.eventsAfter(seq)
	if got := eventNames(es); got != "reencrypt.force reencrypt.start" {
		t.Fatalf("takeover audited as %q", got)
	}
	if es[0].Details["previous_owner"] != "next:2" || es[0].Details["reason"] != "operator --force" {
		t.Errorf("force entry details = %v", es[0].Details)
	}
	if err := s.HeartbeatJob(ctx, j.ID, "next:2"); !errors.Is(err, ErrJobLost) {
		t.Fatalf("heartbeat after takeover = %v, want ErrJobLost", err)
	}
}

func TestJobSuperseded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, s := e.ctx, e.store
	e.ring("confidential")
	e.must(s.Rotate(ctx, "confidential", "routine"))
	j, _, err := s.ClaimJob(ctx, jobSpec(2, 3), claimOpts("a:1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishJob(ctx, j.ID, "a:1", JobPaused, "interrupted"); err != nil {
		t.Fatal(err)
	}
	e.must(s.Rotate(ctx, "confidential", "routine"))
	// The ring rotated while the job was paused: a job to version 3
	// replaces it, from the start.
	n, resumed, err := s.ClaimJob(ctx, jobSpec(3, 7), claimOpts("b:2"))
	if err != nil || resumed || n.ID == j.ID || n.ToVersion != 3 || n.LastPK != nil {
		t.Fatalf("claim after rotation = %+v, %v, %v", n, resumed, err)
	}
	old, err := s.Job(ctx, j.ID)
	if err != nil || old.State != JobCancelled || !strings.Contains(old.Error, "superseded") || old.FinishedAt.IsZero() {
		t.Fatalf("old job = %+v, %v", old, err)
	}
	// A compromise job (one source version) supersedes a live routine job
	// only by taking it over.
	spec := jobSpec(3, 2)
	spec.FromVersion = 2
	if _, _, err := s.ClaimJob(ctx, spec, claimOpts("c:3")); !errors.Is(err, ErrJobBusy) {
		t.Fatalf("claim over a live job with other versions = %v, want ErrJobBusy", err)
	}
	c, _, err := s.ClaimJob(ctx, spec, ClaimOpts{Owner: "c:3", StaleAfter: time.Minute, Takeover: true, Reason: "compromise"})
	if err != nil || c.FromVersion != 2 || c.ID == n.ID || !c.Forced {
		t.Fatalf("compromise claim = %+v, %v", c, err)
	}
	if err := s.HeartbeatJob(ctx, n.ID, "b:2"); !errors.Is(err, ErrJobLost) {
		t.Fatalf("superseded run's heartbeat = %v, want ErrJobLost", err)
	}
	// Invalid specs are refused before touching the database.
	bad := jobSpec(3, 0)
	bad.FromVersion = 3
	if _, _, err := s.ClaimJob(ctx, bad, claimOpts("d:4")); err == nil || errors.Is(err, ErrJobBusy) {
		t.Fatalf("from_version = to_version accepted: %v", err)
	}
	if _, _, err := s.ClaimJob(ctx, jobSpec(3, 0), ClaimOpts{Owner: "x"}); err == nil {
		t.Fatal("claim without StaleAfter accepted")
	}
	if _, err := s.FinishJob(ctx, c.ID, "c:3", JobRunning, ""); err == nil {
		t.Fatal("FinishJob(running) accepted")
	}
}

func TestJobConcurrentClaims(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.ring("confidential")
	e.must(e.store.Rotate(e.ctx, "confidential", "routine"))
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = e.store.ClaimJob(e.ctx, jobSpec(2, 1), claimOpts("run:"+string(rune('a'+i))))
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrJobBusy):
			t.Errorf("concurrent claim: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d runs got the job, want exactly 1", won)
	}
}

func TestForcedLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, s := e.ctx, e.store
	e.ring("confidential")
	e.must(s.Rotate(ctx, "confidential", "routine"))

	// Refusals of the lifecycle stay refusals, and are not audited as
	// forced.
	seq := e.lastSeq()
	if _, err := s.RetireForced(ctx, "confidential", 2, "x", Override{}); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("RetireForced(active) = %v, want ErrIllegalTransition", err)
	}
	if _, err := s.ScheduleDeletionForced(ctx, "confidential", 1, 7*24*time.Hour, "x", Override{}); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("ScheduleDeletionForced(decrypt_only) = %v, want ErrIllegalTransition", err)
	}
	if _, err := s.ScheduleDeletionForced(ctx, "confidential", 1, time.Hour, "x", Override{}); !errors.Is(err, ErrDeletionWindow) {
		t.Fatalf("ScheduleDeletionForced(1h) = %v, want ErrDeletionWindow", err)
	}
	if got := eventNames(e.eventsAfter(seq)); got != "" {
		t.Fatalf("refused changes audited: %q", got)
	}

	v := e.must(s.RetireForced(ctx, "confidential", 1, "rows are test data", Override{
		Rows: map[string]int64{"public.t.c": 3, "public.u.d": 0}, Reason: "drill"}))
	if v.State != StateRetired {
		t.Fatalf("retired = %+v", v)
	}
	v = e.must(s.ScheduleDeletionForced(ctx, "confidential", 1, 7*24*time.Hour, "cleanup", Override{}))
	if v.State != StatePendingDeletion {
		t.Fatalf("scheduled = %+v", v)
	}
	es := e.eventsAfter(seq)
	if got, want := eventNames(es), "key.state key.forced key.state key.forced"; got != want {
		t.Fatalf("audit events %q, want %q", got, want)
	}
	d := es[1].Details
	if d["rows: public.t.c"] != "3" || d["rows: public.u.d"] != "0" || d["total"] != "3" || d["counted"] != "yes" ||
		d["from"] != "decrypt_only" || d["to"] != "retired" || d["reason"] != "drill" || es[1].Version != 1 {
		t.Errorf("forced retirement entry = %+v", es[1])
	}
	if d := es[3].Details; d["counted"] != "no" || d["to"] != "pending_deletion" || d["total"] != "" {
		t.Errorf("forced deletion entry = %v", d)
	}
	// Already retired: no change, no entry.
	seq = e.lastSeq()
	e.must(s.CancelDeletion(ctx, "confidential", 1, "keep"))
	e.must(s.RetireForced(ctx, "confidential", 1, "again", Override{}))
	if got := eventNames(e.eventsAfter(seq)); got != "key.state" {
		t.Fatalf("no-op forced retirement audited as %q", got)
	}
}
