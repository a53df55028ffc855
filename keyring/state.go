package keyring

import (
	"fmt"
	"slices"
)

// State is the lifecycle state of one key version. The zero value is
// invalid. The strings are stored in pgcloak.key_versions.state and never
// change meaning.
type State string

// The states of DESIGN.md §5 (see doc.go for the diagram).
const (
	// StateActive: encrypts and decrypts; exactly one per key ring.
	StateActive State = "active"
	// StateDecryptOnly: replaced by a newer version; old rows still read.
	StateDecryptOnly State = "decrypt_only"
	// StateRetired: no use at all; can be re-enabled (→ decrypt_only).
	StateRetired State = "retired"
	// StatePendingDeletion: scheduled for destruction after a 7–30 day
	// window; cancellable. No use.
	StatePendingDeletion State = "pending_deletion"
	// StateDeleted: the wrapped DEK is destroyed (crypto-shredding). Final.
	StateDeleted State = "deleted"
	// StateDisabled: compromise or suspicion; blocks every use at once.
	StateDisabled State = "disabled"
)

// States lists every valid state, in lifecycle order.
var States = []State{StateActive, StateDecryptOnly, StateRetired, StatePendingDeletion, StateDeleted, StateDisabled}

// ParseState accepts the stored spelling ("decrypt_only"); a hyphen is
// accepted for an underscore ("decrypt-only") for the CLI's sake.
func ParseState(s string) (State, error) {
	for _, st := range States {
		if string(st) == s || hyphenated(string(st)) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("keyring: unknown key state %q (one of active, decrypt_only, retired, pending_deletion, deleted, disabled)", s)
}

func hyphenated(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '_' {
			b[i] = '-'
		}
	}
	return string(b)
}

// String returns the stored spelling.
func (s State) String() string {
	if s == "" {
		return "(invalid state)"
	}
	return string(s)
}

// Valid reports whether s is one of States.
func (s State) Valid() bool { return slices.Contains(States, s) }

// CanEncrypt reports whether new values may be sealed under a version in
// state s.
func (s State) CanEncrypt() bool { return s == StateActive }

// CanDecrypt reports whether values sealed under a version in state s may
// be opened.
func (s State) CanDecrypt() bool { return s == StateActive || s == StateDecryptOnly }

// transitions is the lifecycle as a table. The same table is
// pgcloak.transition_allowed() in migrations/0001_keys.sql; a test keeps
// the two equal. Conditions beyond the table (a new active version in the
// same transaction when leaving active, the 7–30 day window, the end of
// the window before deleted) are checked by the API and by the database.
var transitions = map[State][]State{
	StateActive:          {StateDecryptOnly, StateDisabled},
	StateDecryptOnly:     {StateRetired, StateDisabled},
	StateRetired:         {StateDecryptOnly, StatePendingDeletion, StateDisabled},
	StatePendingDeletion: {StateRetired, StateDisabled, StateDeleted},
	StateDisabled:        {StateDecryptOnly, StateRetired, StatePendingDeletion},
	StateDeleted:         nil,
}

// CanTransition reports whether the lifecycle allows from → to at all.
// Nothing ever enters StateActive by a transition: new versions are born
// active, and an old version is never re-activated.
func CanTransition(from, to State) bool {
	return slices.Contains(transitions[from], to)
}

// Purpose says what the versions of a key ring are for. One key never
// serves two purposes. The zero value is invalid; the strings are stored
// in pgcloak.keyrings.purpose and bound into every wrapped DEK's
// associated data.
type Purpose string

const (
	// PurposeEncryption: AES-256-GCM column encryption (crypto/envelope).
	PurposeEncryption Purpose = "encryption"
	// PurposeSearch: blind-index keys (equality search).
	PurposeSearch Purpose = "search"
	// PurposeAudit: MAC keys for audit-log checkpoints.
	PurposeAudit Purpose = "audit"
)

// ParsePurpose accepts "encryption", "search" or "audit".
func ParsePurpose(s string) (Purpose, error) {
	switch p := Purpose(s); p {
	case PurposeEncryption, PurposeSearch, PurposeAudit:
		return p, nil
	}
	return "", fmt.Errorf("keyring: unknown purpose %q (one of encryption, search, audit)", s)
}

// String returns the stored spelling.
func (p Purpose) String() string {
	if p == "" {
		return "(invalid purpose)"
	}
	return string(p)
}

// Valid reports whether p is a known purpose.
func (p Purpose) Valid() bool {
	_, err := ParsePurpose(string(p))
	return err == nil
}
