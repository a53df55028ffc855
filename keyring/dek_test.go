package keyring

import (
	"encoding/hex"
	"errors"
	"net"
	"testing"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/hsmfake"
)

// The associated-data encoding is a stored format: it must never change.
func TestDEKAssociatedDataVector(t *testing.T) {
	got := hex.EncodeToString(DEKAssociatedData(7, "confidential:search", PurposeSearch, 3))
	want := hex.EncodeToString([]byte("pgcloak/dek/v1")) +
		"00000007" + "00000003" +
		"0013" + hex.EncodeToString([]byte("confidential:search")) +
		"0006" + hex.EncodeToString([]byte("search"))
	if got != want {
		t.Fatalf("DEKAssociatedData:\n got %s\nwant %s", got, want)
	}
	// Every input is bound: changing any one changes the bytes.
	base := string(DEKAssociatedData(1, "a", PurposeEncryption, 1))
	for _, other := range [][]byte{
		DEKAssociatedData(2, "a", PurposeEncryption, 1),
		DEKAssociatedData(1, "b", PurposeEncryption, 1),
		DEKAssociatedData(1, "a", PurposeSearch, 1),
		DEKAssociatedData(1, "a", PurposeEncryption, 2),
	} {
		if string(other) == base {
			t.Errorf("associated data does not change: %x", other)
		}
	}
}

func TestLoadDEKTampering(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, s := e.ctx, e.store
	kr := e.ring("confidential")
	e.must(s.Rotate(ctx, "confidential", "r"))
	other := e.ring("internal")
	id := int32(kr.ID)
	for _, v := range []uint32{1, 2} {
		if _, err := s.LoadDEK(ctx, kr.ID, v); err != nil {
			t.Fatalf("LoadDEK(%d) before tampering: %v", v, err)
		}
	}
	// Edit one byte of a wrapped DEK.
	e.exec(`UPDATE pgcloak.key_versions SET wrapped_dek = set_byte(wrapped_dek, 20, get_byte(wrapped_dek, 20) # 1)
		WHERE keyring_id = $1 AND version = 2`, id)
	if _, err := s.LoadDEK(ctx, kr.ID, 2); !errors.Is(err, hsm.ErrUnwrap) {
		t.Fatalf("LoadDEK(edited) = %v, want hsm.ErrUnwrap", err)
	}
	e.exec(`UPDATE pgcloak.key_versions SET wrapped_dek = set_byte(wrapped_dek, 20, get_byte(wrapped_dek, 20) # 1)
		WHERE keyring_id = $1 AND version = 2`, id)
	if _, err := s.LoadDEK(ctx, kr.ID, 2); err != nil {
		t.Fatalf("LoadDEK after undoing the edit: %v", err)
	}

	// Swap the wrapped DEKs of versions 1 and 2: both fail.
	e.exec(`UPDATE pgcloak.key_versions kv SET wrapped_dek = o.wrapped_dek
		FROM pgcloak.key_versions o WHERE kv.keyring_id = $1 AND o.keyring_id = $1 AND kv.version + o.version = 3`, id)
	for _, v := range []uint32{1, 2} {
		if _, err := s.LoadDEK(ctx, kr.ID, v); !errors.Is(err, hsm.ErrUnwrap) {
			t.Errorf("LoadDEK(%d) after swapping = %v, want hsm.ErrUnwrap", v, err)
		}
	}

	// Move a wrapped DEK to another key ring's version 1.
	e.exec(`UPDATE pgcloak.key_versions SET wrapped_dek =
		(SELECT wrapped_dek FROM pgcloak.key_versions WHERE keyring_id = $1 AND version = 2)
		WHERE keyring_id = $2 AND version = 1`, id, int32(other.ID))
	if _, err := s.LoadDEK(ctx, other.ID, 1); !errors.Is(err, hsm.ErrUnwrap) {
		t.Errorf("LoadDEK(moved to another ring) = %v, want hsm.ErrUnwrap", err)
	}
	// A DEK wrapped by another KEK (same name configured, wrong key).
	s2 := e.newStore(StoreOpts{KEKs: map[string]hsm.KEK{"hsm": hsmfake.New()}})
	if _, err := s2.LoadDEK(ctx, kr.ID, 1); !errors.Is(err, hsm.ErrUnwrap) {
		t.Errorf("LoadDEK with another KEK = %v, want hsm.ErrUnwrap", err)
	}
}

func TestLoadDEKRefusals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, s := e.ctx, e.store
	kr := e.ring("confidential")
	search, _, err := s.EnsureKeyring(ctx, KeyringSpec{Name: "confidential:search", Purpose: PurposeSearch, KEK: "hsm"})
	if err != nil {
		t.Fatal(err)
	}
	auditRing := e.must(s.ActiveVersion(ctx, "audit"))

	if _, err := s.LoadDEK(ctx, kr.ID, 9); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown version: %v", err)
	}
	if _, err := s.LoadDEK(ctx, auditRing.KeyringID, auditRing.Version); !errors.Is(err, ErrWrongPurpose) {
		t.Errorf("audit key through LoadDEK: %v", err)
	}
	if _, err := s.Loader(LoaderOpts{Purpose: PurposeEncryption}).LoadDEK(ctx, search.ID, 1); !errors.Is(err, ErrWrongPurpose) {
		t.Errorf("search key through an encryption loader: %v", err)
	}
	if _, err := s.Loader(LoaderOpts{Purpose: PurposeSearch}).LoadDEK(ctx, search.ID, 1); err != nil {
		t.Errorf("search key through a search loader: %v", err)
	}

	// The KEK is down: the error says so (keycache's outage budget).
	e.kek.SetUnavailable(true)
	_, err = s.LoadDEK(ctx, kr.ID, 1)
	e.kek.SetUnavailable(false)
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("KEK down: %v", err)
	}
	// The key store is unreachable: also hsm.ErrUnavailable.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()
	down := e.newStore(StoreOpts{DSN: "postgres://postgres@" + closedAddr + "/x?sslmode=disable&connect_timeout=2"})
	if _, err := down.LoadDEK(ctx, kr.ID, 1); !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("key store unreachable: %v", err)
	}
	// A KEK name missing from the configuration is definitive.
	none := e.newStore(StoreOpts{KEKs: map[string]hsm.KEK{"other": e.kek}})
	if _, err := none.LoadDEK(ctx, kr.ID, 1); !errors.Is(err, ErrKEKNotConfigured) || errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("KEK not configured: %v", err)
	}
}

func TestLoadDEKByState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	kr, vs := e.statesRing("confidential")
	want := map[State]error{
		StateActive: nil, StateDecryptOnly: nil,
		StateRetired: ErrKeyRetired, StatePendingDeletion: ErrKeyRetired,
		StateDisabled: ErrKeyDisabled, StateDeleted: ErrKeyDestroyed,
	}
	for st, v := range vs {
		_, err := e.store.LoadDEK(e.ctx, kr.ID, v)
		if want[st] == nil && err != nil || want[st] != nil && !errors.Is(err, want[st]) {
			t.Errorf("LoadDEK(%s) = %v, want %v", st, err, want[st])
		}
	}
	// Each refusal is audited once per interval, not once per attempt.
	for range 3 {
		_, _ = e.store.LoadDEK(e.ctx, kr.ID, vs[StateDisabled])
	}
	var denials int
	if err := e.pool.QueryRow(e.ctx, "SELECT count(*) FROM pgcloak.audit_log WHERE event = 'key.access_denied' AND version = $1",
		int32(vs[StateDisabled])).Scan(&denials); err != nil || denials != 1 {
		t.Errorf("%d access-denial entries for the disabled version, want 1 (%v)", denials, err)
	}
}
