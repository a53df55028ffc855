package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const entryColumns = "seq, at, actor, db_user, event, keyring, version, details::text, prev_hash, hash"

// rawEntry is a row as stored, before any interpretation: Verify must be
// able to describe rows whose details are not a string map or whose hashes
// have the wrong length.
type rawEntry struct {
	Entry
	detailsText    string
	prevRaw, hashR []byte
	version        int32
}

func scanRaw(rows pgx.Rows) (rawEntry, error) {
	var r rawEntry
	var at time.Time
	err := rows.Scan(&r.Seq, &at, &r.Actor, &r.DBUser, &r.Event, &r.Keyring, &r.version,
		&r.detailsText, &r.prevRaw, &r.hashR)
	if err != nil {
		return rawEntry{}, err
	}
	r.At = at.UTC()
	r.Version = uint32(r.version)
	copy(r.PrevHash[:], r.prevRaw)
	copy(r.Hash[:], r.hashR)
	return r, nil
}

// decode fills r.Details from the stored jsonb text.
func (r *rawEntry) decode() error {
	var d map[string]string
	if err := json.Unmarshal([]byte(r.detailsText), &d); err != nil {
		return fmt.Errorf("details are not a JSON object of strings: %v", err)
	}
	if len(d) > 0 {
		r.Details = d
	}
	if len(r.prevRaw) != len(Hash{}) || len(r.hashR) != len(Hash{}) || r.version < 0 {
		return fmt.Errorf("malformed hash or version columns")
	}
	return nil
}

// Tail returns the last n entries (n ≤ 0: none), oldest first.
func Tail(ctx context.Context, q Querier, n int) ([]Entry, error) {
	if n <= 0 {
		return nil, nil
	}
	return readEntries(ctx, q, "SELECT * FROM (SELECT "+entryColumns+
		" FROM pgcloak.audit_log ORDER BY seq DESC LIMIT $1) t ORDER BY seq", n)
}

// Range returns the entries with from ≤ seq ≤ to, oldest first (for a
// SIEM that catches up after an outage of its sink).
func Range(ctx context.Context, q Querier, from, to int64) ([]Entry, error) {
	return readEntries(ctx, q, "SELECT "+entryColumns+
		" FROM pgcloak.audit_log WHERE seq BETWEEN $1 AND $2 ORDER BY seq", from, to)
}

func readEntries(ctx context.Context, q Querier, sql string, args ...any) ([]Entry, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		r, err := scanRaw(rows)
		if err != nil {
			return nil, fmt.Errorf("audit: read: %w", err)
		}
		if err := r.decode(); err != nil {
			return nil, fmt.Errorf("audit: read: entry %d: %v", r.Seq, err)
		}
		out = append(out, r.Entry)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	return out, nil
}
