package keycache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
)

// Loader fetches and unwraps one DEK. It signals a transient outage (the
// HSM/KMS or the key store cannot be reached) with an error wrapping
// hsm.ErrUnavailable; any other error is definitive for that key version.
// The returned bytes become the cache's, which zeroes them. Implementations
// must be safe for concurrent use.
type Loader interface {
	LoadDEK(ctx context.Context, keyringID, version uint32) (secret.Bytes, error)
}

// LoaderFunc adapts a function to Loader.
type LoaderFunc func(ctx context.Context, keyringID, version uint32) (secret.Bytes, error)

// LoadDEK calls f.
func (f LoaderFunc) LoadDEK(ctx context.Context, keyringID, version uint32) (secret.Bytes, error) {
	return f(ctx, keyringID, version)
}

// ID names one key version.
type ID struct {
	KeyringID uint32
	Version   uint32
}

// Defaults for the optional Opts fields.
const (
	DefaultRetryInterval = time.Second
	DefaultLoadTimeout   = 10 * time.Second
)

// Opts configures a Cache. K is the prepared key type handed out by Get,
// typically *envelope.Key with Prepare: envelope.NewKey.
type Opts[K any] struct {
	// Loader fetches and unwraps DEKs. Required.
	Loader Loader
	// Prepare turns a DEK into the value Get hands out. It must not retain
	// dek: the cache zeroes dek as soon as Prepare returns. Required.
	Prepare func(keyringID, version uint32, dek secret.Bytes) (K, error)
	// MaxEntries bounds the number of cached key versions (LRU). Required,
	// positive.
	MaxEntries int
	// TTL is how long an entry is served before it is reloaded. Required,
	// positive.
	TTL time.Duration
	// OutageBudget is how long past its TTL an entry keeps serving while
	// the loader reports hsm.ErrUnavailable. Zero: not at all.
	OutageBudget time.Duration
	// RetryInterval is the least time between two load attempts for an
	// expired entry that is being served during an outage. Zero: 1s.
	RetryInterval time.Duration
	// LoadTimeout bounds one load. A load that times out counts as an
	// outage (hsm.ErrUnavailable). Zero: 10s.
	LoadTimeout time.Duration
	// Now is the clock (tests inject a fake). Nil: time.Now.
	Now func() time.Time
}

// Stats are cumulative counters since New, plus the current entry count.
// They carry no key material and no ids.
type Stats struct {
	Hits        uint64 // Gets answered by a fresh entry
	Misses      uint64 // Gets that had to wait for a load (no entry, or expired)
	StaleServes uint64 // Gets answered by an expired entry during an outage
	Loads       uint64 // Loader calls
	LoadErrors  uint64 // failed Loader (or Prepare) calls
	Evictions   uint64 // entries dropped because the cache was full
	Entries     int    // entries cached now
}

// Cache is an LRU of prepared DEKs. It is safe for concurrent use. See the
// package documentation for the loading, outage and ownership rules.
type Cache[K any] struct {
	loader        Loader
	prepare       func(uint32, uint32, secret.Bytes) (K, error)
	ttl           time.Duration
	budget        time.Duration
	retryInterval time.Duration
	loadTimeout   time.Duration
	now           func() time.Time

	lru   *lru.Cache[ID, *entry[K]]
	group singleflight.Group

	// mu serialises every insertion and removal that must not interleave
	// with an invalidation (the LRU has its own lock for its internals).
	mu sync.Mutex
	// gen changes (under mu) on every invalidation and on Close; a load
	// started under an older generation is handed to its waiters but not
	// cached, so an invalidation can never be undone by a load in flight.
	gen    atomic.Uint64
	closed atomic.Bool

	hits, misses, staleServes, loads, loadErrors, evictions atomic.Uint64
}

// entry is immutable once cached, except failedAge.
type entry[K any] struct {
	key      K
	loadedAt time.Time
	// failedAge is the entry's age (ns after loadedAt) at its last failed
	// refresh during an outage; 0 means none. It spaces retries.
	failedAge atomic.Int64
}

// New validates opts and returns an empty cache.
func New[K any](opts Opts[K]) (*Cache[K], error) {
	switch {
	case opts.Loader == nil:
		return nil, errors.New("keycache: Loader is required")
	case opts.Prepare == nil:
		return nil, errors.New("keycache: Prepare is required")
	case opts.MaxEntries <= 0:
		return nil, fmt.Errorf("keycache: MaxEntries must be positive, got %d", opts.MaxEntries)
	case opts.TTL <= 0:
		return nil, fmt.Errorf("keycache: TTL must be positive, got %v", opts.TTL)
	case opts.OutageBudget < 0:
		return nil, fmt.Errorf("keycache: OutageBudget must not be negative, got %v", opts.OutageBudget)
	case opts.RetryInterval < 0:
		return nil, fmt.Errorf("keycache: RetryInterval must not be negative, got %v", opts.RetryInterval)
	case opts.LoadTimeout < 0:
		return nil, fmt.Errorf("keycache: LoadTimeout must not be negative, got %v", opts.LoadTimeout)
	}
	c := &Cache[K]{
		loader:        opts.Loader,
		prepare:       opts.Prepare,
		ttl:           opts.TTL,
		budget:        opts.OutageBudget,
		retryInterval: opts.RetryInterval,
		loadTimeout:   opts.LoadTimeout,
		now:           opts.Now,
	}
	if c.retryInterval == 0 {
		c.retryInterval = DefaultRetryInterval
	}
	if c.loadTimeout == 0 {
		c.loadTimeout = DefaultLoadTimeout
	}
	if c.now == nil {
		c.now = time.Now
	}
	l, err := lru.New[ID, *entry[K]](opts.MaxEntries)
	if err != nil {
		return nil, fmt.Errorf("keycache: %w", err)
	}
	c.lru = l
	return c, nil
}

// Get returns the prepared key for (keyringID, version), loading it on a
// miss or after its TTL. The returned K is the caller's to use for as long
// as it holds it (see the package documentation).
//
// Errors: a *LoadError wrapping ErrKeyUnavailable and the cause when no key
// can be served; ErrClosed after Close; a wrapped ctx.Err() when ctx ends
// while waiting for a load (the load itself goes on and is cached).
func (c *Cache[K]) Get(ctx context.Context, keyringID, version uint32) (K, error) {
	if !c.closed.Load() {
		if e, ok := c.lru.Get(ID{keyringID, version}); ok {
			age := c.now().Sub(e.loadedAt)
			if age < c.ttl {
				c.hits.Add(1)
				return e.key, nil
			}
			// Expired, and a refresh failed for an outage moments ago:
			// serve it without hammering the loader.
			if f := e.failedAge.Load(); f != 0 && age < c.ttl+c.budget && age-time.Duration(f) < c.retryInterval {
				c.staleServes.Add(1)
				return e.key, nil
			}
		}
	}
	return c.getSlow(ctx, ID{keyringID, version})
}

func (c *Cache[K]) getSlow(ctx context.Context, id ID) (K, error) {
	var zero K
	if c.closed.Load() {
		return zero, ErrClosed
	}
	c.misses.Add(1)
	stale, _ := c.lru.Peek(id)
	gen := c.gen.Load()
	ch := c.group.DoChan(flightKey(id, gen), func() (any, error) { return c.load(ctx, id, gen) })
	var res singleflight.Result
	select {
	case res = <-ch:
	case <-ctx.Done():
		return zero, fmt.Errorf("keycache: key ring %d version %d: waiting for load: %w", id.KeyringID, id.Version, context.Cause(ctx))
	}
	if res.Err == nil {
		return res.Val.(*entry[K]).key, nil
	}
	err := res.Err
	if stale != nil && errors.Is(err, hsm.ErrUnavailable) {
		age := c.now().Sub(stale.loadedAt)
		if age < c.ttl+c.budget && c.isCurrent(id, stale) {
			stale.failedAge.Store(max(int64(age), 1))
			c.staleServes.Add(1)
			return stale.key, nil
		}
		err = fmt.Errorf("outage budget of %v past the TTL exhausted: %w", c.budget, err)
	}
	if stale != nil {
		c.drop(id, stale)
	}
	return zero, &LoadError{KeyringID: id.KeyringID, Version: id.Version, Err: err}
}

// load runs once per flight. ctx is the context of the Get that started
// the flight; its values are kept, its cancellation is not.
func (c *Cache[K]) load(ctx context.Context, id ID, gen uint64) (*entry[K], error) {
	// A flight that finished just before this one started may have stored
	// a fresh entry already: concurrent misses then still cause one load.
	if e, ok := c.lru.Peek(id); ok && c.now().Sub(e.loadedAt) < c.ttl {
		return e, nil
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.loadTimeout)
	defer cancel()
	c.loads.Add(1)
	dek, err := c.loader.LoadDEK(lctx, id.KeyringID, id.Version)
	if err != nil {
		dek.Zero()
		c.loadErrors.Add(1)
		if lctx.Err() != nil && !errors.Is(err, hsm.ErrUnavailable) {
			err = fmt.Errorf("%w: load timed out after %v: %w", hsm.ErrUnavailable, c.loadTimeout, err)
		}
		return nil, err
	}
	key, err := c.prepare(id.KeyringID, id.Version, dek)
	dek.Zero()
	if err != nil {
		c.loadErrors.Add(1)
		return nil, err
	}
	e := &entry[K]{key: key, loadedAt: c.now()}
	c.store(id, gen, e)
	return e, nil
}

// flightKey names a load: the key version and the generation, so that a
// Get after an invalidation never joins a load that started before it.
func flightKey(id ID, gen uint64) string {
	var b [32]byte
	s := strconv.AppendUint(b[:0], uint64(id.KeyringID), 10)
	s = append(s, '/')
	s = strconv.AppendUint(s, uint64(id.Version), 10)
	s = append(s, '/')
	s = strconv.AppendUint(s, gen, 10)
	return string(s)
}

func (c *Cache[K]) store(id ID, gen uint64, e *entry[K]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != gen || c.closed.Load() {
		return // invalidated while loading: hand it out, do not cache it
	}
	if c.lru.Add(id, e) {
		c.evictions.Add(1)
	}
}

// isCurrent reports whether e is still the cached entry for id (not
// invalidated or replaced meanwhile).
func (c *Cache[K]) isCurrent(id ID, e *entry[K]) bool {
	cur, ok := c.lru.Peek(id)
	return ok && cur == e
}

// drop removes e if it is still the cached entry for id.
func (c *Cache[K]) drop(id ID, e *entry[K]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isCurrent(id, e) {
		c.lru.Remove(id)
	}
}

// Invalidate drops (keyringID, version): the next Get loads it again, and a
// load already in flight is not cached. Keys already handed out stay valid
// for their holders.
func (c *Cache[K]) Invalidate(keyringID, version uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	c.lru.Remove(ID{keyringID, version})
}

// InvalidateAll drops every entry, as Invalidate does for one.
func (c *Cache[K]) InvalidateAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	c.lru.Purge()
}

// Close drops every entry; Get then fails with ErrClosed. Keys already
// handed out stay valid for their holders. Close is idempotent and always
// returns nil.
func (c *Cache[K]) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed.Store(true)
	c.gen.Add(1)
	c.lru.Purge()
	return nil
}

// Stats returns the counters.
func (c *Cache[K]) Stats() Stats {
	return Stats{
		Hits:        c.hits.Load(),
		Misses:      c.misses.Load(),
		StaleServes: c.staleServes.Load(),
		Loads:       c.loads.Load(),
		LoadErrors:  c.loadErrors.Load(),
		Evictions:   c.evictions.Load(),
		Entries:     c.lru.Len(),
	}
}
