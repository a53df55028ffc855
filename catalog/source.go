package catalog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults for the zero fields of SourceOpts.
const (
	DefaultMaxDatabases   = 64
	DefaultMaxConnsPerDB  = 2
	DefaultConnIdleTime   = 5 * time.Minute
	DefaultConnectTimeout = 10 * time.Second
)

// SourceOpts configures a Source.
type SourceOpts struct {
	// Resolver caches the snapshots. Required.
	Resolver *Resolver
	// DSN is the connection string (libpq URL or key=value) of the
	// catalog connections; its database is replaced by the one asked
	// for. The password comes from PGPASSWORD / PGPASSFILE, as pgx reads
	// them. Required.
	DSN string
	// MaxDatabases bounds the databases with an open pool; the least
	// recently used idle pool is closed beyond it. Default
	// DefaultMaxDatabases.
	MaxDatabases int
	// MaxConnsPerDB bounds each pool. Default DefaultMaxConnsPerDB.
	MaxConnsPerDB int32
	// ConnIdleTime closes a connection idle for that long, so that an
	// unused database holds no connection. Default DefaultConnIdleTime.
	ConnIdleTime time.Duration
	// OnProblems is called once per new snapshot (Generation) of a
	// database that has problems, from the goroutine that resolved it.
	// The slice is shared: do not modify it. Optional.
	OnProblems func(database string, problems []Problem)
}

// Source gives the current Catalog of any database of the server named by
// SourceOpts.DSN, resolving it on demand over a small connection pool per
// database. It has the method set of proxy.CatalogSource and is safe for
// concurrent use. Snapshots that need no resolution are served without
// touching a pool.
type Source struct {
	r          *Resolver
	base       *pgxpool.Config
	max        int
	onProblems func(string, []Problem)

	mu     sync.Mutex
	closed bool
	pools  map[string]*dbPool
	logged map[string]uint64 // database → last generation passed to onProblems
	wg     sync.WaitGroup    // pools being closed
}

type dbPool struct {
	pool     *pgxpool.Pool
	users    int // calls using the pool now
	lastUsed time.Time
}

// ErrSourceClosed is returned by a Source that would need a connection
// after Close.
var ErrSourceClosed = errors.New("catalog: source closed")

// NewSource validates opts and returns a Source. No connection is opened
// until a database needs resolving. Errors never echo the DSN.
func NewSource(opts SourceOpts) (*Source, error) {
	if opts.Resolver == nil {
		return nil, errors.New("catalog: Source needs a Resolver")
	}
	if opts.DSN == "" {
		return nil, errors.New("catalog: Source needs a DSN")
	}
	base, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		return nil, errors.New("catalog: the catalog DSN does not parse")
	}
	if opts.MaxDatabases <= 0 {
		opts.MaxDatabases = DefaultMaxDatabases
	}
	if opts.MaxConnsPerDB <= 0 {
		opts.MaxConnsPerDB = DefaultMaxConnsPerDB
	}
	if opts.ConnIdleTime <= 0 {
		opts.ConnIdleTime = DefaultConnIdleTime
	}
	base.MinConns = 0
	base.MaxConns = opts.MaxConnsPerDB
	base.MaxConnIdleTime = opts.ConnIdleTime
	if base.ConnConfig.ConnectTimeout == 0 {
		base.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if _, ok := base.ConnConfig.RuntimeParams["application_name"]; !ok {
		base.ConnConfig.RuntimeParams["application_name"] = "pgcloak catalog"
	}
	return &Source{
		r:          opts.Resolver,
		base:       base,
		max:        opts.MaxDatabases,
		onProblems: opts.OnProblems,
		pools:      map[string]*dbPool{},
		logged:     map[string]uint64{},
	}, nil
}

// Catalog returns the current snapshot of database, resolving it if there
// is none yet or it was invalidated.
func (s *Source) Catalog(ctx context.Context, database string) (*Catalog, error) {
	return s.call(ctx, database, s.r.Catalog)
}

// Refresh re-resolves database after a lookup miss, at most once per
// ResolverOpts.MinInterval, and returns the newest snapshot.
func (s *Source) Refresh(ctx context.Context, database string) (*Catalog, error) {
	return s.call(ctx, database, s.r.Refresh)
}

// Invalidate marks the snapshot of database stale (after DDL).
func (s *Source) Invalidate(database string) { s.r.Invalidate(database) }

type resolveFunc func(ctx context.Context, db string, conn Querier) (*Catalog, []Problem, error)

// call asks the Resolver without a connection first: a snapshot that needs
// no resolution is returned at once. Otherwise it borrows the database's
// pool and asks again.
func (s *Source) call(ctx context.Context, database string, fn resolveFunc) (*Catalog, error) {
	if database == "" {
		return nil, errors.New("catalog: no database name")
	}
	cat, _, err := fn(ctx, database, nil)
	if !errors.Is(err, errNoConn) {
		return cat, err
	}
	pool, release, err := s.acquire(database)
	if err != nil {
		return nil, err
	}
	defer release()
	cat, problems, err := fn(ctx, database, pool)
	if err != nil {
		return nil, fmt.Errorf("catalog: resolve the configured columns in database %q: %w", database, err)
	}
	s.report(database, cat, problems)
	return cat, nil
}

// report passes problems to OnProblems once per generation.
func (s *Source) report(database string, cat *Catalog, problems []Problem) {
	if s.onProblems == nil {
		return
	}
	s.mu.Lock()
	if s.logged[database] == cat.Generation() {
		s.mu.Unlock()
		return
	}
	s.logged[database] = cat.Generation()
	s.mu.Unlock()
	if len(problems) > 0 {
		s.onProblems(database, problems)
	}
}

// acquire returns the pool of database, opening it if needed (no
// connection is made until it is used), and a release function. It closes
// the least recently used idle pools beyond MaxDatabases.
func (s *Source) acquire(database string) (*pgxpool.Pool, func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, ErrSourceClosed
	}
	p, ok := s.pools[database]
	if !ok {
		cfg := s.base.Copy()
		cfg.ConnConfig.Database = database
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			return nil, nil, fmt.Errorf("catalog: database %q: %w", database, err)
		}
		p = &dbPool{pool: pool}
		s.pools[database] = p
	}
	p.users++
	p.lastUsed = time.Now()
	s.evictLocked() // never p: it is in use
	return p.pool, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		p.users--
		p.lastUsed = time.Now()
		if !s.closed {
			s.evictLocked()
		}
	}, nil
}

// evictLocked closes idle pools, least recently used first, until at most
// max remain (pools in use are kept even beyond max). s.mu is held.
func (s *Source) evictLocked() {
	for len(s.pools) > s.max {
		var (
			oldest string
			op     *dbPool
		)
		for db, p := range s.pools {
			if p.users == 0 && (op == nil || p.lastUsed.Before(op.lastUsed)) {
				oldest, op = db, p
			}
		}
		if op == nil {
			return
		}
		delete(s.pools, oldest)
		s.closePool(op.pool)
	}
}

// closePool closes pool in the background (Close waits for connections in
// use); Close waits for it.
func (s *Source) closePool(pool *pgxpool.Pool) {
	s.wg.Go(pool.Close)
}

// Databases returns the number of databases with an open pool.
func (s *Source) Databases() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pools)
}

// Close closes every pool and waits for them. Snapshots already resolved
// are still served; a resolution fails with ErrSourceClosed.
func (s *Source) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for db, p := range s.pools {
			delete(s.pools, db)
			s.closePool(p.pool)
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}
