package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what reading needs: *pgxpool.Pool, *pgx.Conn and pgx.Tx all
// satisfy it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// LockKey is the pg_advisory_xact_lock key that serialises appends and
// checkpoints ("pgcloak\x02" as a big-endian int64). Key-store
// transactions take their key-ring row locks first and this lock last.
const LockKey int64 = 0x7067636c6f616b02

// Append adds rec to the chain inside tx, which must be a READ COMMITTED
// transaction (the head is read after the lock is taken). It takes the
// chain's advisory lock, held until tx ends, so that concurrent appenders
// queue instead of forking the chain; the entry becomes visible, and the
// lock is released, when tx commits — in the same transaction as the change
// it records. The returned Entry is what will be stored;
// sinceCheckpoint is the number of entries (this one included) after the
// last checkpoint.
func Append(ctx context.Context, tx pgx.Tx, rec Record) (e Entry, sinceCheckpoint int64, err error) {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", LockKey); err != nil {
		return Entry{}, 0, fmt.Errorf("audit: append %s: lock: %w", rec.Event, err)
	}
	var (
		seq, lastCP int64
		prev        []byte
		at          time.Time
		dbUser      string
	)
	err = tx.QueryRow(ctx, `SELECT seq, hash, last_checkpoint_seq, clock_timestamp(), current_user
		FROM pgcloak.audit_head WHERE id`).Scan(&seq, &prev, &lastCP, &at, &dbUser)
	if err != nil {
		return Entry{}, 0, fmt.Errorf("audit: append %s: read chain head: %w", rec.Event, err)
	}
	var prevHash Hash
	if len(prev) != len(prevHash) {
		return Entry{}, 0, fmt.Errorf("audit: append %s: chain head hash has %d bytes", rec.Event, len(prev))
	}
	copy(prevHash[:], prev)
	e, err = newEntry(rec, seq+1, at, dbUser, prevHash)
	if err != nil {
		return Entry{}, 0, err
	}
	details, err := json.Marshal(detailsOrEmpty(e.Details))
	if err != nil {
		return Entry{}, 0, fmt.Errorf("audit: append %s: %w", rec.Event, err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO pgcloak.audit_log
		(seq, at, actor, db_user, event, keyring, version, details, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)`,
		e.Seq, e.At, e.Actor, e.DBUser, e.Event, e.Keyring, int32(e.Version), string(details), e.PrevHash[:], e.Hash[:])
	if err != nil {
		return Entry{}, 0, fmt.Errorf("audit: append %s: %w", rec.Event, err)
	}
	return e, e.Seq - lastCP, nil
}

func detailsOrEmpty(d map[string]string) map[string]string {
	if d == nil {
		return map[string]string{}
	}
	return d
}

// Head is the chain head as pgcloak.audit_head records it.
type Head struct {
	Seq            int64
	Hash           Hash
	LastCheckpoint int64
}

// ReadHead returns the chain head.
func ReadHead(ctx context.Context, q Querier) (Head, error) {
	var (
		h    Head
		hash []byte
	)
	err := q.QueryRow(ctx, "SELECT seq, hash, last_checkpoint_seq FROM pgcloak.audit_head WHERE id").
		Scan(&h.Seq, &hash, &h.LastCheckpoint)
	if err != nil {
		return Head{}, fmt.Errorf("audit: read chain head: %w", err)
	}
	copy(h.Hash[:], hash)
	return h, nil
}
