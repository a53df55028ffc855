package keyring

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/pgcloak/pgcloak/keyring/audit"
)

// Override records why a lifecycle change goes ahead although data may
// still need the version: a version is never retired or scheduled for
// deletion while rows reference it, unless forced (DESIGN.md §5). The key
// store cannot see application tables; the caller counts and says what
// it found.
type Override struct {
	// Rows maps "schema.table.column" to the number of rows found
	// referencing the version. nil: the caller did not count.
	Rows map[string]int64
	// Reason is the operator's justification, if any.
	Reason string
}

// details is the key.forced entry for a change from → to.
func (o Override) details(from, to State) map[string]string {
	d := map[string]string{"from": string(from), "to": string(to), "counted": "no"}
	if o.Reason != "" {
		d["reason"] = o.Reason
	}
	if o.Rows != nil {
		var total int64
		for col, n := range o.Rows {
			d["rows: "+col] = strconv.FormatInt(n, 10)
			total += n
		}
		d["counted"] = "yes"
		d["total"] = strconv.FormatInt(total, 10)
	}
	return d
}

// forced runs change and, when it changed the version, appends a
// key.forced entry with o in the same transaction.
func forced(ctx context.Context, o Override, change func(t *txn, kr Keyring, v Version) (Version, error)) func(t *txn, kr Keyring, v Version) (Version, error) {
	return func(t *txn, kr Keyring, v Version) (Version, error) {
		nv, err := change(t, kr, v)
		if err != nil || nv.State == v.State {
			return nv, err
		}
		return nv, t.audit(ctx, audit.EventKeyForced, kr.Name, v.Version, o.details(v.State, nv.State))
	}
}

// RetireForced is SetState(ring, version, StateRetired, reason) for a
// version that rows may still reference: the same checks and the same
// key.state entry, plus a key.forced entry describing o, in one
// transaction.
func (s *Store) RetireForced(ctx context.Context, ring string, version uint32, reason string, o Override) (Version, error) {
	return s.changeState(ctx, "retire (forced)", ring, version, forced(ctx, o, setStateFn(ctx, StateRetired, reason)))
}

// ScheduleDeletionForced is ScheduleDeletion for a version that rows may
// still reference, with a key.forced entry describing o in the same
// transaction.
func (s *Store) ScheduleDeletionForced(ctx context.Context, ring string, version uint32, window time.Duration, reason string, o Override) (Version, error) {
	if window < MinDeletionWindow || window > MaxDeletionWindow {
		return Version{}, fmt.Errorf("keyring: schedule deletion of %s version %d: %w: %v is outside 7 to 30 days",
			ring, version, ErrDeletionWindow, window)
	}
	return s.changeState(ctx, "schedule deletion (forced) of", ring, version, forced(ctx, o, scheduleDeletionFn(ctx, window, reason)))
}
