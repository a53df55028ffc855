package keyring

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/keyring/audit"
)

// ExportFormat names the layout of Export (JSON, `keys export-wrapped`).
const ExportFormat = "pgcloak-wrapped-deks/v1"

// Export is a backup of wrapped DEKs and their metadata. It holds no
// plaintext key: every DEK is wrapped by the KEK named with it, under
// associated data DEKAssociatedData(KeyringID, Keyring, Purpose, Version),
// so it is as safe to store as a key-store backup. Deleted versions are
// listed without a wrapped DEK.
type Export struct {
	Format     string            `json:"format"`
	ExportedAt time.Time         `json:"exported_at"`
	ExportedBy string            `json:"exported_by"`
	Keyrings   []ExportedKeyring `json:"keyrings"`
}

// ExportedKeyring is one key ring in an Export.
type ExportedKeyring struct {
	ID             uint32            `json:"id"`
	Name           string            `json:"name"`
	Purpose        Purpose           `json:"purpose"`
	Classification string            `json:"classification"`
	Environment    string            `json:"environment,omitempty"`
	KEK            string            `json:"kek"`
	Versions       []ExportedVersion `json:"versions"`
}

// ExportedVersion is one version in an Export. WrappedDEK encodes as
// base64 in JSON.
type ExportedVersion struct {
	Version       uint32    `json:"version"`
	State         State     `json:"state"`
	KEK           string    `json:"kek"`
	KEKKeyID      string    `json:"kek_key_id,omitempty"`
	DEKFormat     string    `json:"dek_format"`
	WrappedDEK    []byte    `json:"wrapped_dek,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	DeletionAfter time.Time `json:"deletion_after,omitzero"`
	DeletedAt     time.Time `json:"deleted_at,omitzero"`
}

// ExportWrapped returns the wrapped DEKs of ring ("" for every ring) and
// their metadata, for backup. It needs no KEK and never unwraps. The
// export is audited (key.export).
func (s *Store) ExportWrapped(ctx context.Context, ring string) (*Export, error) {
	out := &Export{Format: ExportFormat, ExportedBy: s.actor}
	err := s.inTx(ctx, func(t *txn) error {
		if err := t.QueryRow(ctx, "SELECT now()").Scan(&out.ExportedAt); err != nil {
			return err
		}
		out.ExportedAt = out.ExportedAt.UTC()
		where, args := "", []any{}
		if ring != "" {
			where, args = " WHERE name = $1", []any{ring}
		}
		rows, err := t.Query(ctx, "SELECT "+keyringColumns+" FROM pgcloak.keyrings"+where+" ORDER BY id", args...)
		if err != nil {
			return err
		}
		rings, err := collectKeyrings(rows)
		if err != nil {
			return err
		}
		if len(rings) == 0 && ring != "" {
			return fmt.Errorf("%w: key ring %q", ErrNotFound, ring)
		}
		total := 0
		for _, kr := range rings {
			ek := ExportedKeyring{ID: kr.ID, Name: kr.Name, Purpose: kr.Purpose, Classification: kr.Classification,
				Environment: kr.Environment, KEK: kr.KEK}
			rows, err := t.Query(ctx, `SELECT version, state, kek_name, kek_key_id, dek_format, wrapped_dek,
				created_at, deletion_after, deleted_at FROM pgcloak.key_versions WHERE keyring_id = $1 ORDER BY version`,
				int32(kr.ID))
			if err != nil {
				return err
			}
			var (
				ev           ExportedVersion
				version      int32
				state        string
				after, delAt *time.Time
			)
			_, err = pgx.ForEachRow(rows, []any{&version, &state, &ev.KEK, &ev.KEKKeyID, &ev.DEKFormat, &ev.WrappedDEK,
				&ev.CreatedAt, &after, &delAt}, func() error {
				e := ev
				e.Version, e.State, e.CreatedAt = uint32(version), State(state), ev.CreatedAt.UTC()
				e.DeletionAfter, e.DeletedAt = utc(after), utc(delAt)
				e.WrappedDEK = append([]byte(nil), ev.WrappedDEK...)
				if len(e.WrappedDEK) == 0 {
					e.WrappedDEK = nil
				}
				ek.Versions = append(ek.Versions, e)
				return nil
			})
			if err != nil {
				return err
			}
			total += len(ek.Versions)
			out.Keyrings = append(out.Keyrings, ek)
		}
		scope := ring
		if scope == "" {
			scope = "*"
		}
		return t.audit(ctx, audit.EventKeyExport, ring, 0, map[string]string{
			"scope": scope, "keyrings": fmt.Sprint(len(rings)), "versions": fmt.Sprint(total),
		})
	})
	if err != nil {
		return nil, fmt.Errorf("keyring: export wrapped DEKs: %w", err)
	}
	return out, nil
}

// RewrapAll re-wraps every non-deleted DEK wrapped by KEK fromKEK under
// toKEK (both in StoreOpts.KEKs), with the same associated data, and makes
// toKEK the KEK of every key ring that used fromKEK (`pgcloak kek rotate`).
// Table data is untouched: ciphertext names only key ring and version.
// It runs in one transaction holding every key ring's row lock, so it is
// all or nothing and concurrent rotations wait; each new wrapping is
// unwrapped again with toKEK and compared before it is stored. Each
// version is audited (key.rewrap), and the whole as kek.rotate. It returns
// the number of versions re-wrapped. Give a new KEK a new name: the name
// recorded with each version is how LoadDEK finds the KEK that unwraps it.
func (s *Store) RewrapAll(ctx context.Context, fromKEK, toKEK string) (int, error) {
	from, err := s.kek(fromKEK)
	if err != nil {
		return 0, fmt.Errorf("keyring: kek rotate: %w", err)
	}
	to, err := s.kek(toKEK)
	if err != nil {
		return 0, fmt.Errorf("keyring: kek rotate: %w", err)
	}
	toID := kekKeyID(to)
	n := 0
	err = s.inTx(ctx, func(t *txn) error {
		n = 0
		if _, err := t.Exec(ctx, "SELECT id FROM pgcloak.keyrings ORDER BY id FOR UPDATE"); err != nil {
			return err
		}
		rows, err := t.Query(ctx, `SELECT kv.keyring_id, kr.name, kr.purpose, kv.version, kv.wrapped_dek
			FROM pgcloak.key_versions kv JOIN pgcloak.keyrings kr ON kr.id = kv.keyring_id
			WHERE kv.kek_name = $1 AND kv.state <> 'deleted' ORDER BY kv.keyring_id, kv.version FOR UPDATE OF kv`, fromKEK)
		if err != nil {
			return err
		}
		type item struct {
			ringID  int32
			ring    string
			purpose string
			version int32
			wrapped []byte
		}
		var items []item
		var it item
		if _, err := pgx.ForEachRow(rows, []any{&it.ringID, &it.ring, &it.purpose, &it.version, &it.wrapped}, func() error {
			c := it
			c.wrapped = append([]byte(nil), it.wrapped...)
			items = append(items, c)
			return nil
		}); err != nil {
			return err
		}
		for _, it := range items {
			if err := t.rewrapOne(ctx, from, to, fromKEK, toKEK, toID, uint32(it.ringID), it.ring, Purpose(it.purpose), uint32(it.version), it.wrapped); err != nil {
				return err
			}
			n++
		}
		tag, err := t.Exec(ctx, "UPDATE pgcloak.keyrings SET kek_name = $2, updated_by = $3 WHERE kek_name = $1", fromKEK, toKEK, s.actor)
		if err != nil {
			return err
		}
		return t.audit(ctx, audit.EventKEKRotate, "", 0, map[string]string{
			"from": fromKEK, "to": toKEK, "versions": fmt.Sprint(n), "keyrings": fmt.Sprint(tag.RowsAffected()),
		})
	})
	if err != nil {
		return 0, fmt.Errorf("keyring: kek rotate %s → %s: %w", fromKEK, toKEK, err)
	}
	return n, nil
}

func (t *txn) rewrapOne(ctx context.Context, from, to hsm.KEK, fromKEK, toKEK, toID string, ringID uint32, ring string, p Purpose, version uint32, wrapped []byte) error {
	aad := DEKAssociatedData(ringID, ring, p, version)
	dek, err := from.Unwrap(ctx, wrapped, aad)
	if err != nil {
		return fmt.Errorf("%s version %d: unwrap with KEK %q: %w", ring, version, fromKEK, err)
	}
	defer dek.Zero()
	rewrapped, err := to.Wrap(ctx, dek, aad)
	if err != nil {
		return fmt.Errorf("%s version %d: wrap with KEK %q: %w", ring, version, toKEK, err)
	}
	check, err := to.Unwrap(ctx, rewrapped, aad)
	if err != nil {
		return fmt.Errorf("%s version %d: check new wrapping with KEK %q: %w", ring, version, toKEK, err)
	}
	same := check.Equal(dek)
	check.Zero()
	if !same {
		return fmt.Errorf("%s version %d: KEK %q returned a different key on unwrap", ring, version, toKEK)
	}
	if _, err := t.Exec(ctx, `UPDATE pgcloak.key_versions SET wrapped_dek = $3, kek_name = $4, kek_key_id = $5
		WHERE keyring_id = $1 AND version = $2`, int32(ringID), int64(version), rewrapped, toKEK, toID); err != nil {
		return err
	}
	return t.audit(ctx, audit.EventKeyRewrap, ring, version, map[string]string{"from": fromKEK, "to": toKEK, "kek_key_id": toID})
}
