package keyring

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLifecycleHappyPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, s := e.ctx, e.store

	kr := e.ring("confidential")
	if kr.ID == 0 || kr.Purpose != PurposeEncryption || kr.KEK != "hsm" || kr.CreatedBy != "tester" {
		t.Fatalf("ring = %+v", kr)
	}
	// Ensuring again changes nothing and creates no second version.
	again, created, err := s.EnsureKeyring(ctx, KeyringSpec{Name: "confidential", Purpose: PurposeEncryption, Classification: "confidential", KEK: "hsm"})
	if err != nil || created || again.ID != kr.ID {
		t.Fatalf("second EnsureKeyring = %+v, %v, %v", again, created, err)
	}
	v1 := e.must(s.ActiveVersion(ctx, "confidential"))
	if v1.Version != 1 || v1.State != StateActive || v1.ActivatedAt.IsZero() || v1.CreatedBy != "tester" || v1.KEK != "hsm" {
		t.Fatalf("v1 = %+v", v1)
	}

	v2 := e.must(s.Rotate(ctx, "confidential", "routine"))
	if v2.Version != 2 || v2.State != StateActive {
		t.Fatalf("rotate = %+v", v2)
	}
	old := e.must(s.Get(ctx, "confidential", 1))
	if old.State != StateDecryptOnly || old.StateReason != "routine" || old.StateChangedBy != "tester" || old.StateChangedRole != "postgres" {
		t.Fatalf("v1 after rotate = %+v", old)
	}

	// Both versions decrypt; their DEKs differ.
	k1, err := s.LoadDEK(ctx, kr.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := s.LoadDEK(ctx, kr.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	if k1.Len() != DEKSize || k2.Len() != DEKSize || k1.Equal(k2) {
		t.Fatalf("DEKs: %d, %d bytes, equal %v", k1.Len(), k2.Len(), k1.Equal(k2))
	}

	// decrypt_only → retired → decrypt_only (re-enable) → retired.
	e.must(s.SetState(ctx, "confidential", 1, StateRetired, "no rows left"))
	if _, err := s.LoadDEK(ctx, kr.ID, 1); !errors.Is(err, ErrKeyRetired) {
		t.Fatalf("LoadDEK(retired) = %v, want ErrKeyRetired", err)
	}
	e.must(s.SetState(ctx, "confidential", 1, StateDecryptOnly, "restore from backup needs it"))
	again1, err := s.LoadDEK(ctx, kr.ID, 1)
	if err != nil || !again1.Equal(k1) {
		t.Fatalf("LoadDEK after re-enable: %v (same key %v)", err, again1.Equal(k1))
	}
	e.must(s.SetState(ctx, "confidential", 1, StateRetired, "done"))

	// Schedule deletion, cancel, schedule again; the window bounds hold.
	pd := e.must(s.ScheduleDeletion(ctx, "confidential", 1, 7*24*time.Hour, "policy"))
	if pd.State != StatePendingDeletion || pd.PriorState != StateRetired {
		t.Fatalf("scheduled = %+v", pd)
	}
	if d := pd.DeletionAfter.Sub(pd.StateChangedAt); d != 7*24*time.Hour {
		t.Fatalf("deletion window = %v, want 168h", d)
	}
	back := e.must(s.CancelDeletion(ctx, "confidential", 1, "still needed"))
	if back.State != StateRetired || !back.DeletionAfter.IsZero() {
		t.Fatalf("cancelled = %+v", back)
	}
	e.must(s.ScheduleDeletion(ctx, "confidential", 1, 30*24*time.Hour, "policy"))

	// Not due yet: nothing destroyed.
	if got, err := s.DestroyDue(ctx); err != nil || len(got) != 0 {
		t.Fatalf("DestroyDue before the window = %v, %v", got, err)
	}
	e.timeTravel(kr.ID, 1, time.Minute)
	destroyed, err := s.DestroyDue(ctx)
	if err != nil || len(destroyed) != 1 || destroyed[0].Version != 1 || destroyed[0].State != StateDeleted || !destroyed[0].Destroyed {
		t.Fatalf("DestroyDue = %+v, %v", destroyed, err)
	}
	var wrapped []byte
	if err := e.pool.QueryRow(ctx, "SELECT wrapped_dek FROM pgcloak.key_versions WHERE keyring_id = $1 AND version = 1", int32(kr.ID)).Scan(&wrapped); err != nil || wrapped != nil {
		t.Fatalf("wrapped_dek after destroy = %x, %v", wrapped, err)
	}
	_, err = s.LoadDEK(ctx, kr.ID, 1)
	var se *StateError
	if !errors.Is(err, ErrKeyDestroyed) || !errors.As(err, &se) || se.Since.IsZero() || !strings.Contains(err.Error(), "destroyed at") {
		t.Fatalf("LoadDEK(deleted) = %v, want ErrKeyDestroyed saying when", err)
	}
	// The rest of the ring is unaffected.
	if k, err := s.LoadDEK(ctx, kr.ID, 2); err != nil || !k.Equal(k2) {
		t.Fatalf("LoadDEK(v2) after destroying v1: %v", err)
	}

	// The audit log recorded everything, in order, and verifies.
	tail, err := s.AuditTail(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, en := range tail {
		events = append(events, en.Event)
	}
	want := "keyring.create key.create " + // the audit key ring (newEnv)
		"keyring.create key.create " + // EnsureKeyring
		"key.state key.create key.rotate " + // Rotate: demote v1, create v2
		"key.state key.access_denied " + // retire v1, refused LoadDEK
		"key.state key.state " + // re-enable, retire
		"key.state key.state key.state " + // schedule, cancel, schedule
		"key.destroy key.access_denied" // DestroyDue, refused LoadDEK
	if got := strings.Join(events, " "); got != want {
		t.Fatalf("audit events:\n got %s\nwant %s", got, want)
	}
	rep, err := s.VerifyAudit(ctx)
	if err != nil || rep.Tampered() || rep.Entries != int64(len(tail)) {
		t.Fatalf("VerifyAudit = %+v, %v", rep, err)
	}
}
