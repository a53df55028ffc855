package keyring

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/keyring/audit"
)

// Audit appends one entry to the audit log in its own transaction, for
// events that are not key changes: access denials seen by the proxy,
// restricted-data reads (AuditQueue), configuration changes. An empty
// rec.Actor is the Store's actor. The entry goes to the sink after commit.
func (s *Store) Audit(ctx context.Context, rec audit.Record) (audit.Entry, error) {
	es, err := s.AuditBatch(ctx, []audit.Record{rec})
	if err != nil {
		return audit.Entry{}, err
	}
	return es[0], nil
}

// AuditBatch appends several entries in one transaction (one lock, one
// commit): for a proxy that batches its decryption events.
func (s *Store) AuditBatch(ctx context.Context, recs []audit.Record) ([]audit.Entry, error) {
	if len(recs) == 0 {
		return nil, nil
	}
	var out []audit.Entry
	err := s.inTx(ctx, func(t *txn) error {
		out = out[:0]
		for _, rec := range recs {
			if rec.Actor == "" {
				rec.Actor = s.actor
			}
			e, since, err := audit.Append(ctx, t.Tx, rec)
			if err != nil {
				return err
			}
			t.entries, t.pending = append(t.entries, e), since
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("keyring: audit %s: %w", recs[0].Event, err)
	}
	return out, nil
}

// Checkpoint MACs the current head of the audit chain with the active
// version of the audit key ring (StoreOpts.AuditKeyring; ErrNoAuditKeyring
// if it does not exist) and stores the checkpoint. If the head is already
// checkpointed it returns the latest checkpoint without writing; with an
// empty log it returns a zero Checkpoint.
func (s *Store) Checkpoint(ctx context.Context) (audit.Checkpoint, error) {
	v, err := s.ActiveVersion(ctx, s.auditRing)
	if isNotFound(err) {
		return audit.Checkpoint{}, fmt.Errorf("%w: %q (create it with purpose audit)", ErrNoAuditKeyring, s.auditRing)
	}
	if err != nil {
		return audit.Checkpoint{}, err
	}
	if v.Purpose != PurposeAudit {
		return audit.Checkpoint{}, fmt.Errorf("%w: %s is a %s key ring", ErrWrongPurpose, v.Keyring, v.Purpose)
	}
	key, err := s.auditKey(ctx, v.KeyringID, v.Version)
	if err != nil {
		return audit.Checkpoint{}, err
	}
	defer key.Zero()
	var cp audit.Checkpoint
	err = s.inTx(ctx, func(t *txn) error {
		var err error
		cp, _, err = audit.WriteCheckpoint(ctx, t.Tx, audit.MACKey{KeyringID: v.KeyringID, Version: v.Version, Key: key}, s.actor)
		return err
	})
	if err != nil {
		return audit.Checkpoint{}, fmt.Errorf("keyring: audit checkpoint: %w", err)
	}
	return cp, nil
}

// auditKey unwraps a version of an audit-purpose key ring; active and
// decrypt_only versions verify, others are refused like any key.
func (s *Store) auditKey(ctx context.Context, keyringID, version uint32) (secret.Bytes, error) {
	var (
		name, purpose, state, kekName string
		wrapped                       []byte
		since                         time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT kr.name, kr.purpose, kv.state, kv.wrapped_dek, kv.kek_name,
			coalesce(kv.deleted_at, kv.state_changed_at)
		FROM pgcloak.key_versions kv JOIN pgcloak.keyrings kr ON kr.id = kv.keyring_id
		WHERE kv.keyring_id = $1 AND kv.version = $2`, int64(keyringID), int64(version)).
		Scan(&name, &purpose, &state, &wrapped, &kekName, &since)
	if isNotFound(err) {
		return secret.Bytes{}, fmt.Errorf("%w: audit key ring %d version %d", ErrNotFound, keyringID, version)
	}
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("keyring: audit key: %w", err)
	}
	if Purpose(purpose) != PurposeAudit {
		return secret.Bytes{}, fmt.Errorf("%w: %s is a %s key ring, not audit", ErrWrongPurpose, name, purpose)
	}
	if st := State(state); !st.CanDecrypt() {
		return secret.Bytes{}, &StateError{Keyring: name, Version: version, State: st, Since: since.UTC()}
	}
	return s.unwrap(ctx, keyringID, name, PurposeAudit, version, kekName, wrapped)
}

// VerifyAudit verifies the whole audit chain and its checkpoints in one
// REPEATABLE READ snapshot (see audit.Verify for what it detects and the
// limits after the last checkpoint). Checkpoint MACs need the audit key
// ring's KEK; without it they are reported unverifiable.
func (s *Store) VerifyAudit(ctx context.Context) (*audit.Report, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("keyring: audit verify: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	r, err := audit.Verify(ctx, tx, s.auditKey)
	if err != nil {
		return nil, fmt.Errorf("keyring: audit verify: %w", err)
	}
	return r, nil
}

// AuditTail returns the last n audit entries, oldest first.
func (s *Store) AuditTail(ctx context.Context, n int) ([]audit.Entry, error) {
	es, err := audit.Tail(ctx, s.pool, n)
	return es, wrapIf("keyring: audit tail", err)
}
