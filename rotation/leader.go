package rotation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// LockKey is the session-level advisory lock whose holder is the one
// proxy that rotates on schedule ("pgcloak" followed by 'r'). It differs
// from the transaction-level keys of the key store's migrations
// (…6b01) and audit appends (keyring/audit.LockKey, …6b02). To see which
// session holds it:
//
//	SELECT a.pid, a.client_addr, a.backend_start, a.application_name
//	FROM pg_locks l JOIN pg_stat_activity a USING (pid)
//	WHERE l.locktype = 'advisory' AND l.granted
//	  AND l.classid = 1885823852 AND l.objid = 1868655474 AND l.objsubid = 1;
const LockKey int64 = 0x7067636c6f616b72

// ApplicationName is set on the leadership connection, so that
// pg_stat_activity shows which proxy leads.
const ApplicationName = "pgcloak rotation leader"

// closeTimeout bounds releasing the lock and closing the connection.
const closeTimeout = 5 * time.Second

// leader holds, or tries to take, the advisory lock LockKey on a
// connection of its own. It is used by one goroutine (Scheduler.Run).
type leader struct {
	pool *pgxpool.Pool
	key  int64
	conn *pgx.Conn // non-nil exactly while holding the lock
}

// acquire tries to take the lock without waiting. It reports whether this
// process now holds it; on false or an error it holds no connection.
func (l *leader) acquire(ctx context.Context) (bool, error) {
	if l.conn != nil {
		return true, nil
	}
	pc, err := l.pool.Acquire(ctx)
	if err != nil {
		return false, fmt.Errorf("rotation: leader election: %w", err)
	}
	// Ours alone: a connection holding a session lock must never go back
	// to the pool, where another query could borrow it.
	conn := pc.Hijack()
	var ok bool
	err = conn.QueryRow(ctx, "SELECT set_config('application_name', $1, false), pg_try_advisory_lock($2)",
		ApplicationName, l.key).Scan(nil, &ok)
	if err != nil || !ok {
		closeConn(conn)
		if err != nil {
			return false, fmt.Errorf("rotation: leader election: %w", err)
		}
		return false, nil
	}
	l.conn = conn
	return true, nil
}

// confirm checks that the connection holding the lock still works, and
// returns the key store's clock. A session lock is held exactly as long as
// its session: a working session still holds it. On error the lock is
// gone (or cannot be vouched for): the connection is closed.
func (l *leader) confirm(ctx context.Context) (time.Time, error) {
	if l.conn == nil {
		return time.Time{}, errors.New("rotation: not the leader")
	}
	var now time.Time
	if err := l.conn.QueryRow(ctx, "SELECT now()").Scan(&now); err != nil {
		l.drop()
		return time.Time{}, fmt.Errorf("rotation: leadership connection: %w", err)
	}
	return now, nil
}

// release unlocks and closes the connection, if held.
func (l *leader) release() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	// Closing the session releases the lock too; unlocking first makes
	// the release explicit even if the close is slow.
	_, _ = l.conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", l.key)
	l.drop()
}

// drop closes the connection without unlocking (a broken connection).
func (l *leader) drop() {
	if l.conn != nil {
		closeConn(l.conn)
		l.conn = nil
	}
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	_ = c.Close(ctx)
}
