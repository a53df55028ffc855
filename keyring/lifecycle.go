package keyring

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/keyring/audit"
)

// Deletion window bounds (the KMS window the key-management policy uses).
const (
	MinDeletionWindow = 7 * 24 * time.Hour
	MaxDeletionWindow = 30 * 24 * time.Hour
)

// Rotate creates a new active version of ring and moves the previous
// active version to decrypt_only, in one transaction holding the ring's
// row lock: concurrent rotations queue and each yields the next version
// number; there is never more than one active version.
func (s *Store) Rotate(ctx context.Context, ring, reason string) (Version, error) {
	v, _, err := s.rotate(ctx, ring, 0, reason)
	return v, err
}

// RotateIfActive rotates only if version is still the active one; if
// another process rotated first, it returns the current active version
// and rotated = false. Scheduled rotation (several proxies deciding the
// same thing) and the compromise procedure use it.
func (s *Store) RotateIfActive(ctx context.Context, ring string, version uint32, reason string) (v Version, rotated bool, err error) {
	if version == 0 {
		return Version{}, false, errors.New("keyring: RotateIfActive: version 0")
	}
	return s.rotate(ctx, ring, version, reason)
}

func (s *Store) rotate(ctx context.Context, name string, ifActive uint32, reason string) (Version, bool, error) {
	var (
		out     Version
		rotated bool
	)
	err := s.inTx(ctx, func(t *txn) error {
		ring, err := t.lockRing(ctx, name)
		if err != nil {
			return err
		}
		if ifActive != 0 {
			cur, err := t.activeVersion(ctx, ring)
			if err != nil {
				return err
			}
			if cur.Version != ifActive {
				out = cur
				return nil
			}
		}
		out, err = t.rotate(ctx, ring, StateDecryptOnly, reason)
		rotated = err == nil
		return err
	})
	if err != nil {
		return Version{}, false, fmt.Errorf("keyring: rotate %s: %w", name, err)
	}
	return out, rotated, nil
}

// rotate demotes the active version (if any) to demoteTo and creates the
// next version, active. The caller holds the ring lock.
func (t *txn) rotate(ctx context.Context, ring Keyring, demoteTo State, reason string) (Version, error) {
	var last int32
	if err := t.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM pgcloak.key_versions WHERE keyring_id = $1",
		int32(ring.ID)).Scan(&last); err != nil {
		return Version{}, err
	}
	var previous uint32
	old, err := t.activeVersion(ctx, ring)
	switch {
	case err == nil:
		previous = old.Version
		if _, err := t.transition(ctx, ring, old, demoteTo, reason, nil); err != nil {
			return Version{}, err
		}
	case !isNotFound(err):
		return Version{}, err
	}
	v, err := t.createVersion(ctx, ring, uint32(last)+1, reason)
	if err != nil {
		return Version{}, err
	}
	details := map[string]string{"reason": reason}
	if previous != 0 {
		details["previous"] = fmt.Sprint(previous)
		details["previous_state"] = string(demoteTo)
	}
	return v, t.audit(ctx, audit.EventKeyRotate, ring.Name, v.Version, details)
}

func (t *txn) activeVersion(ctx context.Context, ring Keyring) (Version, error) {
	vs, err := t.s.queryVersions(ctx, t, "WHERE kv.keyring_id = $1 AND kv.state = 'active' FOR UPDATE OF kv", int32(ring.ID))
	if err != nil {
		return Version{}, err
	}
	if len(vs) == 0 {
		return Version{}, fmt.Errorf("%w: no active version of key ring %q", ErrNotFound, ring.Name)
	}
	return vs[0], nil
}

// transition moves v to state `to`, attributed to the Store's actor, and
// audits it. window is the deletion window for pending_deletion.
func (t *txn) transition(ctx context.Context, ring Keyring, v Version, to State, reason string, window *time.Duration) (Version, error) {
	if !CanTransition(v.State, to) {
		return Version{}, &TransitionError{Keyring: ring.Name, Version: v.Version, From: v.State, To: to}
	}
	var err error
	switch to {
	case StatePendingDeletion:
		_, err = t.Exec(ctx, `UPDATE pgcloak.key_versions SET state = $3, state_changed_by = $4, state_reason = $5,
			deletion_after = now() + $6::interval WHERE keyring_id = $1 AND version = $2`,
			int32(ring.ID), int64(v.Version), string(to), t.s.actor, reason, *window)
	case StateDeleted:
		_, err = t.Exec(ctx, `UPDATE pgcloak.key_versions SET state = $3, state_changed_by = $4, state_reason = $5,
			wrapped_dek = NULL WHERE keyring_id = $1 AND version = $2`,
			int32(ring.ID), int64(v.Version), string(to), t.s.actor, reason)
	default:
		_, err = t.Exec(ctx, `UPDATE pgcloak.key_versions SET state = $3, state_changed_by = $4, state_reason = $5
			WHERE keyring_id = $1 AND version = $2`,
			int32(ring.ID), int64(v.Version), string(to), t.s.actor, reason)
	}
	if err != nil {
		return Version{}, err
	}
	nv, err := t.version(ctx, ring, v.Version)
	if err != nil {
		return Version{}, err
	}
	details := map[string]string{"from": string(v.State), "to": string(to), "reason": reason}
	event := audit.EventKeyState
	switch to {
	case StatePendingDeletion:
		details["deletion_after"] = nv.DeletionAfter.Format(time.RFC3339Nano)
	case StateDeleted:
		event = audit.EventKeyDestroy
		details["deletion_after"] = v.DeletionAfter.Format(time.RFC3339Nano)
		details["scheduled_by"] = v.StateChangedBy
	}
	return nv, t.audit(ctx, event, ring.Name, v.Version, details)
}

// changeState runs fn on the locked ring and version.
func (s *Store) changeState(ctx context.Context, op, name string, version uint32, fn func(t *txn, ring Keyring, v Version) (Version, error)) (Version, error) {
	var out Version
	err := s.inTx(ctx, func(t *txn) error {
		ring, err := t.lockRing(ctx, name)
		if err != nil {
			return err
		}
		v, err := t.version(ctx, ring, version)
		if err != nil {
			return err
		}
		out, err = fn(t, ring, v)
		return err
	})
	if err != nil {
		return Version{}, fmt.Errorf("keyring: %s %s version %d: %w", op, name, version, err)
	}
	return out, nil
}

// SetState moves a version to decrypt_only, retired or disabled. A version
// already in that state is returned unchanged. The other targets have
// their own methods, which this one names in its refusal: active →
// decrypt_only happens only by Rotate; pending_deletion by
// ScheduleDeletion; pending_deletion → retired by CancelDeletion; deleted
// by DestroyDue; nothing ever becomes active again. Disabling the active
// version rotates first (see Disable).
func (s *Store) SetState(ctx context.Context, ring string, version uint32, to State, reason string) (Version, error) {
	if !to.Valid() {
		return Version{}, fmt.Errorf("keyring: set state %s version %d: invalid state %q", ring, version, to)
	}
	if to == StateDisabled {
		v, _, err := s.Disable(ctx, ring, version, reason)
		return v, err
	}
	return s.changeState(ctx, "set state", ring, version, setStateFn(ctx, to, reason))
}

// setStateFn is SetState's change of a locked version (to is neither
// disabled nor invalid).
func setStateFn(ctx context.Context, to State, reason string) func(t *txn, kr Keyring, v Version) (Version, error) {
	return func(t *txn, kr Keyring, v Version) (Version, error) {
		if v.State == to {
			return v, nil
		}
		terr := &TransitionError{Keyring: kr.Name, Version: v.Version, From: v.State, To: to}
		switch {
		case to == StateActive:
			terr.Why = "a version never becomes active again; rotate to create a new active version"
		case v.State == StateActive:
			terr.Why = "the active version is replaced by rotating"
		case to == StatePendingDeletion:
			terr.Why = "schedule deletion with a 7 to 30 day window instead"
		case to == StateDeleted:
			terr.Why = "a version is deleted only when its deletion window has ended"
		case v.State == StatePendingDeletion:
			terr.Why = "cancel the deletion first"
		case !CanTransition(v.State, to):
		default:
			return t.transition(ctx, kr, v, to, reason, nil)
		}
		return Version{}, terr
	}
}

// Disable blocks every use of a version at once (compromise response). If
// it is the active version, a new active version is created in the same
// transaction and returned as newActive, so writes keep working. Disabling
// a pending_deletion version cancels its deletion. Deleted versions cannot
// be disabled; a disabled one is returned unchanged.
func (s *Store) Disable(ctx context.Context, ring string, version uint32, reason string) (disabled Version, newActive *Version, err error) {
	disabled, err = s.changeState(ctx, "disable", ring, version, func(t *txn, kr Keyring, v Version) (Version, error) {
		switch v.State {
		case StateDisabled:
			return v, nil
		case StateActive:
			nv, err := t.rotate(ctx, kr, StateDisabled, reason)
			if err != nil {
				return Version{}, err
			}
			newActive = &nv
			return t.version(ctx, kr, v.Version)
		}
		return t.transition(ctx, kr, v, StateDisabled, reason, nil)
	})
	if err != nil {
		return Version{}, nil, err
	}
	return disabled, newActive, nil
}

// ScheduleDeletion moves a retired or disabled version to pending_deletion;
// DestroyDue destroys it once window (7 to 30 days, ErrDeletionWindow
// otherwise) has passed, unless CancelDeletion comes first.
func (s *Store) ScheduleDeletion(ctx context.Context, ring string, version uint32, window time.Duration, reason string) (Version, error) {
	if window < MinDeletionWindow || window > MaxDeletionWindow {
		return Version{}, fmt.Errorf("keyring: schedule deletion of %s version %d: %w: %v is outside 7 to 30 days",
			ring, version, ErrDeletionWindow, window)
	}
	return s.changeState(ctx, "schedule deletion of", ring, version, scheduleDeletionFn(ctx, window, reason))
}

// scheduleDeletionFn is ScheduleDeletion's change of a locked version
// (window already checked).
func scheduleDeletionFn(ctx context.Context, window time.Duration, reason string) func(t *txn, kr Keyring, v Version) (Version, error) {
	return func(t *txn, kr Keyring, v Version) (Version, error) {
		if v.State != StateRetired && v.State != StateDisabled {
			return Version{}, &TransitionError{Keyring: kr.Name, Version: v.Version, From: v.State, To: StatePendingDeletion,
				Why: "only a retired or disabled version can be scheduled for deletion"}
		}
		return t.transition(ctx, kr, v, StatePendingDeletion, reason, &window)
	}
}

// CancelDeletion returns a pending_deletion version to the state it had
// before (retired or disabled).
func (s *Store) CancelDeletion(ctx context.Context, ring string, version uint32, reason string) (Version, error) {
	return s.changeState(ctx, "cancel deletion of", ring, version, func(t *txn, kr Keyring, v Version) (Version, error) {
		if v.State != StatePendingDeletion {
			return Version{}, &TransitionError{Keyring: kr.Name, Version: v.Version, From: v.State, To: StateRetired,
				Why: "the version is not pending deletion"}
		}
		to := v.PriorState
		if to != StateDisabled {
			to = StateRetired
		}
		return t.transition(ctx, kr, v, to, reason, nil)
	})
}

// DestroyDue deletes every pending_deletion version whose window has
// ended: the wrapped DEK is set to NULL (crypto-shredding) and the row
// stays as a tombstone. Each version is destroyed in its own transaction
// and audited (key.destroy). It returns the destroyed versions; on error,
// those destroyed before it.
func (s *Store) DestroyDue(ctx context.Context) ([]Version, error) {
	rows, err := s.pool.Query(ctx, `SELECT kr.name, kv.version FROM pgcloak.key_versions kv
		JOIN pgcloak.keyrings kr ON kr.id = kv.keyring_id
		WHERE kv.state = 'pending_deletion' AND kv.deletion_after <= now() ORDER BY kv.keyring_id, kv.version`)
	if err != nil {
		return nil, fmt.Errorf("keyring: destroy due versions: %w", err)
	}
	type due struct {
		ring    string
		version int32
	}
	var dues []due
	var d due
	_, err = pgx.ForEachRow(rows, []any{&d.ring, &d.version}, func() error {
		dues = append(dues, d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keyring: destroy due versions: %w", err)
	}
	var destroyed []Version
	for _, d := range dues {
		v, err := s.changeState(ctx, "destroy", d.ring, uint32(d.version), func(t *txn, kr Keyring, v Version) (Version, error) {
			if v.State != StatePendingDeletion {
				return Version{}, errSkip // cancelled meanwhile
			}
			return t.transition(ctx, kr, v, StateDeleted, "deletion window ended", nil)
		})
		if errors.Is(err, errSkip) {
			continue
		}
		if err != nil {
			return destroyed, err
		}
		destroyed = append(destroyed, v)
	}
	return destroyed, nil
}

var errSkip = errors.New("skip")
