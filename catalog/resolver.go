package catalog

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMinInterval is ResolverOpts.MinInterval when zero.
const DefaultMinInterval = 5 * time.Second

// ResolverOpts configures a Resolver.
type ResolverOpts struct {
	// Columns are the configured encrypted columns, resolved in every
	// database. The Resolver keeps the slice: do not modify it.
	Columns []Column
	// MinInterval is the least time between two resolutions of one
	// database triggered by Refresh (lookup misses). Invalidate is not
	// rate-limited. Default DefaultMinInterval; negative means no limit.
	MinInterval time.Duration
	// Now returns the current time; nil means time.Now. For tests.
	Now func() time.Time
}

// Resolver caches one Catalog per database (keyed by the caller's name for
// it, normally the startup message's database) and re-resolves:
//
//   - on the first Catalog call for a database, and after Invalidate (the
//     proxy calls it when DDL such as ALTER TABLE, CREATE TABLE or DROP
//     TABLE completes): unconditionally;
//   - on Refresh, for a lookup miss (a statement names a configured table
//     that the snapshot has not resolved, a RowDescription field has an
//     attribute of a known table that the snapshot lacks, or a bytea field
//     comes from a table the snapshot does not know): at most once per
//     MinInterval per database, so a stream of misses on unconfigured
//     tables costs at most one catalog query per interval.
//
// A resolution that finds exactly what the previous one found keeps the
// previous Catalog and its Generation. Concurrent callers for one database
// share one resolution; snapshots are read without locking. A Resolver is
// safe for concurrent use.
type Resolver struct {
	opts ResolverOpts
	gen  atomic.Uint64 // last generation handed out

	mu  sync.Mutex // guards dbs (not the caches in it)
	dbs map[string]*dbCache
}

// dbCache is the state of one database.
type dbCache struct {
	mu    sync.Mutex // held during a resolution
	snap  atomic.Pointer[snapshot]
	stale atomic.Bool // Invalidate was called since snap was resolved
}

type snapshot struct {
	cat      *Catalog
	problems []Problem
	at       time.Time // when the resolution started
}

// NewResolver returns a Resolver for opts.Columns.
func NewResolver(opts ResolverOpts) (*Resolver, error) {
	if opts.MinInterval == 0 {
		opts.MinInterval = DefaultMinInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Resolver{opts: opts, dbs: map[string]*dbCache{}}, nil
}

func (r *Resolver) cache(db string) *dbCache {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.dbs[db]
	if !ok {
		c = &dbCache{}
		r.dbs[db] = c
	}
	return c
}

// Catalog returns the current snapshot of db and its problems, resolving
// it through conn (a connection to db) if there is none yet or Invalidate
// was called. The problems slice is shared: do not modify it.
func (r *Resolver) Catalog(ctx context.Context, db string, conn Querier) (*Catalog, []Problem, error) {
	c := r.cache(db)
	if s := c.snap.Load(); s != nil && !c.stale.Load() {
		return s.cat, s.problems, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.snap.Load(); s != nil && !c.stale.Load() {
		return s.cat, s.problems, nil // resolved by another caller meanwhile
	}
	return r.resolve(ctx, c, conn)
}

// Refresh re-resolves db after a lookup miss, unless the current snapshot
// is younger than MinInterval (and not invalidated): then it returns that
// snapshot unchanged. Compare Generation to see whether anything changed.
func (r *Resolver) Refresh(ctx context.Context, db string, conn Querier) (*Catalog, []Problem, error) {
	c := r.cache(db)
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.snap.Load(); s != nil && !c.stale.Load() && r.opts.Now().Sub(s.at) < r.opts.MinInterval {
		return s.cat, s.problems, nil
	}
	return r.resolve(ctx, c, conn)
}

// Invalidate marks the snapshot of db stale: the next Catalog or Refresh
// call re-resolves it, regardless of MinInterval.
func (r *Resolver) Invalidate(db string) {
	r.cache(db).stale.Store(true)
}

// errNoConn is returned when a resolution is needed but conn is nil.
var errNoConn = errors.New("catalog: resolution needed but no connection given")

// resolve runs Resolve for c; the caller holds c.mu.
func (r *Resolver) resolve(ctx context.Context, c *dbCache, conn Querier) (*Catalog, []Problem, error) {
	if conn == nil {
		return nil, nil, errNoConn
	}
	at := r.opts.Now()
	wasStale := c.stale.Swap(false) // an Invalidate from now on applies to this resolution's result
	cat, problems, err := Resolve(ctx, conn, r.opts.Columns)
	if err != nil {
		if wasStale {
			c.stale.Store(true)
		}
		return nil, nil, err
	}
	if old := c.snap.Load(); old != nil && old.cat.sameAs(cat) {
		cat = old.cat
	} else {
		cat.generation = r.gen.Add(1)
	}
	c.snap.Store(&snapshot{cat: cat, problems: problems, at: at})
	return cat, problems, nil
}
