package keyring

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/keycache"
	"github.com/pgcloak/pgcloak/keyring/audit"
)

// DEKSize is the length of every DEK (AES-256, HMAC-SHA-256).
const DEKSize = 32

// DEKFormat names the associated-data encoding below; it is stored with
// every version (key_versions.dek_format).
const DEKFormat = "pgcloak/dek/v1"

// DEKAssociatedData binds a wrapped DEK to its place in the key store:
//
//	"pgcloak/dek/v1" | u32 key ring id | u32 version | u16 len | ring name | u16 len | purpose
//
// (big endian). A wrapped DEK copied to another version, another ring or a
// ring with another purpose fails to unwrap (hsm.ErrUnwrap). The encoding
// never changes; a new one gets a new DEKFormat.
func DEKAssociatedData(keyringID uint32, ring string, purpose Purpose, version uint32) []byte {
	b := make([]byte, 0, len(DEKFormat)+4+4+2+len(ring)+2+len(purpose))
	b = append(b, DEKFormat...)
	b = binary.BigEndian.AppendUint32(b, keyringID)
	b = binary.BigEndian.AppendUint32(b, version)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ring)))
	b = append(b, ring...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(purpose)))
	return append(b, purpose...)
}

func (s *Store) kek(name string) (hsm.KEK, error) {
	k, ok := s.keks[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q (configure [kek.%s])", ErrKEKNotConfigured, name, name)
	}
	return k, nil
}

// kekKeyID asks a provider for its key's identifier, if it offers one.
func kekKeyID(k hsm.KEK) string {
	if id, ok := k.(interface{ KeyID() string }); ok {
		return id.KeyID()
	}
	return ""
}

// newDEK draws DEKSize random bytes.
func (s *Store) newDEK() (secret.Bytes, error) {
	buf := make([]byte, DEKSize)
	defer clear(buf)
	if _, err := io.ReadFull(s.rand, buf); err != nil {
		return secret.Bytes{}, fmt.Errorf("keyring: generate DEK: %w", err)
	}
	return secret.New(buf), nil
}

// createVersion generates, wraps and inserts version v of ring (active;
// the caller has demoted any previous active version and holds the ring
// lock), and audits it.
func (t *txn) createVersion(ctx context.Context, ring Keyring, v uint32, reason string) (Version, error) {
	k, err := t.s.kek(ring.KEK)
	if err != nil {
		return Version{}, err
	}
	dek, err := t.s.newDEK()
	if err != nil {
		return Version{}, err
	}
	defer dek.Zero()
	wrapped, err := k.Wrap(ctx, dek, DEKAssociatedData(ring.ID, ring.Name, ring.Purpose, v))
	if err != nil {
		return Version{}, fmt.Errorf("wrap DEK with KEK %q: %w", ring.KEK, err)
	}
	keyID := kekKeyID(k)
	if _, err := t.Exec(ctx, `INSERT INTO pgcloak.key_versions
		(keyring_id, version, state, wrapped_dek, dek_format, kek_name, kek_key_id, created_by, state_changed_by, state_reason)
		VALUES ($1, $2, 'active', $3, $4, $5, $6, $7, $7, $8)`,
		int32(ring.ID), int64(v), wrapped, DEKFormat, ring.KEK, keyID, t.s.actor, reason); err != nil {
		return Version{}, err
	}
	if err := t.audit(ctx, audit.EventKeyCreate, ring.Name, v, map[string]string{
		"kek": ring.KEK, "kek_key_id": keyID, "purpose": string(ring.Purpose), "reason": reason,
	}); err != nil {
		return Version{}, err
	}
	return t.version(ctx, ring, v)
}

// LoaderOpts restricts what a Loader hands out.
type LoaderOpts struct {
	// Purpose, when set, refuses key rings of any other purpose
	// (ErrWrongPurpose). Audit rings are always refused.
	Purpose Purpose
	// AllowDisabled lets disabled versions unwrap, each time audited
	// (key.disabled_access): the compromise procedure must decrypt the
	// affected rows to re-encrypt them. The proxy sets it only when the
	// operator chose [rotation] compromised_reads = "allow".
	AllowDisabled bool
}

// Loader returns a keycache.Loader with restrictions.
func (s *Store) Loader(opts LoaderOpts) keycache.Loader {
	return keycache.LoaderFunc(func(ctx context.Context, keyringID, version uint32) (secret.Bytes, error) {
		return s.loadDEK(ctx, keyringID, version, opts)
	})
}

// LoadDEK implements keycache.Loader: it reads the version's wrapped DEK
// and unwraps it with the KEK that wrapped it. Versions that are
// decrypt_only or active load; deleted versions fail with ErrKeyDestroyed,
// disabled ones with ErrKeyDisabled, retired and pending_deletion ones
// with ErrKeyRetired (each a *StateError saying since when, and audited
// as key.access_denied, rate-limited). Audit key rings are refused
// (ErrWrongPurpose). KEK errors pass through (hsm.ErrUnwrap for a
// tampered or misplaced wrapped DEK); a key store that cannot be reached
// fails with an error wrapping hsm.ErrUnavailable, so keycache serves
// within its outage budget. The caller owns the returned bytes.
func (s *Store) LoadDEK(ctx context.Context, keyringID, version uint32) (secret.Bytes, error) {
	return s.loadDEK(ctx, keyringID, version, LoaderOpts{})
}

func (s *Store) loadDEK(ctx context.Context, keyringID, version uint32, opts LoaderOpts) (secret.Bytes, error) {
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
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return secret.Bytes{}, fmt.Errorf("%w: key ring %d version %d", ErrNotFound, keyringID, version)
	case err != nil && transient(err):
		return secret.Bytes{}, fmt.Errorf("keyring: load key ring %d version %d: key store: %w: %w", keyringID, version, hsm.ErrUnavailable, err)
	case err != nil:
		return secret.Bytes{}, fmt.Errorf("keyring: load key ring %d version %d: %w", keyringID, version, err)
	}
	p, st := Purpose(purpose), State(state)
	if p == PurposeAudit || (opts.Purpose != "" && p != opts.Purpose) {
		return secret.Bytes{}, fmt.Errorf("%w: %s is a %s key ring", ErrWrongPurpose, name, p)
	}
	if !st.CanDecrypt() && !(st == StateDisabled && opts.AllowDisabled) {
		serr := &StateError{Keyring: name, Version: version, State: st, Since: since.UTC()}
		s.auditDenial(ctx, name, version, st)
		return secret.Bytes{}, serr
	}
	if st == StateDisabled {
		if _, err := s.Audit(ctx, audit.Record{Event: audit.EventDisabledAccess, Keyring: name, Version: version,
			Details: map[string]string{"reason": "loader allows disabled versions (compromise re-encryption)"}}); err != nil {
			return secret.Bytes{}, fmt.Errorf("keyring: %s version %d: audit disabled-key access: %w", name, version, err)
		}
	}
	return s.unwrap(ctx, keyringID, name, p, version, kekName, wrapped)
}

func (s *Store) unwrap(ctx context.Context, ringID uint32, ring string, p Purpose, version uint32, kekName string, wrapped []byte) (secret.Bytes, error) {
	k, err := s.kek(kekName)
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("keyring: %s version %d: %w", ring, version, err)
	}
	dek, err := k.Unwrap(ctx, wrapped, DEKAssociatedData(ringID, ring, p, version))
	if err != nil {
		return secret.Bytes{}, fmt.Errorf("keyring: %s version %d: unwrap with KEK %q: %w", ring, version, kekName, err)
	}
	if dek.Len() != DEKSize {
		dek.Zero()
		return secret.Bytes{}, fmt.Errorf("keyring: %s version %d: unwrapped DEK has %d bytes, want %d", ring, version, dek.Len(), DEKSize)
	}
	return dek, nil
}

type denialKey struct {
	ring    string
	version uint32
	state   State
}

// auditDenial records a refused key use, at most once per version and
// state per DenialAuditInterval (keycache retries a refused key on every
// Get that misses). Failures go to OnError.
func (s *Store) auditDenial(ctx context.Context, ring string, version uint32, st State) {
	k := denialKey{ring, version, st}
	now := time.Now()
	s.denialMu.Lock()
	last, seen := s.denials[k]
	if seen && now.Sub(last) < s.denialEvery {
		s.denialMu.Unlock()
		return
	}
	s.denials[k] = now
	s.denialMu.Unlock()
	if _, err := s.Audit(ctx, audit.Record{Event: audit.EventAccessDenied, Keyring: ring, Version: version,
		Details: map[string]string{"state": string(st), "operation": "load"}}); err != nil {
		s.onError(fmt.Errorf("keyring: audit access denial %s version %d: %w", ring, version, err))
	}
}
