package keyring

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/keyring/audit"
)

// Keyring is one key ring: the versions of one key, for one purpose.
type Keyring struct {
	ID             uint32 // in every ciphertext header and wrapped DEK's associated data
	Name           string // "confidential", "confidential:search", "audit"
	Purpose        Purpose
	Classification string
	Environment    string
	KEK            string // KEK that wraps new versions
	CreatedAt      time.Time
	CreatedBy      string
	UpdatedAt      time.Time
	UpdatedBy      string
}

// KeyringSpec describes a key ring for EnsureKeyring.
type KeyringSpec struct {
	Name           string  // required; [a-z0-9][a-z0-9_:./-]{0,62}
	Purpose        Purpose // required
	Classification string  // "confidential"; informational, audited when it changes
	Environment    string  // optional ("prod")
	KEK            string  // required: a name in StoreOpts.KEKs
}

var ringName = regexp.MustCompile(`^[a-z0-9][a-z0-9_:./-]{0,62}$`)

// ValidKeyringName reports whether name can name a key ring.
func ValidKeyringName(name string) bool { return ringName.MatchString(name) }

const keyringColumns = "id, name, purpose, classification, environment, kek_name, created_at, created_by, updated_at, updated_by"

func collectKeyrings(rows pgx.Rows) ([]Keyring, error) {
	defer rows.Close()
	var out []Keyring
	for rows.Next() {
		var (
			k       Keyring
			id      int32
			purpose string
		)
		if err := rows.Scan(&id, &k.Name, &purpose, &k.Classification, &k.Environment, &k.KEK,
			&k.CreatedAt, &k.CreatedBy, &k.UpdatedAt, &k.UpdatedBy); err != nil {
			return nil, err
		}
		k.ID, k.Purpose = uint32(id), Purpose(purpose)
		k.CreatedAt, k.UpdatedAt = k.CreatedAt.UTC(), k.UpdatedAt.UTC()
		out = append(out, k)
	}
	return out, rows.Err()
}

// EnsureKeyring creates the key ring and its first active version if it
// does not exist (both audited), and returns it with created = true. An
// existing ring is returned as is, except that a changed Classification or
// Environment is updated (audited as keyring.update). A ring that exists
// with another Purpose or KEK fails with ErrKeyringMismatch: a purpose
// never changes, and moving to another KEK is RewrapAll (kek rotate).
// Safe to call concurrently from several processes (pgcloak serve on
// start-up): exactly one creates the ring.
func (s *Store) EnsureKeyring(ctx context.Context, spec KeyringSpec) (ring Keyring, created bool, err error) {
	if err := s.checkSpec(spec); err != nil {
		return Keyring{}, false, err
	}
	err = s.inTx(ctx, func(t *txn) error {
		var err error
		ring, created, err = t.ensureKeyring(ctx, spec)
		return err
	})
	if err != nil {
		return Keyring{}, false, fmt.Errorf("keyring: ensure %s: %w", spec.Name, err)
	}
	return ring, created, nil
}

func (s *Store) checkSpec(spec KeyringSpec) error {
	switch {
	case !ValidKeyringName(spec.Name):
		return fmt.Errorf("keyring: invalid key ring name %q (lower-case letters, digits and _ : . / -, at most 63)", spec.Name)
	case !spec.Purpose.Valid():
		return fmt.Errorf("keyring: key ring %s: invalid purpose %q", spec.Name, spec.Purpose)
	case spec.KEK == "":
		return fmt.Errorf("keyring: key ring %s: no KEK named", spec.Name)
	case spec.Name == s.auditRing && spec.Purpose != PurposeAudit:
		return fmt.Errorf("%w: key ring %s is the audit key ring and must have purpose audit", ErrWrongPurpose, spec.Name)
	}
	return nil
}

func (t *txn) ensureKeyring(ctx context.Context, spec KeyringSpec) (Keyring, bool, error) {
	rows, err := t.Query(ctx, `INSERT INTO pgcloak.keyrings
		(name, purpose, classification, environment, kek_name, created_by, updated_by)
		VALUES ($1, $2, $3, $4, $5, $6, $6)
		ON CONFLICT (name) DO NOTHING RETURNING `+keyringColumns,
		spec.Name, string(spec.Purpose), spec.Classification, spec.Environment, spec.KEK, t.s.actor)
	if err != nil {
		return Keyring{}, false, err
	}
	inserted, err := collectKeyrings(rows)
	if err != nil {
		return Keyring{}, false, err
	}
	if len(inserted) == 1 {
		ring := inserted[0]
		if err := t.audit(ctx, audit.EventKeyringCreate, ring.Name, 0, map[string]string{
			"id": fmt.Sprint(ring.ID), "purpose": string(ring.Purpose), "classification": ring.Classification,
			"environment": ring.Environment, "kek": ring.KEK,
		}); err != nil {
			return Keyring{}, false, err
		}
		if _, err := t.createVersion(ctx, ring, 1, "first version"); err != nil {
			return Keyring{}, false, err
		}
		return ring, true, nil
	}
	ring, err := t.lockRing(ctx, spec.Name)
	if err != nil {
		return Keyring{}, false, err
	}
	if ring.Purpose != spec.Purpose {
		return Keyring{}, false, fmt.Errorf("%w: %s has purpose %s, not %s", ErrKeyringMismatch, ring.Name, ring.Purpose, spec.Purpose)
	}
	if ring.KEK != spec.KEK {
		return Keyring{}, false, fmt.Errorf("%w: %s is wrapped by KEK %q, not %q; move it with `pgcloak kek rotate`", ErrKeyringMismatch, ring.Name, ring.KEK, spec.KEK)
	}
	if ring.Classification != spec.Classification || ring.Environment != spec.Environment {
		if err := t.QueryRow(ctx, `UPDATE pgcloak.keyrings SET classification = $2, environment = $3, updated_by = $4
			WHERE id = $1 RETURNING updated_at, updated_by`,
			int32(ring.ID), spec.Classification, spec.Environment, t.s.actor).Scan(&ring.UpdatedAt, &ring.UpdatedBy); err != nil {
			return Keyring{}, false, err
		}
		if err := t.audit(ctx, audit.EventKeyringUpdate, ring.Name, 0, map[string]string{
			"classification_from": ring.Classification, "classification": spec.Classification,
			"environment_from": ring.Environment, "environment": spec.Environment,
		}); err != nil {
			return Keyring{}, false, err
		}
		ring.Classification, ring.Environment, ring.UpdatedAt = spec.Classification, spec.Environment, ring.UpdatedAt.UTC()
	}
	return ring, false, nil
}

// Keyrings returns every key ring, by id.
func (s *Store) Keyrings(ctx context.Context) ([]Keyring, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+keyringColumns+" FROM pgcloak.keyrings ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("keyring: list key rings: %w", err)
	}
	rings, err := collectKeyrings(rows)
	return rings, wrapIf("keyring: list key rings", err)
}

// Keyring returns one key ring by name (ErrNotFound if none).
func (s *Store) Keyring(ctx context.Context, name string) (Keyring, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+keyringColumns+" FROM pgcloak.keyrings WHERE name = $1", name)
	if err != nil {
		return Keyring{}, fmt.Errorf("keyring: %s: %w", name, err)
	}
	rings, err := collectKeyrings(rows)
	if err != nil {
		return Keyring{}, fmt.Errorf("keyring: %s: %w", name, err)
	}
	if len(rings) == 0 {
		return Keyring{}, fmt.Errorf("%w: key ring %q", ErrNotFound, name)
	}
	return rings[0], nil
}

// isNotFound reports whether err says a ring or version does not exist.
func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) || errors.Is(err, pgx.ErrNoRows) }
