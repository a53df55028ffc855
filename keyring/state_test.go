package keyring

import (
	"errors"
	"testing"
	"time"
)

func TestParseStateAndPurpose(t *testing.T) {
	for _, st := range States {
		if got, err := ParseState(string(st)); err != nil || got != st {
			t.Errorf("ParseState(%q) = %q, %v", st, got, err)
		}
	}
	if got, err := ParseState("decrypt-only"); err != nil || got != StateDecryptOnly {
		t.Errorf("ParseState(decrypt-only) = %q, %v", got, err)
	}
	for _, bad := range []string{"", "Active", "gone"} {
		if _, err := ParseState(bad); err == nil {
			t.Errorf("ParseState(%q) accepted", bad)
		}
	}
	if State("").Valid() || State("").String() != "(invalid state)" || Purpose("").Valid() {
		t.Error("zero values must be invalid")
	}
	for _, p := range []Purpose{PurposeEncryption, PurposeSearch, PurposeAudit} {
		if got, err := ParsePurpose(string(p)); err != nil || got != p {
			t.Errorf("ParsePurpose(%q) = %q, %v", p, got, err)
		}
	}
	if _, err := ParsePurpose("signing"); err == nil {
		t.Error("ParsePurpose(signing) accepted")
	}
}

func TestLifecycleTable(t *testing.T) {
	for _, st := range States {
		if CanTransition(st, StateActive) {
			t.Errorf("%s → active allowed: nothing is ever re-activated", st)
		}
		if CanTransition(StateDeleted, st) {
			t.Errorf("deleted → %s allowed: deleted is final", st)
		}
		if st != StateDeleted && !CanTransition(st, StateDisabled) && st != StateDisabled {
			t.Errorf("%s → disabled refused: every live version can be disabled", st)
		}
	}
	if CanTransition(StateActive, StateRetired) || CanTransition(StateActive, StatePendingDeletion) || CanTransition(StateDecryptOnly, StatePendingDeletion) {
		t.Error("a shortcut past retirement is allowed")
	}
	if !StateActive.CanEncrypt() || StateDecryptOnly.CanEncrypt() || !StateDecryptOnly.CanDecrypt() || StateRetired.CanDecrypt() {
		t.Error("CanEncrypt/CanDecrypt")
	}
	se := &StateError{Keyring: "c", Version: 2, State: StateDeleted, Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if !errors.Is(se, ErrKeyDestroyed) || se.Error() != "keyring: c version 2: the key was destroyed at 2026-01-01T00:00:00Z; data encrypted under it can no longer be decrypted" {
		t.Errorf("StateError = %q", se)
	}
	te := &TransitionError{Keyring: "c", Version: 1, From: StateActive, To: StateRetired, Why: "rotate"}
	if !errors.Is(te, ErrIllegalTransition) || te.Error() != "keyring: c version 1: active → retired is not allowed: rotate" {
		t.Errorf("TransitionError = %q", te)
	}
}
