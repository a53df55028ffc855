package rotation

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgcloak/pgcloak/keyring"
)

const tick = 100 * time.Millisecond

// The count trigger sees what this process has not flushed yet and what
// other processes have flushed; the rotation is audited with a reason
// naming the trigger, and the new version is not rotated again before it
// reaches the limit itself.
func TestCountTrigger(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.newProc("a", tick, []Policy{{Ring: "confidential", RotateAfter: 24 * time.Hour, RotateAfterEncryptions: 50}})
	e.run(p)
	waitFor(t, 10*time.Second, "leadership", p.s.Leading)

	// 30 flushed by another proxy, 19 counted here: 49, not due.
	other := e.store()
	other.CountEncryptions(e.ring.ID, 1, 30)
	if err := other.Flush(e.ctx); err != nil {
		t.Fatal(err)
	}
	p.store.CountEncryptions(e.ring.ID, 1, 19)
	time.Sleep(5 * tick)
	if vs := e.versions(); len(vs) != 1 {
		t.Fatalf("rotated at 49 of 50 encryptions: %d versions", len(vs))
	}
	// One more, still unflushed: due.
	p.store.CountEncryptions(e.ring.ID, 1, 1)
	waitFor(t, 10*time.Second, "rotation to version 2", func() bool { return p.logs.count("key rotated on schedule") == 1 })
	vs := e.versions()
	if vs[1].State != keyring.StateDecryptOnly || vs[2].State != keyring.StateActive {
		t.Fatalf("states after the rotation: v1 %s, v2 %s", vs[1].State, vs[2].State)
	}
	const reason = "scheduled rotation: encryptions: 50 values sealed, rotate_after_encryptions = 50"
	if vs[1].StateReason != reason {
		t.Errorf("v1 state_reason %q, want %q", vs[1].StateReason, reason)
	}
	if got := e.rotations(); len(got) != 1 || got[0] != reason {
		t.Errorf("key.rotate audit reasons %q, want [%q]", got, reason)
	}
	lines := p.logs.lines("key rotated on schedule")
	if len(lines) != 1 || lines[0]["trigger"] != "encryptions" || lines[0]["previous"] != float64(1) || lines[0]["version"] != float64(2) {
		t.Errorf("rotation log lines %v", lines)
	}
	// Version 2 has sealed nothing: no further rotation.
	time.Sleep(5 * tick)
	if n := len(e.versions()); n != 2 {
		t.Errorf("%d versions after a quiet period, want 2", n)
	}
}

// The age trigger uses the key store's clock and the activation time.
func TestAgeTrigger(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.newProc("a", tick, []Policy{{Ring: "confidential", RotateAfter: time.Hour, RotateAfterEncryptions: 1 << 30}})
	e.run(p)
	waitFor(t, 10*time.Second, "leadership", p.s.Leading)
	time.Sleep(3 * tick)
	if n := len(e.versions()); n != 1 {
		t.Fatalf("%d versions before the version is an hour old", n)
	}
	e.makeDue(2 * time.Hour)
	waitFor(t, 10*time.Second, "rotation by age", func() bool { return len(e.versions()) == 2 })
	got := e.rotations()
	if len(got) != 1 || !strings.HasPrefix(got[0], "scheduled rotation: age: active for 2h0m") || !strings.HasSuffix(got[0], "rotate_after = 1h0m0s") {
		t.Errorf("key.rotate audit reasons %q", got)
	}
	time.Sleep(5 * tick)
	if n := len(e.versions()); n != 2 {
		t.Errorf("%d versions: the new version was rotated again", n)
	}
}

// Two schedulers on one key store: exactly one leads, and a due ring is
// rotated exactly once.
func TestOneLeaderOneRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	policies := []Policy{{Ring: "confidential", RotateAfter: time.Hour, RotateAfterEncryptions: 1 << 30}}
	a, b := e.newProc("a", tick, policies), e.newProc("b", tick, policies)
	e.run(a)
	e.run(b)
	waitFor(t, 10*time.Second, "a leader", func() bool { return len(leaders(a, b)) == 1 })
	for range 10 { // several election rounds: still one
		time.Sleep(tick / 2)
		if l := leaders(a, b); len(l) != 1 {
			t.Fatalf("%d leaders", len(l))
		}
	}
	if e.lockHolder() == 0 {
		t.Error("nobody holds the advisory lock in pg_locks")
	}
	e.makeDue(2 * time.Hour)
	waitFor(t, 10*time.Second, "rotation", func() bool { return len(e.versions()) == 2 })
	time.Sleep(5 * tick)
	if n, r := len(e.versions()), e.rotations(); n != 2 || len(r) != 1 {
		t.Errorf("%d versions, rotations %q; want exactly one rotation", n, r)
	}
	leader, follower := leaders(a, b)[0], a
	if follower == leader {
		follower = b
	}
	if n := leader.logs.count("key rotated on schedule"); n != 1 {
		t.Errorf("the leader logged %d rotations", n)
	}
	if n := follower.logs.count("key rotated on schedule") + follower.logs.count("rotation leadership acquired"); n != 0 {
		t.Errorf("the follower led or rotated (%d log lines)", n)
	}
}

// Leadership is only an optimisation: two schedulers that both act at the
// same moment (as when a leader has not noticed yet that it lost its
// session) still rotate each due version exactly once.
func TestSimultaneousChecksRotateOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	policies := []Policy{{Ring: "confidential", RotateAfter: time.Hour, RotateAfterEncryptions: 1 << 30}}
	procs := []*proc{e.newProc("a", tick, policies), e.newProc("b", tick, policies), e.newProc("c", tick, policies)}
	const rounds = 5
	for round := 1; round <= rounds; round++ {
		e.makeDue(2 * time.Hour)
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			mu      sync.Mutex
			rotated int
		)
		for _, p := range procs {
			wg.Go(func() {
				<-start
				now := time.Now()
				if _, ok := p.s.checkRing(e.ctx, policies[0], now); ok {
					mu.Lock()
					rotated++
					mu.Unlock()
				}
			})
		}
		close(start)
		wg.Wait()
		if rotated != 1 {
			t.Fatalf("round %d: %d schedulers rotated, want 1", round, rotated)
		}
	}
	vs := e.versions()
	if len(vs) != rounds+1 || vs[rounds+1].State != keyring.StateActive {
		t.Errorf("%d versions, want %d with the last active", len(vs), rounds+1)
	}
	if r := e.rotations(); len(r) != rounds {
		t.Errorf("%d key.rotate entries, want %d", len(r), rounds)
	}
}

// A leader whose session ends (its connection is terminated, as when its
// process dies) loses the lock at once; a scheduler takes over within a few
// intervals. A leader that stops releases the lock and the other takes
// over and rotates.
func TestLeaderTakeover(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	policies := []Policy{{Ring: "confidential", RotateAfter: time.Hour, RotateAfterEncryptions: 1 << 30}}
	a, b := e.newProc("a", tick, policies), e.newProc("b", tick, policies)
	e.run(a)
	e.run(b)
	waitFor(t, 10*time.Second, "a leader", func() bool { return len(leaders(a, b)) == 1 })
	first := leaders(a, b)[0]

	// The leader's session is terminated.
	pid := e.lockHolder()
	if pid == 0 {
		t.Fatal("no lock holder in pg_locks")
	}
	var ok bool
	if err := e.pool.QueryRow(e.ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d) = %v, %v", pid, ok, err)
	}
	waitFor(t, 10*tick+5*time.Second, "the old leader notices", func() bool { return first.logs.count("rotation leadership lost") == 1 })
	start := time.Now()
	waitFor(t, 10*time.Second, "a new leader", func() bool {
		p := e.lockHolder()
		return p != 0 && p != pid && len(leaders(a, b)) == 1
	})
	t.Logf("leader again %v after the old one noticed", time.Since(start))

	// The leader stops: the other takes over and does the work.
	leader := leaders(a, b)[0]
	other := a
	if leader == a {
		other = b
	}
	leader.stop()
	if n := leader.logs.count("rotation leadership released"); n != 1 {
		t.Errorf("stopped leader logged %d releases", n)
	}
	start = time.Now()
	waitFor(t, 10*time.Second, "the other takes over", other.s.Leading)
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("takeover after %v (interval %v)", el, tick)
	}
	e.makeDue(2 * time.Hour)
	waitFor(t, 10*time.Second, "rotation by the new leader", func() bool { return other.logs.count("key rotated on schedule") == 1 })
	if len(e.versions()) != 2 || leader.logs.count("key rotated on schedule") != 0 {
		t.Error("the rotation was not made by the new leader")
	}
}

// Close releases the lock; Run cannot run twice or after Close.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	p := e.newProc("a", tick, nil)
	e.run(p)
	waitFor(t, 10*time.Second, "leadership", p.s.Leading)
	if err := p.s.Run(e.ctx); err == nil {
		t.Error("second Run returned nil")
	}
	p.s.Close()
	p.s.Close()
	if p.s.Leading() || e.lockHolder() != 0 {
		t.Errorf("after Close: leading %v, lock holder %d", p.s.Leading(), e.lockHolder())
	}
	if err := p.s.Run(e.ctx); err == nil {
		t.Error("Run after Close returned nil")
	}
	if n := p.logs.count("rotation leadership acquired"); n != 1 {
		t.Errorf("%d acquisitions logged", n)
	}
}
