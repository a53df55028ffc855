package audit

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcloak/pgcloak/crypto/secret"
)

// MACKey is one version of the audit key ring, unwrapped. The caller owns
// Key and zeroes it after use.
type MACKey struct {
	KeyringID uint32
	Version   uint32
	Key       secret.Bytes // 32 bytes
}

// Checkpoint authenticates the chain up to Seq: MAC = HMAC-SHA-256 under
// the audit key ring's DEK (KeyringID, KeyVersion) over CheckpointMessage.
type Checkpoint struct {
	Seq        int64     `json:"seq"`
	Hash       Hash      `json:"hash"`
	KeyringID  uint32    `json:"keyring_id"`
	KeyVersion uint32    `json:"key_version"`
	MAC        Hash      `json:"mac"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
}

// checkpointDomain starts every MACed message.
const checkpointDomain = "pgcloak/audit-checkpoint/v1"

// CheckpointMessage is the canonical message a checkpoint MACs:
//
//	"pgcloak/audit-checkpoint/v1" | u32 keyring id | u32 key version | u64 seq | hash (32 bytes)
//
// (big endian). The key's identity is inside the message, so a checkpoint
// cannot be re-labelled to another key version.
func CheckpointMessage(keyringID, version uint32, seq int64, h Hash) []byte {
	b := make([]byte, 0, len(checkpointDomain)+4+4+8+len(h))
	b = append(b, checkpointDomain...)
	b = binary.BigEndian.AppendUint32(b, keyringID)
	b = binary.BigEndian.AppendUint32(b, version)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	return append(b, h[:]...)
}

// ComputeMAC returns the checkpoint MAC for (seq, h) under key.
func ComputeMAC(key MACKey, seq int64, h Hash) (Hash, error) {
	if key.Key.Len() != 32 {
		return Hash{}, fmt.Errorf("audit: checkpoint key must be 32 bytes, not %d", key.Key.Len())
	}
	m := hmac.New(sha256.New, key.Key.Expose())
	m.Write(CheckpointMessage(key.KeyringID, key.Version, seq, h))
	var out Hash
	m.Sum(out[:0])
	return out, nil
}

// WriteCheckpoint MACs the current chain head inside tx (READ COMMITTED)
// and stores the checkpoint. When the head is already checkpointed, or
// the chain is empty, it writes nothing and returns the latest checkpoint
// (zero Seq for none) with wrote = false.
func WriteCheckpoint(ctx context.Context, tx pgx.Tx, key MACKey, actor string) (cp Checkpoint, wrote bool, err error) {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", LockKey); err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: checkpoint: lock: %w", err)
	}
	head, err := ReadHead(ctx, tx)
	if err != nil {
		return Checkpoint{}, false, err
	}
	if head.Seq == 0 || head.Seq == head.LastCheckpoint {
		cp, err := lastCheckpoint(ctx, tx)
		return cp, false, err
	}
	mac, err := ComputeMAC(key, head.Seq, head.Hash)
	if err != nil {
		return Checkpoint{}, false, err
	}
	cp = Checkpoint{Seq: head.Seq, Hash: head.Hash, KeyringID: key.KeyringID, KeyVersion: key.Version, MAC: mac, Actor: Sanitize(actor)}
	err = tx.QueryRow(ctx, `INSERT INTO pgcloak.audit_checkpoints (seq, hash, keyring_id, key_version, mac, actor)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING at`,
		cp.Seq, cp.Hash[:], int32(cp.KeyringID), int32(cp.KeyVersion), cp.MAC[:], cp.Actor).Scan(&cp.At)
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: checkpoint at seq %d: %w", cp.Seq, err)
	}
	cp.At = cp.At.UTC()
	return cp, true, nil
}

const checkpointColumns = "seq, hash, keyring_id, key_version, mac, at, actor"

func lastCheckpoint(ctx context.Context, q Querier) (Checkpoint, error) {
	cps, err := readCheckpoints(ctx, q, "SELECT "+checkpointColumns+" FROM pgcloak.audit_checkpoints ORDER BY seq DESC LIMIT 1")
	if err != nil || len(cps) == 0 {
		return Checkpoint{}, err
	}
	return cps[0], nil
}

// Checkpoints returns every checkpoint, oldest first.
func Checkpoints(ctx context.Context, q Querier) ([]Checkpoint, error) {
	return readCheckpoints(ctx, q, "SELECT "+checkpointColumns+" FROM pgcloak.audit_checkpoints ORDER BY seq")
}

func readCheckpoints(ctx context.Context, q Querier, sql string) ([]Checkpoint, error) {
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	defer rows.Close()
	var out []Checkpoint
	for rows.Next() {
		var (
			cp            Checkpoint
			hash, mac     []byte
			ring, version int32
		)
		if err := rows.Scan(&cp.Seq, &hash, &ring, &version, &mac, &cp.At, &cp.Actor); err != nil {
			return nil, fmt.Errorf("audit: read checkpoints: %w", err)
		}
		if len(hash) != len(cp.Hash) || len(mac) != len(cp.MAC) {
			return nil, errors.New("audit: read checkpoints: malformed row")
		}
		copy(cp.Hash[:], hash)
		copy(cp.MAC[:], mac)
		cp.KeyringID, cp.KeyVersion, cp.At = uint32(ring), uint32(version), cp.At.UTC()
		out = append(out, cp)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read checkpoints: %w", err)
	}
	return out, nil
}
