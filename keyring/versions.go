package keyring

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Version is one key version's metadata (never its key bytes).
type Version struct {
	KeyringID uint32
	Keyring   string
	Purpose   Purpose
	Version   uint32
	State     State

	KEK       string // KEK that wrapped the DEK
	KEKKeyID  string // the provider's key id, when it tells (AWS KMS key ARN)
	DEKFormat string // associated-data encoding, "pgcloak/dek/v1"
	Destroyed bool   // the wrapped DEK is gone (state deleted)

	CreatedAt        time.Time
	CreatedBy        string
	ActivatedAt      time.Time
	StateChangedAt   time.Time
	StateChangedBy   string // actor
	StateChangedRole string // database role
	StateReason      string
	PriorState       State     // pending_deletion only: the state CancelDeletion restores
	DeletionAfter    time.Time // pending_deletion, deleted: end of the deletion window
	DeletedAt        time.Time // deleted: when the wrapped DEK was destroyed
	RewrappedAt      time.Time // last re-wrap (kek rotate), zero if never

	// Encryptions is the flushed, approximate number of values sealed
	// under this version (see CountEncryptions).
	Encryptions int64
}

// Age is how long the version has been active (for age-based rotation).
func (v Version) Age(now time.Time) time.Duration { return now.Sub(v.ActivatedAt) }

const versionColumns = `kv.keyring_id, kr.name, kr.purpose, kv.version, kv.state,
	kv.kek_name, kv.kek_key_id, kv.dek_format, kv.wrapped_dek IS NULL,
	kv.created_at, kv.created_by, kv.activated_at, kv.state_changed_at, kv.state_changed_by,
	kv.state_changed_role, kv.state_reason, coalesce(kv.prior_state, ''),
	kv.deletion_after, kv.deleted_at, kv.rewrapped_at, kv.encryptions`

const versionFrom = " FROM pgcloak.key_versions kv JOIN pgcloak.keyrings kr ON kr.id = kv.keyring_id "

func collectVersions(rows pgx.Rows) ([]Version, error) {
	defer rows.Close()
	var out []Version
	for rows.Next() {
		var (
			v                                 Version
			ringID, version                   int32
			purpose, state, prior             string
			activated, delAfter, deleted, rew *time.Time
		)
		if err := rows.Scan(&ringID, &v.Keyring, &purpose, &version, &state,
			&v.KEK, &v.KEKKeyID, &v.DEKFormat, &v.Destroyed,
			&v.CreatedAt, &v.CreatedBy, &activated, &v.StateChangedAt, &v.StateChangedBy,
			&v.StateChangedRole, &v.StateReason, &prior,
			&delAfter, &deleted, &rew, &v.Encryptions); err != nil {
			return nil, err
		}
		v.KeyringID, v.Version = uint32(ringID), uint32(version)
		v.Purpose, v.State, v.PriorState = Purpose(purpose), State(state), State(prior)
		v.CreatedAt, v.StateChangedAt = v.CreatedAt.UTC(), v.StateChangedAt.UTC()
		v.ActivatedAt, v.DeletionAfter, v.DeletedAt, v.RewrappedAt = utc(activated), utc(delAfter), utc(deleted), utc(rew)
		out = append(out, v)
	}
	return out, rows.Err()
}

func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func (s *Store) queryVersions(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, where string, args ...any) ([]Version, error) {
	rows, err := q.Query(ctx, "SELECT "+versionColumns+versionFrom+where, args...)
	if err != nil {
		return nil, err
	}
	return collectVersions(rows)
}

// List returns every version of every key ring, by ring id then version.
func (s *Store) List(ctx context.Context) ([]Version, error) {
	vs, err := s.queryVersions(ctx, s.pool, "ORDER BY kv.keyring_id, kv.version")
	return vs, wrapIf("keyring: list versions", err)
}

// Versions returns the versions of one key ring, oldest first
// (ErrNotFound if the ring does not exist).
func (s *Store) Versions(ctx context.Context, ring string) ([]Version, error) {
	vs, err := s.queryVersions(ctx, s.pool, "WHERE kr.name = $1 ORDER BY kv.version", ring)
	if err != nil {
		return nil, fmt.Errorf("keyring: %s: versions: %w", ring, err)
	}
	if len(vs) == 0 {
		if _, err := s.Keyring(ctx, ring); err != nil {
			return nil, err
		}
	}
	return vs, nil
}

// Get returns one version (ErrNotFound if none).
func (s *Store) Get(ctx context.Context, ring string, version uint32) (Version, error) {
	vs, err := s.queryVersions(ctx, s.pool, "WHERE kr.name = $1 AND kv.version = $2", ring, int64(version))
	if err != nil {
		return Version{}, fmt.Errorf("keyring: %s version %d: %w", ring, version, err)
	}
	if len(vs) == 0 {
		return Version{}, fmt.Errorf("%w: %s version %d", ErrNotFound, ring, version)
	}
	return vs[0], nil
}

// GetByID returns one version by key ring id (as in a ciphertext header).
func (s *Store) GetByID(ctx context.Context, keyringID, version uint32) (Version, error) {
	vs, err := s.queryVersions(ctx, s.pool, "WHERE kv.keyring_id = $1 AND kv.version = $2", int64(keyringID), int64(version))
	if err != nil {
		return Version{}, fmt.Errorf("keyring: key ring %d version %d: %w", keyringID, version, err)
	}
	if len(vs) == 0 {
		return Version{}, fmt.Errorf("%w: key ring %d version %d", ErrNotFound, keyringID, version)
	}
	return vs[0], nil
}

// ActiveVersion returns the ring's active version, the one new values are
// sealed with.
func (s *Store) ActiveVersion(ctx context.Context, ring string) (Version, error) {
	vs, err := s.queryVersions(ctx, s.pool, "WHERE kr.name = $1 AND kv.state = 'active'", ring)
	if err != nil {
		return Version{}, fmt.Errorf("keyring: %s: active version: %w", ring, err)
	}
	if len(vs) == 0 {
		return Version{}, fmt.Errorf("%w: no active version of key ring %q", ErrNotFound, ring)
	}
	return vs[0], nil
}

// version reads one version inside t, locking its row.
func (t *txn) version(ctx context.Context, ring Keyring, version uint32) (Version, error) {
	vs, err := t.s.queryVersions(ctx, t, "WHERE kv.keyring_id = $1 AND kv.version = $2 FOR UPDATE OF kv",
		int32(ring.ID), int64(version))
	if err != nil {
		return Version{}, err
	}
	if len(vs) == 0 {
		return Version{}, fmt.Errorf("%w: %s version %d", ErrNotFound, ring.Name, version)
	}
	return vs[0], nil
}
