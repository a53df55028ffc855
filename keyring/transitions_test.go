package keyring

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// statesRing creates ring name with one version in every state and
// returns version by state:
// v1 deleted, v2 pending_deletion, v3 retired, v4 disabled, v5 decrypt_only, v6 active.
func (e *env) statesRing(name string) (Keyring, map[State]uint32) {
	e.t.Helper()
	s, ctx := e.store, e.ctx
	kr := e.ring(name)
	for range 5 {
		e.must(s.Rotate(ctx, name, "setup"))
	}
	for _, v := range []uint32{1, 2, 3} {
		e.must(s.SetState(ctx, name, v, StateRetired, "setup"))
	}
	for _, v := range []uint32{1, 2} {
		e.must(s.ScheduleDeletion(ctx, name, v, MinDeletionWindow, "setup"))
	}
	e.timeTravel(kr.ID, 1, time.Hour)
	if got, err := s.DestroyDue(ctx); err != nil || len(got) != 1 {
		e.t.Fatalf("DestroyDue = %v, %v", got, err)
	}
	e.must(s.SetState(ctx, name, 4, StateDisabled, "setup"))
	m := map[State]uint32{StateDeleted: 1, StatePendingDeletion: 2, StateRetired: 3, StateDisabled: 4, StateDecryptOnly: 5, StateActive: 6}
	for st, v := range m {
		if got := e.must(s.Get(ctx, name, v)); got.State != st {
			e.t.Fatalf("setup: version %d is %s, want %s", v, got.State, st)
		}
	}
	return kr, m
}

// apiTransition asks the API for from → to the way the CLI would.
func apiTransition(e *env, ring string, v uint32, from, to State) error {
	switch {
	case to == StatePendingDeletion:
		_, err := e.store.ScheduleDeletion(e.ctx, ring, v, MinDeletionWindow, "test")
		return err
	case from == StatePendingDeletion && to == StateRetired:
		_, err := e.store.CancelDeletion(e.ctx, ring, v, "test")
		return err
	default:
		_, err := e.store.SetState(e.ctx, ring, v, to, "test")
		return err
	}
}

// apiAllowed is what the API does on its own: the lifecycle table, except
// that leaving active is only by rotation (Disable rotates by itself) and
// deleted is reached only through DestroyDue.
func apiAllowed(from, to State) bool {
	switch {
	case to == StateDeleted:
		return false
	case from == StateActive:
		return to == StateDisabled
	}
	return CanTransition(from, to)
}

func TestTransitionsThroughAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	n := 0
	var kr Keyring
	var vs map[State]uint32
	fresh := true
	for _, from := range States {
		for _, to := range States {
			if from == to {
				continue
			}
			if fresh {
				n++
				kr, vs = e.statesRing(fmt.Sprintf("ring%d", n))
				fresh = false
			}
			err := apiTransition(e, kr.Name, vs[from], from, to)
			got := e.must(e.store.Get(e.ctx, kr.Name, vs[from]))
			if apiAllowed(from, to) {
				if err != nil || got.State != to {
					t.Errorf("%s → %s: err %v, state %s; want allowed", from, to, err, got.State)
				}
				fresh = true
				continue
			}
			if !errors.Is(err, ErrIllegalTransition) {
				t.Errorf("%s → %s: err = %v, want ErrIllegalTransition", from, to, err)
			}
			if got.State != from {
				t.Errorf("%s → %s refused but state is now %s", from, to, got.State)
			}
		}
	}
}

// TestTransitionsThroughSQL checks the trigger directly: every pair, by a
// plain UPDATE, with the deferred check forced and the change rolled back.
func TestTransitionsThroughSQL(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	kr, vs := e.statesRing("confidential")
	// Make the pending version's window over, so that the table itself
	// (not the window) decides pending_deletion → deleted.
	e.timeTravel(kr.ID, vs[StatePendingDeletion], time.Hour)
	c := e.conn()
	for _, from := range States {
		for _, to := range States {
			if from == to {
				continue
			}
			set := "state = $3, state_changed_by = 'sql'"
			switch to {
			case StateDeleted:
				set += ", wrapped_dek = NULL"
			case StatePendingDeletion:
				set += ", deletion_after = now() + interval '10 days'"
			}
			_, err := c.Exec(e.ctx, "BEGIN")
			if err == nil {
				_, err = c.Exec(e.ctx, "UPDATE pgcloak.key_versions SET "+set+" WHERE keyring_id = $1 AND version = $2",
					int32(kr.ID), int32(vs[from]), string(to))
			}
			if err == nil {
				_, err = c.Exec(e.ctx, "SET CONSTRAINTS ALL IMMEDIATE")
			}
			if _, rerr := c.Exec(e.ctx, "ROLLBACK"); rerr != nil {
				t.Fatal(rerr)
			}
			// Leaving active is refused because no other version becomes
			// active in the same transaction.
			want := CanTransition(from, to) && from != StateActive
			if want && err != nil {
				t.Errorf("SQL %s → %s refused: %v", from, to, err)
			}
			if !want {
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || (pe.Code != codeTransition && pe.Code != codeNoActive && pe.Code != codeImmutable) {
					t.Errorf("SQL %s → %s: err = %v, want a trigger refusal", from, to, err)
				}
			}
		}
	}
	// The SQL table and the Go table agree on every pair.
	for _, from := range States {
		for _, to := range States {
			var ok bool
			if err := e.pool.QueryRow(e.ctx, "SELECT pgcloak.transition_allowed($1, $2)", string(from), string(to)).Scan(&ok); err != nil {
				t.Fatal(err)
			}
			if ok != CanTransition(from, to) {
				t.Errorf("transition_allowed(%s, %s) = %v, CanTransition = %v", from, to, ok, CanTransition(from, to))
			}
		}
	}
}

func TestDatabaseGuards(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	kr, vs := e.statesRing("confidential")
	id := int32(kr.ID)
	refused := func(what, sql string, args ...any) {
		t.Helper()
		if _, err := e.pool.Exec(e.ctx, sql, args...); err == nil {
			t.Errorf("%s: accepted", what)
		}
	}
	deleted, pending, active := int32(vs[StateDeleted]), int32(vs[StatePendingDeletion]), int32(vs[StateActive])
	refused("resurrect a deleted version", "UPDATE pgcloak.key_versions SET state = 'retired', wrapped_dek = '\\x01' WHERE keyring_id = $1 AND version = $2", id, deleted)
	refused("restore a destroyed DEK", "UPDATE pgcloak.key_versions SET wrapped_dek = '\\x01' WHERE keyring_id = $1 AND version = $2", id, deleted)
	refused("touch a deleted version", "UPDATE pgcloak.key_versions SET state_reason = 'x' WHERE keyring_id = $1 AND version = $2", id, deleted)
	refused("delete a version row", "DELETE FROM pgcloak.key_versions WHERE keyring_id = $1 AND version = $2", id, deleted)
	refused("truncate versions", "TRUNCATE pgcloak.key_versions CASCADE")
	refused("delete a key ring", "DELETE FROM pgcloak.keyrings WHERE id = $1", id)
	refused("rename a key ring", "UPDATE pgcloak.keyrings SET name = 'other' WHERE id = $1", id)
	refused("change a ring's purpose", "UPDATE pgcloak.keyrings SET purpose = 'search' WHERE id = $1", id)
	refused("destroy the active DEK", "UPDATE pgcloak.key_versions SET wrapped_dek = NULL WHERE keyring_id = $1 AND version = $2", id, active)
	refused("shorten a deletion window", "UPDATE pgcloak.key_versions SET deletion_after = now() WHERE keyring_id = $1 AND version = $2", id, pending)
	refused("delete before the window ends", "UPDATE pgcloak.key_versions SET state = 'deleted', wrapped_dek = NULL WHERE keyring_id = $1 AND version = $2", id, pending)
	refused("lower a counter", "UPDATE pgcloak.key_versions SET encryptions = encryptions - 1 WHERE keyring_id = $1 AND version = $2", id, active)
	refused("re-activate an old version", "UPDATE pgcloak.key_versions SET state = 'active' WHERE keyring_id = $1 AND version = $2", id, int32(vs[StateDecryptOnly]))
	refused("insert a version out of sequence", "INSERT INTO pgcloak.key_versions (keyring_id, version, state, wrapped_dek, kek_name, created_by, state_changed_by) VALUES ($1, 99, 'active', '\\x01', 'hsm', 'x', 'x')", id)
	refused("insert a second active version", "INSERT INTO pgcloak.key_versions (keyring_id, version, state, wrapped_dek, kek_name, created_by, state_changed_by) VALUES ($1, 7, 'active', '\\x01', 'hsm', 'x', 'x')", id)
	refused("insert a version that is not active", "INSERT INTO pgcloak.key_versions (keyring_id, version, state, wrapped_dek, kek_name, created_by, state_changed_by) VALUES ($1, 7, 'decrypt_only', '\\x01', 'hsm', 'x', 'x')", id)
	refused("schedule deletion with a 3-day window", "UPDATE pgcloak.key_versions SET state = 'pending_deletion', deletion_after = now() + interval '3 days' WHERE keyring_id = $1 AND version = $2", id, int32(vs[StateRetired]))
	refused("schedule deletion with a 31-day window", "UPDATE pgcloak.key_versions SET state = 'pending_deletion', deletion_after = now() + interval '31 days' WHERE keyring_id = $1 AND version = $2", id, int32(vs[StateRetired]))

	// Even with the triggers off, the index allows one active version only.
	c := e.conn()
	if _, err := c.Exec(e.ctx, "SET session_replication_role = replica"); err != nil {
		t.Fatal(err)
	}
	_, err := c.Exec(e.ctx, "UPDATE pgcloak.key_versions SET state = 'active' WHERE keyring_id = $1 AND version = $2", id, int32(vs[StateDecryptOnly]))
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" || pe.ConstraintName != "key_versions_one_active" {
		t.Fatalf("second active version with triggers off: err = %v, want unique violation of key_versions_one_active", err)
	}
}

func TestDeletionWindowAndDisable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, s := e.ctx, e.store
	kr := e.ring("confidential")
	e.must(s.Rotate(ctx, "confidential", "r"))
	e.must(s.SetState(ctx, "confidential", 1, StateRetired, "r"))
	for _, w := range []time.Duration{0, MinDeletionWindow - time.Second, MaxDeletionWindow + time.Second, -MinDeletionWindow} {
		if _, err := s.ScheduleDeletion(ctx, "confidential", 1, w, "x"); !errors.Is(err, ErrDeletionWindow) {
			t.Errorf("window %v: err = %v, want ErrDeletionWindow", w, err)
		}
	}
	if _, err := s.ScheduleDeletion(ctx, "confidential", 2, MinDeletionWindow, "x"); !errors.Is(err, ErrIllegalTransition) {
		t.Errorf("schedule deletion of the active version: err = %v", err)
	}

	// Disabling the active version activates a new one in the same
	// transaction; the disabled one refuses to load at once.
	dis, newActive, err := s.Disable(ctx, "confidential", 2, "suspected leak")
	if err != nil || dis.State != StateDisabled || newActive == nil || newActive.Version != 3 || newActive.State != StateActive {
		t.Fatalf("Disable(active) = %+v, %+v, %v", dis, newActive, err)
	}
	if _, err := s.LoadDEK(ctx, kr.ID, 2); !errors.Is(err, ErrKeyDisabled) {
		t.Fatalf("LoadDEK(disabled) = %v", err)
	}
	// A disabled version can be scheduled for deletion; cancelling returns
	// it to disabled, not to a usable state.
	e.must(s.ScheduleDeletion(ctx, "confidential", 2, MaxDeletionWindow, "compromise"))
	if v := e.must(s.CancelDeletion(ctx, "confidential", 2, "hold")); v.State != StateDisabled {
		t.Fatalf("cancel deletion of a disabled version → %s, want disabled", v.State)
	}
	// Explicit re-enable after a false alarm.
	e.must(s.SetState(ctx, "confidential", 2, StateDecryptOnly, "false alarm"))
	if _, err := s.LoadDEK(ctx, kr.ID, 2); err != nil {
		t.Fatalf("LoadDEK after re-enable: %v", err)
	}
	// The reencryption loader may read disabled versions, audited.
	e.must(s.SetState(ctx, "confidential", 2, StateDisabled, "again"))
	if _, err := s.Loader(LoaderOpts{AllowDisabled: true}).LoadDEK(ctx, kr.ID, 2); err != nil {
		t.Fatalf("AllowDisabled loader: %v", err)
	}
	tail, err := s.AuditTail(ctx, 1)
	if err != nil || len(tail) != 1 || tail[0].Event != "key.disabled_access" || tail[0].Version != 2 {
		t.Fatalf("last audit entry = %+v, %v", tail, err)
	}
	// Deleted is final: not even Disable touches it.
	if _, err := s.SetState(ctx, "confidential", 1, StateDeleted, "x"); !errors.Is(err, ErrIllegalTransition) {
		t.Errorf("SetState(deleted) = %v", err)
	}
	if _, err := s.Get(ctx, "confidential", 42); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(unknown) = %v", err)
	}
	if _, err := s.Rotate(ctx, "nope", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Rotate(unknown ring) = %v", err)
	}
}
