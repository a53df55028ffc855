package keyring

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgcloak/pgcloak/hsm"
)

var (
	// ErrNotFound: no such key ring or key version.
	ErrNotFound = errors.New("keyring: not found")
	// ErrIllegalTransition: the lifecycle does not allow the requested
	// state change (see CanTransition), or it would leave a key ring
	// without an active version. Returned by the API before touching the
	// database, and mapped from the database trigger's refusal.
	ErrIllegalTransition = errors.New("keyring: illegal key state transition")
	// ErrImmutable: the change would rewrite history the key store keeps
	// immutable (deleting a version, resurrecting a destroyed key, editing
	// creation data, lowering a counter, editing the audit log).
	ErrImmutable = errors.New("keyring: change refused by the key store")
	// ErrDeletionWindow: a deletion window outside 7–30 days, or destroying
	// a version before its window has ended.
	ErrDeletionWindow = errors.New("keyring: deletion window")

	// ErrKeyDestroyed: the version was deleted; its wrapped DEK no longer
	// exists and nothing encrypted under it can be decrypted again.
	ErrKeyDestroyed = errors.New("keyring: key version destroyed")
	// ErrKeyDisabled: the version is disabled (compromise response).
	ErrKeyDisabled = errors.New("keyring: key version disabled")
	// ErrKeyRetired: the version is retired or pending deletion; it may
	// not be used until it is re-enabled (set to decrypt_only).
	ErrKeyRetired = errors.New("keyring: key version retired")
	// ErrWrongPurpose: the key ring exists for another purpose than the
	// caller asked for; one key never serves two purposes.
	ErrWrongPurpose = errors.New("keyring: key ring has another purpose")

	// ErrKeyringMismatch: EnsureKeyring found the ring with another
	// purpose or KEK than requested. Changing the KEK is `kek rotate`
	// (RewrapAll); a purpose never changes.
	ErrKeyringMismatch = errors.New("keyring: key ring exists with different settings")
	// ErrKEKNotConfigured: a version is wrapped by a KEK name that is not in
	// StoreOpts.KEKs.
	ErrKEKNotConfigured = errors.New("keyring: KEK not configured")
	// ErrNoAuditKeyring: checkpoints need the audit key ring
	// (StoreOpts.AuditKeyring), which does not exist yet.
	ErrNoAuditKeyring = errors.New("keyring: audit key ring missing")

	// ErrSchemaTooNew: the key store was migrated by a newer pgcloak.
	ErrSchemaTooNew = errors.New("keyring: key store schema is newer than this pgcloak")
	// ErrMigrationChanged: an applied migration differs from the one
	// embedded in this binary.
	ErrMigrationChanged = errors.New("keyring: applied migration differs from this pgcloak's")
)

// TransitionError reports a refused state change. It unwraps to
// ErrIllegalTransition.
type TransitionError struct {
	Keyring  string
	Version  uint32
	From, To State
	Why      string // optional hint ("rotate instead")
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("keyring: %s version %d: %s → %s is not allowed", e.Keyring, e.Version, e.From, e.To)
	if e.Why != "" {
		msg += ": " + e.Why
	}
	return msg
}

// Unwrap returns ErrIllegalTransition.
func (e *TransitionError) Unwrap() error { return ErrIllegalTransition }

// StateError reports a version whose state forbids the requested use. It
// unwraps to ErrKeyDestroyed, ErrKeyDisabled or ErrKeyRetired.
type StateError struct {
	Keyring string
	Version uint32
	State   State
	Since   time.Time // when the version entered State (deleted: when destroyed)
}

func (e *StateError) Error() string {
	at := e.Since.UTC().Format(time.RFC3339)
	switch e.State {
	case StateDeleted:
		return fmt.Sprintf("keyring: %s version %d: the key was destroyed at %s; data encrypted under it can no longer be decrypted", e.Keyring, e.Version, at)
	case StateDisabled:
		return fmt.Sprintf("keyring: %s version %d: the key is disabled since %s", e.Keyring, e.Version, at)
	default:
		return fmt.Sprintf("keyring: %s version %d: the key is %s since %s and may not be used", e.Keyring, e.Version, e.State, at)
	}
}

// Unwrap returns the sentinel for State.
func (e *StateError) Unwrap() error {
	switch e.State {
	case StateDeleted:
		return ErrKeyDestroyed
	case StateDisabled:
		return ErrKeyDisabled
	default:
		return ErrKeyRetired
	}
}

// SQLSTATEs raised by the triggers in migrations/ (class "PG" is not used
// by PostgreSQL itself).
const (
	codeImmutable  = "PGC01"
	codeTransition = "PGC02"
	codeWindow     = "PGC03"
	codeNoActive   = "PGC04"
	codeChain      = "PGC05"
)

// mapDBError turns the triggers' refusals into this package's sentinels,
// keeping the server's message (which names the rule) in the chain.
func mapDBError(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case codeTransition, codeNoActive:
		return fmt.Errorf("%w: %s", ErrIllegalTransition, pe.Message)
	case codeImmutable, codeChain:
		return fmt.Errorf("%w: %s", ErrImmutable, pe.Message)
	case codeWindow:
		return fmt.Errorf("%w: %s", ErrDeletionWindow, pe.Message)
	}
	return err
}

// transient reports whether a key-store error is an outage (connection
// lost or refused, server shutting down or overloaded, deadline) rather
// than a definitive answer. LoadDEK wraps such errors with
// hsm.ErrUnavailable so that keycache applies its outage budget.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, hsm.ErrUnavailable) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "53", "57", "58":
			return true
		}
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	var se pgx.ScanArgError
	if errors.As(err, &se) {
		return false
	}
	// Anything else from pgx that is not a server error is about the
	// connection: dial, TLS, broken pipe, timeout, pool closed.
	return true
}
